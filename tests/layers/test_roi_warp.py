"""RoIWarp: its definition by hand, equality with RoIPool on whole-pixel bins, naive == fast,
gradient checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers.roi_align import roi_align_forward
from npmaskrcnn.layers.roi_pool import roi_pool_backward, roi_pool_forward, round_half_away
from npmaskrcnn.layers.roi_warp import (
    roi_warp_backward,
    roi_warp_forward,
    roi_warp_naive,
    roi_warp_naive_backward,
    warp_boxes,
)


def ramp(n):
    """(1, 1, n, n) map x[i, j] = 4 i + j."""
    i = np.arange(n, dtype=np.float64)
    return (4 * i[:, None] + i[None, :])[None, None]


def random_rois(rng, R, n_images, extent, margin=3.0):
    x = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    y = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    return np.stack([rng.integers(0, n_images, R), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def test_warp_boxes_are_roipools_quantised_rois(xp):
    boxes = warp_boxes(xp.asarray([[1, 0.3, 0.3, 2.2, 2.2], [0, 5.0, 7.0, 1.0, 9.0]]), 1.0,
                       np.float64)
    # pixels 0..2 -> extent [0, 3); malformed x -> 1 pixel wide; y 7..9 -> 3 pixels
    assert asnumpy(boxes).tolist() == [[1, 0, 0, 3, 3], [0, 5, 7, 6, 10]]


def test_hand_computed_misalignment(xp):
    """The RoI [0.3, 2.2]^2 is quantised to pixels 0..2 (extent [-0.5, 2.5] around pixel
    centres): RoIWarp samples 0.25 and 1.75 (mean 1, f = 4*1 + 1 = 5) where RoIAlign
    samples 0.775 and 1.725 (mean 1.25, f = 6.25)."""
    x = xp.asarray(ramp(4))
    rois = xp.asarray([[0, 0.3, 0.3, 2.2, 2.2]])
    warped, _ = roi_warp_forward(x, rois, 1, 1.0, 2, aggregation="avg")
    aligned, _ = roi_align_forward(x, rois, 1, 1.0, 2)
    assert abs(float(warped[0, 0, 0, 0]) - 5.0) < 1e-12
    assert abs(float(aligned[0, 0, 0, 0]) - 6.25) < 1e-12
    # max: the largest sample is at (1.75, 1.75)
    warped, _ = roi_warp_forward(x, rois, 1, 1.0, 2, aggregation="max")
    assert abs(float(warped[0, 0, 0, 0]) - 8.75) < 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_roipool_on_whole_pixel_bins(xp, seed):
    """roi_w = 14 = 2 * 7 and sampling_ratio 2: every sample is a pixel centre, and the
    max over a bin's samples is RoIPool's max over the bin's pixels (grads too)."""
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((2, 3, 20, 20)))
    starts = rng.integers(0, 7, (4, 2)) * 4.0  # image pixels, inside the 20 x 20 map at 1/4
    rois = np.concatenate([rng.integers(0, 2, (4, 1)), starts, starts + 13 * 4.0], axis=1)
    rois = xp.asarray(rois)
    warped, wc = roi_warp_forward(x, rois, 7, 0.25, 2, "max")
    pooled, pc = roi_pool_forward(x, rois, 7, 0.25)
    assert rel_error(warped, pooled) < 1e-12
    d = xp.asarray(rng.standard_normal(warped.shape))
    assert rel_error(roi_warp_backward(d, wc), roi_pool_backward(d, pc)) < 1e-12


@pytest.mark.parametrize("agg", ["max", "avg"])
@pytest.mark.parametrize("ratio", [2, -1])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_matches_naive(xp, agg, ratio, seed):
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((2, 3, 9, 11)))
    rois = xp.asarray(random_rois(rng, 8, 2, 40.0))
    out, cache = roi_warp_forward(x, rois, (2, 3), 0.25, ratio, agg)
    ref, ref_cache = roi_warp_naive(x, rois, (2, 3), 0.25, ratio, agg)
    assert rel_error(out, ref) < 1e-10
    dout = xp.asarray(rng.standard_normal(out.shape))
    assert rel_error(roi_warp_backward(dout, cache), roi_warp_naive_backward(dout, ref_cache)) \
        < 1e-10


@pytest.mark.parametrize("agg", ["max", "avg"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_check(xp, agg, seed):
    rng = np.random.default_rng(seed)
    # generic values: no two bilinear samples of a bin tie (a permutation of integers
    # can: two interpolated rows may cross exactly at a sample), so the max has no kink
    x = xp.asarray(rng.standard_normal((2, 2, 7, 8)))
    rois = xp.asarray(random_rois(rng, 4, 2, 28.0))
    errs = check_layer(roi_warp_forward, roi_warp_backward, [x, rois], wrt=[0], seed=seed,
                       output_size=(3, 2), spatial_scale=0.25, sampling_ratio=3,
                       aggregation=agg)
    print(f"roi_warp {agg} seed {seed}: rel error {errs[0]:.2e}")
    assert errs[0] < 1e-6


@pytest.mark.parametrize("agg", ["max", "avg"])
def test_empty_rois(xp, agg):
    x = xp.asarray(np.ones((1, 2, 5, 5), dtype=np.float32))
    out, cache = roi_warp_forward(x, xp.zeros((0, 5), dtype=np.float32), 2, 0.5, 2, agg)
    assert out.shape == (0, 2, 2, 2)
    assert float(abs(roi_warp_backward(out, cache)).sum()) == 0.0


@settings(max_examples=20, deadline=None)
@given(x1=st.floats(0, 40), y1=st.floats(0, 40), w=st.floats(0, 30), h=st.floats(0, 30))
def test_depends_on_the_rois_only_through_their_quantisation(x1, y1, w, h):
    """A RoI and its corners snapped to the feature grid give the same output."""
    x = np.random.default_rng(0).standard_normal((1, 2, 16, 16))
    a = np.array([[0, x1, y1, x1 + w, y1 + h]])
    b = np.concatenate([a[:, :1], 4 * round_half_away(a[:, 1:] / 4)], axis=1)
    np.testing.assert_array_equal(warp_boxes(a, 0.25, np.float64),
                                  warp_boxes(b, 0.25, np.float64))
    out_a, _ = roi_warp_forward(x, a, 3, 0.25)
    out_b, _ = roi_warp_forward(x, b, 3, 0.25)
    np.testing.assert_array_equal(out_a, out_b)
