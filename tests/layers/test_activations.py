"""Tests for npmaskrcnn/layers/activations.py: ReLU and sigmoid."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer
from npmaskrcnn.layers.activations import (
    ReLU,
    Sigmoid,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
)


def test_relu_hand_computed(xp):
    x = xp.asarray([[-2.0, 0.0, 3.0], [0.5, -0.1, 1e-9]])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(asnumpy(out), [[0.0, 0.0, 3.0], [0.5, 0.0, 1e-9]])
    dx = relu_backward(xp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), cache)
    # the derivative at exactly 0 is 0, as PyTorch
    np.testing.assert_array_equal(asnumpy(dx), [[0.0, 0.0, 3.0], [4.0, 0.0, 6.0]])


def test_sigmoid_hand_computed(xp):
    x = xp.asarray([0.0, np.log(3.0), -np.log(3.0)])
    out, cache = sigmoid_forward(x)
    np.testing.assert_allclose(asnumpy(out), [0.5, 0.75, 0.25], rtol=1e-15)
    dx = sigmoid_backward(xp.asarray([1.0, 1.0, 2.0]), cache)
    np.testing.assert_allclose(asnumpy(dx), [0.25, 0.1875, 0.375], rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_gradcheck(xp, seed):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = rng.standard_normal((3, 4, 5))
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # stay away from the kink at 0
    errs = check_layer(relu_forward, relu_backward, [xp.asarray(x)], seed=seed)
    print("relu grad rel errors", errs)
    assert max(errs) < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigmoid_gradcheck(xp, seed):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(3 * rng.standard_normal((3, 4, 5)))
    errs = check_layer(sigmoid_forward, sigmoid_backward, [x], seed=seed)
    print("sigmoid grad rel errors", errs)
    assert max(errs) < 1e-6


def test_sigmoid_extreme_values_stable(xp):
    x = xp.asarray([-1000.0, -50.0, 50.0, 1000.0], dtype=xp.float32)
    with np.errstate(over="raise"):  # no exp overflow on the NumPy path
        out, _ = sigmoid_forward(x)
    out = asnumpy(out)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [0.0, np.exp(-50.0), 1.0, 1.0], rtol=1e-6, atol=0)


HYPOTHESIS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(arrays(np.float64, st.integers(0, 20), elements=st.floats(-700, 700)))
def test_sigmoid_properties(xp, x):
    out = asnumpy(sigmoid_forward(xp.asarray(x))[0])
    neg = asnumpy(sigmoid_forward(xp.asarray(-x))[0])
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_allclose(out + neg, 1.0, rtol=1e-12)  # sigma(x) + sigma(-x) = 1
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x)), rtol=1e-12, atol=1e-300)


def test_empty_inputs(xp):
    x = xp.zeros((0, 3))
    for fwd, bwd in [(relu_forward, relu_backward), (sigmoid_forward, sigmoid_backward)]:
        out, cache = fwd(x)
        assert out.shape == (0, 3)
        assert bwd(out, cache).shape == (0, 3)


def test_modules_push_pop(xp):
    rng = np.random.default_rng(0)
    x1, x2 = xp.asarray(rng.standard_normal((2, 3))), xp.asarray(rng.standard_normal((2, 3)))
    for Mod, fwd, bwd in [(ReLU, relu_forward, relu_backward),
                          (Sigmoid, sigmoid_forward, sigmoid_backward)]:
        m = Mod()
        m(x1)
        m(x2)
        d = xp.ones((2, 3))
        # caches are a stack: the second backward uses the first forward's cache
        np.testing.assert_array_equal(asnumpy(m.backward(d)), asnumpy(bwd(d, fwd(x2)[1])))
        np.testing.assert_array_equal(asnumpy(m.backward(d)), asnumpy(bwd(d, fwd(x1)[1])))
        assert m.params == {}


def test_torch_parity(xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    for fwd, bwd, tfn in [(relu_forward, relu_backward, torch.relu),
                          (sigmoid_forward, sigmoid_backward, torch.sigmoid)]:
        out, cache = fwd(xp.asarray(x))
        dx = bwd(xp.asarray(d), cache)
        t = torch.tensor(x, requires_grad=True)
        ot = tfn(t)
        ot.backward(torch.tensor(d))
        np.testing.assert_allclose(asnumpy(out), ot.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(asnumpy(dx), t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_relu_inplace_only_at_inference(xp):
    x = xp.asarray(np.array([[-1.0, 2.0, -3.0, 4.0]]))
    expected = np.array([[0.0, 2.0, 0.0, 4.0]])
    m = ReLU(inplace=True)
    out = m(x.copy())  # training: a new array, the input untouched, a mask kept
    assert len(m._caches) == 1
    m.backward(xp.ones_like(out))
    np.testing.assert_array_equal(asnumpy(out), expected)
    m.eval()
    y = x.copy()
    out = m(y)
    assert out is y and not m._caches  # inference: overwritten, nothing kept
    np.testing.assert_array_equal(asnumpy(y), expected)
    plain = ReLU().eval()
    y = x.copy()
    assert plain(y) is not y
    np.testing.assert_array_equal(asnumpy(y), asnumpy(x))
