"""Tests for npmaskrcnn/losses/sigmoid_bce.py: binary cross-entropy on logits."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.losses.sigmoid_bce import sigmoid_binary_cross_entropy


def test_hand_computed(xp):
    # x = 0: sigma = 1/2, loss ln 2 whatever t; x = ln 3: sigma = 3/4, t = 1 -> -ln(3/4)
    logits = xp.asarray([0.0, np.log(3.0), np.log(3.0)])
    targets = xp.asarray([1.0, 1.0, 0.0])
    loss, d = sigmoid_binary_cross_entropy(logits, targets)
    expected = (np.log(2.0) - np.log(0.75) - np.log(0.25)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(asnumpy(d), np.array([-0.5, -0.25, 0.75]) / 3, rtol=1e-14)
    loss_s, d_s = sigmoid_binary_cross_entropy(logits, targets, reduction="sum")
    assert float(loss_s) == pytest.approx(3 * expected, rel=1e-14)
    np.testing.assert_allclose(asnumpy(d_s), [-0.5, -0.25, 0.75], rtol=1e-14)


def _gradcheck(logits, targets, **kwargs):
    _, d = sigmoid_binary_cross_entropy(logits, targets, **kwargs)
    f = lambda: float(sigmoid_binary_cross_entropy(logits, targets, **kwargs)[0])  # noqa: E731
    return rel_error(numerical_gradient(f, logits), d)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradcheck(xp, seed, reduction):
    rng = np.random.default_rng(seed)
    logits = xp.asarray(3 * rng.standard_normal((3, 4, 4)))  # e.g. (R, M, M) mask logits
    targets = xp.asarray(rng.uniform(0, 1, (3, 4, 4)))  # soft targets, as RoIAligned masks
    weight = xp.asarray((rng.uniform(size=(3, 4, 4)) > 0.3).astype(np.float64))
    err = _gradcheck(logits, targets, weight=weight, reduction=reduction)
    print(f"sigmoid_bce ({reduction}, weighted) grad rel error", err)
    assert err < 1e-6


def test_weight_is_a_mask_and_broadcasts(xp):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)), (rng.uniform(size=(4, 3)) > 0.5).astype(np.float64)
    w = np.array([1.0, 0.0, 2.0])  # broadcast over rows, as torch's weight=
    loss, d = sigmoid_binary_cross_entropy(xp.asarray(x), xp.asarray(t), weight=xp.asarray(w))
    per = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    assert float(loss) == pytest.approx((per * w).sum() / 12, rel=1e-12)  # / all elements
    np.testing.assert_array_equal(asnumpy(d)[:, 1], 0.0)  # weight 0: ignored, no gradient
    # a mean over the kept elements only: sum / weight.sum()
    keep = (rng.uniform(size=(4, 3)) > 0.5).astype(np.float64)
    s, _ = sigmoid_binary_cross_entropy(xp.asarray(x), xp.asarray(t), xp.asarray(keep), "sum")
    kept = sigmoid_binary_cross_entropy(xp.asarray(x[keep > 0]), xp.asarray(t[keep > 0]))[0]
    assert float(s) / keep.sum() == pytest.approx(float(kept), rel=1e-12)


def test_stable_for_huge_logits(xp):
    x = xp.asarray([1000.0, -1000.0, 1000.0, -1000.0, 0.0], dtype=xp.float32)
    t = xp.asarray([1.0, 0.0, 0.0, 1.0, 1.0], dtype=xp.float32)
    with np.errstate(over="raise"):
        loss, d = sigmoid_binary_cross_entropy(x, t, reduction="sum")
    # confident and right: 0; confident and wrong: 1000 each; x = 0: ln 2
    assert float(loss) == pytest.approx(2000.0 + np.log(2.0), rel=1e-6)
    assert loss.dtype == np.float32 and d.dtype == np.float32
    np.testing.assert_allclose(asnumpy(d), [0.0, 0.0, 1.0, -1.0, -0.5], atol=1e-7)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=st.floats(-50, 50), t=st.floats(0, 1))
def test_properties(xp, x, t):
    loss, d = sigmoid_binary_cross_entropy(xp.asarray([x]), xp.asarray([t]), reduction="sum")
    p = 1 / (1 + np.exp(-x))
    # the loss equals -t log p - (1 - t) log(1 - p), with log p = -log(1 + e^-x) and
    # log(1 - p) = -log(1 + e^x) written via logaddexp (the naive log(1 - p) cancels)
    textbook = t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x)
    # max(x, 0) - x*t loses ~|x|*eps absolutely when the two terms nearly cancel
    assert float(loss) == pytest.approx(textbook, rel=1e-12, abs=4 * abs(x) * 2.3e-16)
    # and is bounded below by the entropy of t
    entropy = -sum(v * np.log(v) for v in (t, 1 - t) if v > 0)
    assert float(loss) >= entropy - 1e-12
    assert float(d[0]) == pytest.approx(p - t, abs=1e-12)


def test_empty(xp):
    loss, d = sigmoid_binary_cross_entropy(xp.zeros((0, 28, 28)), xp.zeros((0, 28, 28)))
    assert np.isnan(float(loss)) and d.shape == (0, 28, 28)  # mean of nothing, as torch
    loss, d = sigmoid_binary_cross_entropy(xp.zeros(0), xp.zeros(0), reduction="sum")
    assert float(loss) == 0.0
    with pytest.raises(ValueError):
        sigmoid_binary_cross_entropy(xp.zeros(2), xp.zeros(2), reduction="none")


@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_torch_parity(xp, with_weight, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (4 * rng.standard_normal((3, 5, 5))).astype(np.float32)
    t = (rng.uniform(size=(3, 5, 5)) > 0.5).astype(np.float32)
    w = rng.uniform(0, 2, (5, 5)).astype(np.float32) if with_weight else None
    loss, d = sigmoid_binary_cross_entropy(
        xp.asarray(x), xp.asarray(t), None if w is None else xp.asarray(w), reduction
    )
    tx = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(t), weight=None if w is None else torch.tensor(w), reduction=reduction
    )
    lt.backward()
    assert float(loss) == pytest.approx(lt.item(), rel=1e-5)
    np.testing.assert_allclose(asnumpy(d), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
