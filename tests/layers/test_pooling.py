"""Tests for npmaskrcnn/layers/pooling.py: 2-D max pooling."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer
from npmaskrcnn.layers.pooling import (
    MaxPool2d,
    max_pool2d_backward,
    max_pool2d_backward_naive,
    max_pool2d_forward,
    max_pool2d_naive,
)

# the two configurations Mask R-CNN uses, plus overlapping / rectangular ones
CASES = [
    (3, 2, 1),  # ResNet stem
    (1, 2, 0),  # FPN P6 (LastLevelMaxPool)
    (2, None, 0),  # stride defaults to the kernel
    (3, 1, 1),  # heavy overlap
    ((3, 2), (2, 1), (1, 0)),
]


def distinct_input(rng, shape):
    """Values with no ties (a permutation, scaled): no kink for gradient checks."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) + rng.uniform(0.1, 0.9)) * 0.37


def test_hand_computed_stem(xp):
    # 4x4 input, 3x3 window, stride 2, padding 1 -> 2x2 output
    x = xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4))
    x[0, 0, 0, 0] = 20.0
    out, cache = max_pool2d_forward(x, 3, 2, 1)
    # windows: rows {-1,0,1} x cols {-1,0,1} -> max(20, 1, 4, 5) = 20; rows {-1,0,1} x
    # cols {1,2,3} -> max(1,2,3,5,6,7) = 7; rows {1,2,3} x cols {-1,0,1} -> 13; -> 15
    np.testing.assert_array_equal(asnumpy(out), [[[[20.0, 7.0], [13.0, 15.0]]]])
    dx = asnumpy(max_pool2d_backward(xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]]), cache))
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 0], expected[0, 0, 1, 3] = 1.0, 2.0
    expected[0, 0, 3, 1], expected[0, 0, 3, 3] = 3.0, 4.0
    np.testing.assert_array_equal(dx, expected)


def test_hand_computed_p6(xp):
    x = xp.asarray(np.arange(25.0).reshape(1, 1, 5, 5))
    out, cache = max_pool2d_forward(x, 1, 2, 0)
    np.testing.assert_array_equal(asnumpy(out), [[[[0, 2, 4], [10, 12, 14], [20, 22, 24]]]])
    dx = asnumpy(max_pool2d_backward(xp.ones((1, 1, 3, 3)), cache))
    assert dx.sum() == 9 and dx[0, 0, ::2, ::2].sum() == 9


def test_ties_first_max_gets_gradient(xp):
    # a constant window: every cell ties; the first in row-major order wins
    x = xp.ones((1, 1, 4, 4))
    _, cache = max_pool2d_forward(x, 2, 2, 0)
    dx = asnumpy(max_pool2d_backward(xp.ones((1, 1, 2, 2)), cache))
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0],
                                             [0, 0, 0, 0]])
    # tie between the 2nd and 4th cells of a window: the 2nd wins
    x = xp.asarray([[[[0.0, 5.0], [1.0, 5.0]]]])
    _, cache = max_pool2d_forward(x, 2)
    dx = asnumpy(max_pool2d_backward(xp.ones((1, 1, 1, 1)), cache))
    np.testing.assert_array_equal(dx[0, 0], [[0, 1], [0, 0]])


def test_ties_match_torch(xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64)  # many ties
    d = rng.standard_normal((2, 3, 5, 4))
    _, cache = max_pool2d_forward(xp.asarray(x), 3, 2, 1)
    dx = max_pool2d_backward(xp.asarray(d), cache)
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(t, 3, 2, 1).backward(torch.tensor(d))
    np.testing.assert_allclose(asnumpy(dx), t.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, s, p", CASES)
def test_fast_equals_naive(xp, k, s, p):
    rng = np.random.default_rng(3)
    x = xp.asarray(rng.integers(0, 4, (2, 2, 7, 6)).astype(np.float64))  # ties included
    out, cache = max_pool2d_forward(x, k, s, p)
    ref, pos = max_pool2d_naive(x, k, s, p)
    assert float(abs(out - ref).max()) == 0.0
    d = xp.asarray(rng.standard_normal(out.shape))
    dx = max_pool2d_backward(d, cache)
    dx_ref = max_pool2d_backward_naive(d, pos, x.shape)
    assert float(abs(dx - dx_ref).max()) < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k, s, p", CASES[:2] + CASES[3:4])
def test_gradcheck(xp, seed, k, s, p):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(distinct_input(rng, (2, 2, 6, 5)))
    errs = check_layer(max_pool2d_forward, max_pool2d_backward, [x], seed=seed,
                       kernel_size=k, stride=s, padding=p)
    print(f"max_pool2d k={k} s={s} p={p} grad rel error", errs)
    assert max(errs) < 1e-6


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 4), s=st.integers(1, 3), H=st.integers(4, 8), W=st.integers(4, 8),
       data=st.data())
