"""Tests for npmaskrcnn/layers/linear.py: linear and flatten."""

import numpy as np
import pytest

from npmaskrcnn.backend import Generator, asnumpy, backend_name
from npmaskrcnn.gradcheck import check_layer
from npmaskrcnn.layers.linear import (
    Flatten,
    Linear,
    flatten_backward,
    flatten_forward,
    linear_backward,
    linear_forward,
)


def test_linear_hand_computed(xp):
    x = xp.asarray([[1.0, 2.0], [0.0, -1.0]])
    w = xp.asarray([[1.0, 0.0], [2.0, 3.0], [-1.0, 1.0]])  # (out=3, in=2)
    b = xp.asarray([0.5, 0.0, -1.0])
    out, cache = linear_forward(x, w, b)
    np.testing.assert_array_equal(asnumpy(out), [[1.5, 8.0, 0.0], [0.5, -3.0, -2.0]])
    dout = xp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    dx, dw, db = linear_backward(dout, cache)
    np.testing.assert_array_equal(asnumpy(dx), [[1.0, 0.0], [1.0, 4.0]])
    np.testing.assert_array_equal(asnumpy(dw), [[1.0, 2.0], [0.0, -1.0], [0.0, -1.0]])
    np.testing.assert_array_equal(asnumpy(db), [1.0, 1.0, 1.0])


def test_linear_without_bias(xp):
    x, w = xp.ones((2, 3)), xp.ones((4, 3))
    out, cache = linear_forward(x, w, None)
    np.testing.assert_array_equal(asnumpy(out), np.full((2, 4), 3.0))
    assert linear_backward(xp.ones((2, 4)), cache)[2] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("x_shape", [(4, 5), (2, 3, 5)])
def test_linear_gradcheck(xp, seed, x_shape):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal(x_shape))
    w = xp.asarray(rng.standard_normal((3, 5)))
    b = xp.asarray(rng.standard_normal(3))
    errs = check_layer(linear_forward, linear_backward, [x, w, b], seed=seed)
    print("linear grad rel errors (x, w, b)", errs)
    assert max(errs) < 1e-6


def test_flatten_roundtrip_and_gradcheck(xp):
    rng = np.random.default_rng(100)
    x = xp.asarray(rng.standard_normal((2, 3, 2, 2)))
    out, cache = flatten_forward(x)
    assert out.shape == (2, 12)
    # row-major, as torch.flatten(x, 1): element (n, c, h, w) lands at c*4 + h*2 + w
    assert float(out[1, 1 * 4 + 1 * 2 + 0]) == float(x[1, 1, 1, 0])
    np.testing.assert_array_equal(asnumpy(flatten_backward(out, cache)), asnumpy(x))
    errs = check_layer(flatten_forward, flatten_backward, [x])
    assert max(errs) < 1e-6


def test_empty_batch(xp):
    x, w, b = xp.zeros((0, 5)), xp.ones((3, 5)), xp.ones(3)
    out, cache = linear_forward(x, w, b)
    assert out.shape == (0, 3)
    dx, dw, db = linear_backward(xp.zeros((0, 3)), cache)
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(asnumpy(dw), np.zeros((3, 5)))
    np.testing.assert_array_equal(asnumpy(db), np.zeros(3))
    fo, fc = flatten_forward(xp.zeros((0, 256, 7, 7)))
    assert fo.shape == (0, 256 * 49)
    assert flatten_backward(fo, fc).shape == (0, 256, 7, 7)


def test_linear_module_init_and_accumulation(xp):
    backend = backend_name(xp)
    m = Linear(8, 4, rng=Generator(0, backend=backend))
    w, b = m.params["weight"], m.params["bias"]
    assert w.shape == (4, 8) and b.shape == (4,) and w.dtype == np.float32
    bound = 1 / np.sqrt(8)
    assert float(abs(w).max()) <= bound and float(abs(b).max()) <= bound
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((3, 8)), dtype=xp.float32)
    d = xp.asarray(rng.standard_normal((3, 4)), dtype=xp.float32)
    out = m(x)
    ref, cache = linear_forward(x, w, b)
    np.testing.assert_array_equal(asnumpy(out), asnumpy(ref))
    m(x)
    m.backward(d)
    dx = m.backward(d)
    rdx, rdw, rdb = linear_backward(d, cache)
    np.testing.assert_allclose(asnumpy(dx), asnumpy(rdx), rtol=1e-6)
    # two forward/backward passes accumulate twice the gradient
    np.testing.assert_allclose(asnumpy(m.grads["weight"]), 2 * asnumpy(rdw), rtol=1e-6)
    np.testing.assert_allclose(asnumpy(m.grads["bias"]), 2 * asnumpy(rdb), rtol=1e-6)
    assert "bias" not in Linear(8, 4, bias=False).params


def test_flatten_module(xp):
    m = Flatten()
    x = xp.arange(24.0).reshape(2, 3, 2, 2)
    out = m(x)
    assert out.shape == (2, 12)
    assert m.backward(out).shape == (2, 3, 2, 2)


def test_torch_parity(xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    d = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out, cache = linear_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    dx, dw, db = linear_backward(xp.asarray(d), cache)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = torch.nn.functional.linear(tx, tw, tb)
    ot.backward(torch.tensor(d))
    np.testing.assert_allclose(asnumpy(out), ot.detach().numpy(), rtol=1e-5, atol=1e-5)
    for ours, t in [(dx, tx), (dw, tw), (db, tb)]:
        np.testing.assert_allclose(asnumpy(ours), t.grad.numpy(), rtol=1e-5, atol=1e-5)
    x4 = x.reshape(2, 3, 2, 3)
    ours = asnumpy(flatten_forward(xp.asarray(x4))[0])
    np.testing.assert_array_equal(ours, torch.flatten(torch.tensor(x4), 1).numpy())
