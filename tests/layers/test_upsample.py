"""Tests for npmaskrcnn/layers/upsample.py: nearest-neighbour upsampling."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer
from npmaskrcnn.layers.upsample import (
    Upsample,
    upsample_nearest2d_backward,
    upsample_nearest2d_forward,
    upsample_nearest2d_naive,
)

# (input H, W, keyword arguments): integer factors (fast path), FPN-style size=, and
# non-integer ratios (scatter path), including 3 * 2.3 -> 6 where PyTorch's 2x shortcut applies
CASES = [
    ((3, 4), dict(scale_factor=2)),
    ((3, 4), dict(size=(6, 8))),
    ((3, 4), dict(scale_factor=(3, 1))),
    ((3, 4), dict(size=(5, 7))),
    ((3, 4), dict(scale_factor=2.3)),
    ((4, 3), dict(size=(3, 2))),  # downsampling
    ((3, 4), dict(scale_factor=(1.5, 2.5))),
]


def test_hand_computed_2x(xp):
    x = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, cache = upsample_nearest2d_forward(x, scale_factor=2)
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(asnumpy(out)[0, 0], expected)
    dout = xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4))
    dx = asnumpy(upsample_nearest2d_backward(dout, cache))
    # each input pixel sums the 2x2 block of its copies
    np.testing.assert_array_equal(dx[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7],
                                             [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]])


def test_hand_computed_non_integer(xp):
    # 2 -> 3 along W with size=: src = floor(dst * 2/3) = [0, 0, 1]
    x = xp.asarray([[[[1.0, 2.0]]]])
    out, cache = upsample_nearest2d_forward(x, size=(1, 3))
    np.testing.assert_array_equal(asnumpy(out)[0, 0], [[1.0, 1.0, 2.0]])
    assert cache.factor_w is None  # the scatter path
    dx = asnumpy(upsample_nearest2d_backward(xp.asarray([[[[1.0, 10.0, 100.0]]]]), cache))
    np.testing.assert_array_equal(dx[0, 0], [[11.0, 100.0]])


@pytest.mark.parametrize("hw, kw", CASES)
def test_fast_equals_naive(xp, hw, kw):
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((2, 3) + hw))
    out, cache = upsample_nearest2d_forward(x, **kw)
    assert float(abs(out - upsample_nearest2d_naive(x, **kw)).max()) == 0.0
    # backward against the adjoint written out: <dout, up(x)> = <down(dout), x>
    d = xp.asarray(rng.standard_normal(out.shape))
    dx = upsample_nearest2d_backward(d, cache)
    src_h, src_w = asnumpy(cache.src_h), asnumpy(cache.src_w)
    dx_ref = np.zeros(x.shape)
    dn = asnumpy(d)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            dx_ref[:, :, src_h[i], src_w[j]] += dn[:, :, i, j]
    assert np.abs(asnumpy(dx) - dx_ref).max() < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hw, kw", [CASES[0], CASES[3], CASES[6]])
def test_gradcheck(xp, seed, hw, kw):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal((1, 2) + hw))
    errs = check_layer(upsample_nearest2d_forward, upsample_nearest2d_backward, [x],
                       seed=seed, **kw)
    print(f"upsample {kw} grad rel error", errs)
    assert max(errs) < 1e-6


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(H=st.integers(1, 7), W=st.integers(1, 7), Ho=st.integers(1, 15), Wo=st.integers(1, 15))
def test_property_gradient_sum_conserved(xp, H, W, Ho, Wo):
    x = xp.asarray(np.random.default_rng(H * 100 + W).standard_normal((1, 1, H, W)))
    out, cache = upsample_nearest2d_forward(x, size=(Ho, Wo))
    assert out.shape == (1, 1, Ho, Wo)
    # every output is a copy of some input: values come from x, gradient mass is kept
    assert set(asnumpy(out).ravel()) <= set(asnumpy(x).ravel())
    d = xp.asarray(np.random.default_rng(0).standard_normal(out.shape))
    dx = upsample_nearest2d_backward(d, cache)
    assert float(dx.sum()) == pytest.approx(float(d.sum()), abs=1e-10)
    np.testing.assert_array_equal(asnumpy(out), asnumpy(upsample_nearest2d_naive(x, size=(Ho, Wo))))


def test_empty_batch_and_arguments(xp):
    out, cache = upsample_nearest2d_forward(xp.zeros((0, 4, 3, 5)), scale_factor=2)
    assert out.shape == (0, 4, 6, 10)
    assert upsample_nearest2d_backward(out, cache).shape == (0, 4, 3, 5)
    with pytest.raises(ValueError):
        upsample_nearest2d_forward(xp.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError):
        upsample_nearest2d_forward(xp.zeros((1, 1, 2, 2)), scale_factor=2, size=4)


def test_module(xp):
    m = Upsample(scale_factor=2)
    x = xp.asarray(np.random.default_rng(0).standard_normal((1, 2, 3, 3)))
    out = m(x)
    assert out.shape == (1, 2, 6, 6)
    np.testing.assert_allclose(asnumpy(m.backward(xp.ones(out.shape))), np.full(x.shape, 4.0))


@pytest.mark.parametrize("hw, kw", CASES + [((7, 9), dict(size=(25, 31)))])
def test_torch_parity(xp, hw, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + hw).astype(np.float32)
    out, cache = upsample_nearest2d_forward(xp.asarray(x), **kw)
    d = rng.standard_normal(out.shape).astype(np.float32)
    dx = upsample_nearest2d_backward(xp.asarray(d), cache)
    t = torch.tensor(x, requires_grad=True)
    ot = torch.nn.functional.interpolate(t, mode="nearest", **kw)
    ot.backward(torch.tensor(d))
    np.testing.assert_array_equal(asnumpy(out), ot.detach().numpy())
    np.testing.assert_allclose(asnumpy(dx), t.grad.numpy(), rtol=1e-5, atol=1e-5)