def test_property_matches_naive_and_conserves_gradient(xp, k, s, H, W, data):
    p = data.draw(st.integers(0, k // 2))
    seed = data.draw(st.integers(0, 2**16))
    x = xp.asarray(np.random.default_rng(seed).standard_normal((1, 2, H, W)))
    out, cache = max_pool2d_forward(x, k, s, p)
    ref, _ = max_pool2d_naive(x, k, s, p)
    assert out.shape == ((1, 2, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1))
    np.testing.assert_array_equal(asnumpy(out), asnumpy(ref))
    # the inference path (separable max, no argmax) gives the same numbers
    fast, no_cache = max_pool2d_forward(x, k, s, p, with_argmax=False)
    np.testing.assert_array_equal(asnumpy(fast), asnumpy(ref))
    assert no_cache is None
    # each window routes its whole gradient to one input cell: the sum is conserved
    d = xp.ones(out.shape)
    assert float(max_pool2d_backward(d, cache).sum()) == pytest.approx(out.size)


def test_padding_cells_never_win(xp):
    x = xp.full((1, 1, 3, 3), -1e30)  # very negative, yet above the -inf padding
    out, cache = max_pool2d_forward(x, 3, 2, 1)
    assert float(out.max()) == -1e30
    dx = max_pool2d_backward(xp.ones(out.shape), cache)
    assert dx.shape == (1, 1, 3, 3) and float(dx.sum()) == out.size


def test_nan_propagates(xp):
    x = xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4))
    x[0, 0, 0, 1] = np.nan
    out, _ = max_pool2d_forward(x, 2)
    assert np.isnan(float(out[0, 0, 0, 0]))  # as torch: the NaN window gives NaN
    np.testing.assert_array_equal(asnumpy(out)[0, 0].ravel()[1:], [7.0, 13.0, 15.0])


def test_empty_batch_and_bad_arguments(xp):
    out, cache = max_pool2d_forward(xp.zeros((0, 4, 8, 8)), 3, 2, 1)
    assert out.shape == (0, 4, 4, 4)
    assert max_pool2d_backward(out, cache).shape == (0, 4, 8, 8)
    with pytest.raises(ValueError):
        max_pool2d_forward(xp.zeros((1, 1, 4, 4)), 3, 1, 2)  # padding > kernel / 2
    with pytest.raises(ValueError):
        max_pool2d_forward(xp.zeros((1, 1, 2, 2)), 3)


def test_module(xp):
    m = MaxPool2d(3, 2, 1)
    x = xp.asarray(distinct_input(np.random.default_rng(0), (1, 2, 6, 6)))
    out = m(x)
    ref, cache = max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(asnumpy(out), asnumpy(ref))
    d = xp.ones(out.shape)
    np.testing.assert_array_equal(asnumpy(m.backward(d)), asnumpy(max_pool2d_backward(d, cache)))


@pytest.mark.parametrize("k, s, p", CASES)
def test_torch_parity(xp, k, s, p):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    out, cache = max_pool2d_forward(xp.asarray(x), k, s, p)
    d = rng.standard_normal(out.shape).astype(np.float32)
    dx = max_pool2d_backward(xp.asarray(d), cache)
    t = torch.tensor(x, requires_grad=True)
    ot = torch.nn.functional.max_pool2d(t, k, s, p)
    ot.backward(torch.tensor(d))
    np.testing.assert_array_equal(asnumpy(out), ot.detach().numpy())
    np.testing.assert_allclose(asnumpy(dx), t.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_eval_module_skips_argmax_and_propagates_nan(xp):
    pool = MaxPool2d(3, 2, 1)
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 9, 8)))
    x[0, 1, 4, 4] = np.nan
    train_out = pool(x)
    pool.eval()
    eval_out = pool(x)
    np.testing.assert_array_equal(asnumpy(eval_out), asnumpy(train_out))  # NaNs included
    assert bool(xp.isnan(eval_out[0, 1]).any()) and not bool(xp.isnan(eval_out[1]).any())
