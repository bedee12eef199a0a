"""Helpers shared by the layer tests."""

import numpy as np
import pytest

from npmaskrcnn.gradcheck import rel_error


def _same_on_non_contiguous(forward, backward, x_shape, w_shape, stride, padding, xp):
    """Transposed views as x and dout give the numbers of their contiguous copies: the
    forward output and the (dx, dw) of ``backward``. ``x_shape`` is the shape of the view."""
    rng = np.random.default_rng(5)
    n, c, h, w = x_shape
    x = xp.asarray(rng.standard_normal((n, c, w, h))).transpose(0, 1, 3, 2)
    weight = xp.asarray(rng.standard_normal(w_shape))
    out, cache = forward(x, weight, None, stride, padding)
    ref, ref_cache = forward(xp.ascontiguousarray(x), weight, None, stride, padding)
    assert rel_error(out, ref) < 1e-12
    dout = xp.asarray(rng.standard_normal(out.shape[:2] + out.shape[:1:-1])).transpose(0, 1, 3, 2)
    grads = backward(dout, cache)
    expected = backward(xp.ascontiguousarray(dout), ref_cache)
    for g, e in zip(grads[:2], expected[:2]):
        assert rel_error(g, e) < 1e-12


@pytest.fixture
def same_on_non_contiguous():
    """``_same_on_non_contiguous(forward, backward, x_shape, w_shape, stride, padding, xp)``."""
    return _same_on_non_contiguous
