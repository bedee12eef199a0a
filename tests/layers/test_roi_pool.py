"""RoIPool: the 4x4 example by hand, naive == fast, gradient checks, ties, torchvision."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers.roi_pool import (
    quantize_rois,
    roi_pool_backward,
    roi_pool_forward,
    roi_pool_naive,
    roi_pool_naive_backward,
    round_half_away,
)

GRID = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)  # rows 0..3 / 4..7 / ...


def random_rois(rng, R, n_images, extent, margin=3.0):
    x = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    y = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    return np.stack([rng.integers(0, n_images, R), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def special_rois():
    """Zero width, a point, fully outside, malformed (x2 < x1), a .5 after scaling."""
    return np.array([
        [0, 6.4, 2.0, 6.4, 20.0],
        [1, 9.0, 9.0, 9.0, 9.0],
        [0, 90.0, 90.0, 99.0, 99.0],
        [1, 20.0, 18.0, 4.0, 3.0],
        [0, 2.0, 6.0, 14.0, 10.0],
    ])


def test_round_half_away_from_zero(xp):
    v = xp.asarray([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, 2.4999])
    assert asnumpy(round_half_away(v)).tolist() == [-3, -2, -1, 1, 2, 3, 0, 2]


def test_hand_computed_4x4(xp):
    x = xp.asarray(GRID)
    # whole map, 2x2 bins of 2x2 pixels: the max of each quadrant
    out, cache = roi_pool_forward(x, xp.asarray([[0, 0.0, 0.0, 3.0, 3.0]]), 2, 1.0)
    assert asnumpy(out)[0, 0].tolist() == [[5, 7], [13, 15]]
    # scale 1/2: (1, 5) * 0.5 = (0.5, 2.5) rounds to (1, 3) (NumPy's round: 0, 2);
    # roi 3 pixels, bins of 1.5: rows/cols [floor(0), ceil(1.5)) = [1, 3), [1, 4) -> overlap
    out, cache = roi_pool_forward(x, xp.asarray([[0, 1.0, 1.0, 5.0, 5.0]]), 2, 0.5)
    assert asnumpy(out)[0, 0].tolist() == [[10, 11], [14, 15]]
    dx = asnumpy(roi_pool_backward(xp.ones_like(out), cache))[0, 0]
    expected = np.zeros((4, 4))
    expected[2, 2] = expected[2, 3] = expected[3, 2] = expected[3, 3] = 1
    assert dx.tolist() == expected.tolist()


def test_ties_go_to_the_first_in_row_major_order(xp):
    x = xp.zeros((1, 1, 4, 4))
    out, cache = roi_pool_forward(x, xp.asarray([[0, 1.0, 1.0, 5.0, 5.0]]), 2, 0.5)
    dx = asnumpy(roi_pool_backward(xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]]), cache))[0, 0]
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 2], expected[2, 1], expected[2, 2] = 1, 2, 3, 4
    assert dx.tolist() == expected.tolist()
    # a tie across rows and columns: (0, 1) comes before (1, 0) in row-major order
    x = xp.asarray([[[[0.0, 5.0], [5.0, 1.0]]]])
    out, cache = roi_pool_forward(x, xp.asarray([[0, 0.0, 0.0, 1.0, 1.0]]), 1)
    dx = asnumpy(roi_pool_backward(xp.ones_like(out), cache))[0, 0]
    assert dx.tolist() == [[0, 1], [0, 0]]


def test_quantize_rois(xp):
    q = quantize_rois(xp.asarray([[0, 1.0, 2.0, 5.0, 2.0], [0, 6.0, 6.0, 2.0, 2.0]]), 0.5,
                      np.float64)
    # x: round(0.5)=1 .. round(2.5)=3 -> 3 px; y: 1..1 -> 1 px; malformed -> 1 x 1
    assert asnumpy(q).tolist() == [[1, 1, 3, 1], [3, 3, 1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_fast_matches_naive(xp, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9, 11))
    if ties:  # few distinct values, like a ReLU map
        x = np.maximum(np.round(x), 0)
    x = xp.asarray(x)
    rois = xp.asarray(np.concatenate([random_rois(rng, 8, 2, 40.0), special_rois()]))
    out, cache = roi_pool_forward(x, rois, (3, 2), 0.25)
    ref, ref_cache = roi_pool_naive(x, rois, (3, 2), 0.25)
    assert rel_error(out, ref) < 1e-10
    assert (asnumpy(cache.argmax) == asnumpy(ref_cache.argmax)).all()
    dout = xp.asarray(rng.standard_normal(out.shape))
    assert rel_error(roi_pool_backward(dout, cache), roi_pool_naive_backward(dout, ref_cache)) \
        < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_check(xp, seed):
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) / 10.0)  # no ties
    rois = xp.asarray(random_rois(rng, 5, 2, 28.0))
    errs = check_layer(roi_pool_forward, roi_pool_backward, [x, rois], wrt=[0], seed=seed,
                       output_size=(2, 3), spatial_scale=0.25)
    print(f"roi_pool seed {seed}: rel error {errs[0]:.2e}")
    assert errs[0] < 1e-8


def test_empty_rois_and_outside_rois(xp):
    x = xp.asarray(np.ones((1, 4, 5, 5), dtype=np.float32))
    out, cache = roi_pool_forward(x, xp.zeros((0, 5), dtype=np.float32), 3, 0.5)
    assert out.shape == (0, 4, 3, 3) and out.dtype == np.float32
    assert float(abs(roi_pool_backward(out, cache)).sum()) == 0.0
    out, cache = roi_pool_forward(x, xp.asarray([[0, 40.0, 40.0, 50.0, 50.0]]), 2, 1.0)
    assert float(abs(out).sum()) == 0.0  # empty bins give 0 ...
    assert float(abs(roi_pool_backward(xp.ones_like(out), cache)).sum()) == 0.0  # ... no grad


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ph=st.integers(1, 4), pw=st.integers(1, 4))
def test_outputs_are_inputs_and_gradient_mass_is_kept(seed, ph, pw):
    """Each output is an input value of its image; backward moves every non-empty bin's
    dout to exactly one pixel, so the totals agree."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 6, 7))
    rois = random_rois(rng, 4, 2, 28.0)
    out, cache = roi_pool_forward(x, rois, (ph, pw), 0.25)
    nonempty = asnumpy(cache.argmax) >= 0  # (R, C, PH, PW)
    for r in range(4):
        b = int(rois[r, 0])
        for c in range(2):
            assert np.isin(out[r, c][nonempty[r, c]], x[b, c]).all()
    d = rng.standard_normal(out.shape)
    assert abs(roi_pool_backward(d, cache).sum() - d[nonempty].sum()) < 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torchvision(dtype):
    """Outputs equal torchvision.ops.roi_pool exactly; gradients to 1e-5 (f32 sum order)."""
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 13, 17))
    x[0, 0] = np.maximum(np.round(x[0, 0]), 0)  # a channel full of ties
    x = x.astype(dtype)
    rois = np.concatenate([random_rois(rng, 30, 2, 64.0), special_rois()]).astype(dtype)
    out, cache = roi_pool_forward(x, rois, (5, 4), 0.25)
    tx = torch.from_numpy(x).requires_grad_()
    ref = tv_ops.roi_pool(tx, torch.from_numpy(rois), (5, 4), 0.25)
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_allclose(roi_pool_backward(dout, cache), tx.grad.numpy(), atol=1e-5,
                               rtol=0)
