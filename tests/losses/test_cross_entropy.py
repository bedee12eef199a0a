"""Tests for npmaskrcnn/losses/cross_entropy.py: softmax cross-entropy, with labels or with
a target distribution (soft targets)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.losses.cross_entropy import soft_target_cross_entropy, softmax_cross_entropy


def test_hand_computed(xp):
    # row 0: logits (0, ln 3) -> softmax (1/4, 3/4), label 1 -> -ln(3/4)
    # row 1: logits (0, 0) -> (1/2, 1/2), label 0 -> ln 2
    logits = xp.asarray([[0.0, np.log(3.0)], [0.0, 0.0]])
    labels = xp.asarray([1, 0])
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert float(loss) == pytest.approx((-np.log(0.75) + np.log(2.0)) / 2, rel=1e-14)
    np.testing.assert_allclose(asnumpy(dlogits), [[0.25 / 2, -0.25 / 2], [-0.5 / 2, 0.5 / 2]],
                               rtol=1e-14)


def test_ignore_index_excluded_from_loss_and_count(xp):
    logits = xp.asarray([[0.0, np.log(3.0)], [5.0, -5.0]])
    loss, dlogits = softmax_cross_entropy(logits, xp.asarray([1, -100]))
    assert float(loss) == pytest.approx(-np.log(0.75), rel=1e-14)  # mean over 1 row
    np.testing.assert_array_equal(asnumpy(dlogits)[1], [0.0, 0.0])
    loss, _ = softmax_cross_entropy(logits, xp.asarray([1, -1]), ignore_index=-1)
    assert float(loss) == pytest.approx(-np.log(0.75), rel=1e-14)


def _gradcheck(logits, labels, **kwargs):
    _, dlogits = softmax_cross_entropy(logits, labels, **kwargs)
    num = numerical_gradient(lambda: float(softmax_cross_entropy(logits, labels, **kwargs)[0]),
                             logits)
    return rel_error(num, dlogits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(xp, seed):
    rng = np.random.default_rng(seed)
    logits = xp.asarray(3 * rng.standard_normal((6, 5)))
    labels = rng.integers(0, 5, 6)
    labels[seed] = -100
    err = _gradcheck(logits, xp.asarray(labels))
    print("softmax_cross_entropy grad rel error", err)
    assert err < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_spatial(xp, seed):
    rng = np.random.default_rng(seed)
    logits = xp.asarray(rng.standard_normal((2, 3, 4, 4)))  # (R, K, M, M)
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[0, 0, :2] = 255
    err = _gradcheck(logits, xp.asarray(labels), ignore_index=255)
    print("softmax_cross_entropy (spatial) grad rel error", err)
    assert err < 1e-6


def test_spatial_equals_flattened(xp):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4, 5))
    labels = rng.integers(0, 3, (2, 4, 5))
    loss, d = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    flat = logits.transpose(0, 2, 3, 1).reshape(-1, 3)  # (R*M*M, K)
    loss_f, d_f = softmax_cross_entropy(xp.asarray(flat), xp.asarray(labels.reshape(-1)))
    assert float(loss) == pytest.approx(float(loss_f), rel=1e-14)
    np.testing.assert_allclose(asnumpy(d).transpose(0, 2, 3, 1).reshape(-1, 3), asnumpy(d_f),
                               rtol=1e-14)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(R=st.integers(1, 6), K=st.integers(1, 6), shift=st.floats(-1e3, 1e3),
       seed=st.integers(0, 99))
def test_properties(xp, R, K, shift, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((R, K))
    labels = xp.asarray(rng.integers(0, K, R))
    loss, d = softmax_cross_entropy(xp.asarray(logits), labels)
    # shift invariance per row, non-negativity, gradient rows sum to zero
    loss2, d2 = softmax_cross_entropy(xp.asarray(logits + shift), labels)
    assert float(loss) >= 0
    assert float(loss2) == pytest.approx(float(loss), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(asnumpy(d2), asnumpy(d), atol=1e-9)
    np.testing.assert_allclose(asnumpy(d).sum(axis=1), 0, atol=1e-12)


def test_stable_for_huge_logits(xp):
    logits = xp.asarray([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 1e4]], dtype=xp.float32)
    loss, d = softmax_cross_entropy(logits, xp.asarray([1, 1]))
    # row 0: -log softmax = 2000; row 1: two equal maxima -> log 2
    assert float(loss) == pytest.approx((2000.0 + np.log(2.0)) / 2, rel=1e-6)
    assert loss.dtype == np.float32 and d.dtype == np.float32
    assert np.all(np.isfinite(asnumpy(d)))


def test_empty_and_all_ignored(xp):
    # as F.cross_entropy: mean over zero elements is NaN, the gradient is zero
    loss, d = softmax_cross_entropy(xp.zeros((0, 4)), xp.zeros(0, dtype=xp.int64))
    assert np.isnan(float(loss)) and d.shape == (0, 4)
    loss, d = softmax_cross_entropy(xp.ones((2, 4)), xp.asarray([-100, -100]))
    assert np.isnan(float(loss))
    np.testing.assert_array_equal(asnumpy(d), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        softmax_cross_entropy(xp.ones((2, 4, 3)), xp.zeros(2, dtype=xp.int64))


@pytest.mark.parametrize("spatial", [False, True])
def test_torch_parity(xp, spatial):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shape = (5, 4, 3, 3) if spatial else (7, 4)
    logits = (3 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, 4, (shape[0],) + shape[2:])
    labels.reshape(-1)[:2] = -100
    loss, d = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    t = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    lt.backward()
    assert float(loss) == pytest.approx(lt.item(), rel=1e-5)
    np.testing.assert_allclose(asnumpy(d), t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_soft_targets_hand_computed(xp):
    # logits (0, ln 3) -> softmax (1/4, 3/4); target (1/2, 1/2):
    # loss = -(ln(1/4) + ln(3/4)) / 2, gradient softmax - q = (-1/4, +1/4)
    logits = xp.asarray([[0.0, np.log(3.0)]])
    loss, d = soft_target_cross_entropy(logits, xp.asarray([[0.5, 0.5]]))
    assert float(loss) == pytest.approx(-(np.log(0.25) + np.log(0.75)) / 2, rel=1e-14)
    np.testing.assert_allclose(asnumpy(d), [[-0.25, 0.25]], rtol=1e-14)


def test_soft_targets_one_hot_equal_labels(xp):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 4, 3, 3))
    labels = rng.integers(0, 4, (2, 3, 3))
    one_hot = np.moveaxis(np.eye(4)[labels], -1, 1)  # (2, 3, 3, 4) -> (2, 4, 3, 3)
    loss, d = soft_target_cross_entropy(xp.asarray(logits), xp.asarray(one_hot))
    ref, d_ref = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    assert float(loss) == pytest.approx(float(ref), rel=1e-13)
    np.testing.assert_allclose(asnumpy(d), asnumpy(d_ref), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_targets_gradcheck(xp, seed):
    """float64 central differences against (softmax - q) / n, on random distributions."""
    rng = np.random.default_rng(seed)
    logits = xp.asarray(2 * rng.standard_normal((3, 4, 2, 2)))
    q = rng.random((3, 4, 2, 2))
    q = xp.asarray(q / q.sum(axis=1, keepdims=True))
    _, d = soft_target_cross_entropy(logits, q)
    num = numerical_gradient(lambda: float(soft_target_cross_entropy(logits, q)[0]), logits)
    err = rel_error(num, d)
    print("soft_target_cross_entropy grad rel error", err)
    assert err < 1e-7


def test_soft_targets_empty_and_mismatch(xp):
    loss, d = soft_target_cross_entropy(xp.zeros((0, 3)), xp.zeros((0, 3)))
    assert np.isnan(float(loss)) and d.shape == (0, 3)
    with pytest.raises(ValueError, match="target_probs"):
        soft_target_cross_entropy(xp.zeros((2, 3)), xp.zeros((2, 4)))


def test_soft_targets_torch_parity(xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = (3 * rng.standard_normal((4, 3, 5, 5))).astype(np.float32)
    q = rng.random((4, 3, 5, 5)).astype(np.float32)
    q /= q.sum(axis=1, keepdims=True)
    loss, d = soft_target_cross_entropy(xp.asarray(logits), xp.asarray(q))
    t = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(t, torch.tensor(q))  # probabilities as target
    lt.backward()
    assert float(loss) == pytest.approx(lt.item(), rel=1e-5)
    np.testing.assert_allclose(asnumpy(d), t.grad.numpy(), rtol=1e-4, atol=1e-7)
