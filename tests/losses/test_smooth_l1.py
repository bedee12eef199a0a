"""Tests for npmaskrcnn/losses/smooth_l1.py: summed smooth-L1 loss."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.losses.smooth_l1 import smooth_l1


def test_hand_computed(xp):
    # beta = 1: d = 0.5 -> 0.125 (quadratic); d = -2 -> 1.5 (linear); d = 1 -> 0.5 (boundary)
    pred = xp.asarray([0.5, -2.0, 1.0])
    target = xp.zeros(3)
    loss, d = smooth_l1(pred, target, beta=1.0)
    assert float(loss) == pytest.approx(0.125 + 1.5 + 0.5, rel=1e-15)
    np.testing.assert_array_equal(asnumpy(d), [0.5, -1.0, 1.0])
    # beta = 1/9 (torchvision's): d = 0.1 is quadratic, 0.1^2 / 2 * 9 = 0.045
    loss, d = smooth_l1(xp.asarray([[0.1, 0.3]]), xp.zeros((1, 2)), beta=1 / 9)
    assert float(loss) == pytest.approx(0.045 + 0.3 - 0.5 / 9, rel=1e-13)
    np.testing.assert_allclose(asnumpy(d), [[0.9, 1.0]], rtol=1e-13)


def test_beta_zero_is_l1(xp):
    pred, target = xp.asarray([1.5, -0.25, 2.0, 0.0]), xp.asarray([1.0, 0.25, 2.0, 0.0])
    loss, d = smooth_l1(pred, target, beta=0.0)
    assert float(loss) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_array_equal(asnumpy(d), [1.0, -1.0, 0.0, 0.0])  # sign(0) = 0
    with pytest.raises(ValueError):
        smooth_l1(pred, target, beta=-1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [1 / 9, 1.0, 0.0])
def test_gradcheck(xp, seed, beta):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((5, 4))
    diff = rng.standard_normal((5, 4))
    # keep |d| away from beta and from 0, where the second derivative jumps
    diff = np.sign(diff) * np.where(np.abs(np.abs(diff) - beta) < 0.05, beta + 0.2, np.abs(diff))
    diff = np.where(np.abs(diff) < 0.05, 0.3, diff)
    pred, target = xp.asarray(target + diff), xp.asarray(target)
    _, d = smooth_l1(pred, target, beta)
    err = rel_error(numerical_gradient(lambda: float(smooth_l1(pred, target, beta)[0]), pred), d)
    print(f"smooth_l1 beta={beta:.3f} grad rel error", err)
    assert err < 1e-6


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=st.floats(-10, 10), beta=st.floats(1e-3, 5))
def test_properties(xp, d, beta):
    loss, grad = smooth_l1(xp.asarray([d]), xp.zeros(1), beta)
    neg, _ = smooth_l1(xp.asarray([-d]), xp.zeros(1), beta)
    l1, _ = smooth_l1(xp.asarray([d]), xp.zeros(1), 0.0)
    assert float(loss) == float(neg)  # symmetric
    # between |d| - beta/2 and |d| (the L1 loss), and never steeper than L1
    assert float(l1) - beta / 2 - 1e-12 <= float(loss) <= float(l1) + 1e-12
    assert abs(float(grad[0])) <= 1.0
    # continuous at |d| = beta: both branches give beta / 2
    at, _ = smooth_l1(xp.asarray([beta]), xp.zeros(1), beta)
    assert float(at) == pytest.approx(beta / 2, rel=1e-12)


def test_empty(xp):
    loss, d = smooth_l1(xp.zeros((0, 4)), xp.zeros((0, 4)), 1 / 9)
    assert float(loss) == 0.0 and d.shape == (0, 4)


def test_dtype_preserved(xp):
    loss, d = smooth_l1(xp.ones(3, dtype=xp.float32), xp.zeros(3, dtype=xp.float32), 1 / 9)
    assert loss.dtype == np.float32 and d.dtype == np.float32 and loss.shape == ()


@pytest.mark.parametrize("beta", [1 / 9, 1.0, 0.0])
def test_torch_parity(xp, beta):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((6, 4)).astype(np.float32)
    target = rng.standard_normal((6, 4)).astype(np.float32)
    target[0, 0] = pred[0, 0]  # d = 0 exactly: the L1 subgradient convention
    loss, d = smooth_l1(xp.asarray(pred), xp.asarray(target), beta)
    tp = torch.tensor(pred, requires_grad=True)
    lt = torch.nn.functional.smooth_l1_loss(tp, torch.tensor(target), beta=beta, reduction="sum")
    lt.backward()
    assert float(loss) == pytest.approx(lt.item(), rel=1e-5)
    np.testing.assert_allclose(asnumpy(d), tp.grad.numpy(), rtol=1e-6, atol=1e-7)
