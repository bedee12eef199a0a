"""RoIAlign: hand-computed cases, naive == fast, gradient checks, properties, torchvision."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers import roi_align_fast
from npmaskrcnn.layers.roi_align import (
    roi_align_backward,
    roi_align_forward,
    roi_align_naive,
    roi_align_naive_backward,
)


def ramp(n):
    """(1, 1, n, n) map x[i, j] = 4 i + j: bilinear reads of it are exact inside the map."""
    i = np.arange(n, dtype=np.float64)
    return (4 * i[:, None] + i[None, :])[None, None]


RAMP = ramp(4)  # rows 0 1 2 3 / 4 5 6 7 / ...


def random_rois(rng, R, n_images, extent, margin=3.0):
    """(R, 5) float64 RoIs with corners off the integer grid, some partly outside the map."""
    x = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    y = np.sort(rng.uniform(-margin, extent + margin, (R, 2)), axis=1)
    b = rng.integers(0, n_images, R)
    return np.stack([b, x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def special_rois():
    """Zero width, zero height, a point, fully outside, and x2 < x1 (malformed)."""
    return np.array([
        [0, 3.3, 1.2, 3.3, 6.1],
        [1, 1.1, 4.7, 7.9, 4.7],
        [0, 5.5, 5.5, 5.5, 5.5],
        [1, 60.0, 60.0, 70.0, 75.0],
        [0, 7.2, 6.1, 2.4, 1.3],
    ])


def test_hand_computed_bins(xp):
    x = xp.asarray(RAMP)
    rois = xp.asarray([[0, 0.0, 0.0, 2.0, 2.0]])
    # 2x2 bins of size 1, samples at 0.25 and 0.75: bin means (y, x) = (0.5, 0.5) ... (1.5, 1.5)
    out, _ = roi_align_forward(x, rois, 2, 1.0, sampling_ratio=2)
    np.testing.assert_allclose(asnumpy(out)[0, 0], [[2.5, 3.5], [6.5, 7.5]], atol=1e-12)
    # aligned=True shifts by half a pixel: the RoI [0.5, 2.5] samples the same points
    out, _ = roi_align_forward(x, rois + xp.asarray([0, 0.5, 0.5, 0.5, 0.5]), 2, 1.0, 2, True)
    np.testing.assert_allclose(asnumpy(out)[0, 0], [[2.5, 3.5], [6.5, 7.5]], atol=1e-12)
    # border: samples at 3 (clamped to the last row/col) and 5 (> 4: outside, reads 0)
    out, _ = roi_align_forward(x, xp.asarray([[0, 2.0, 2.0, 6.0, 6.0]]), 1, 1.0, 2)
    assert abs(float(out[0, 0, 0, 0]) - 15.0 / 4) < 1e-12
    # adaptive grid: roi 4 / 1 bin -> 4 x 4 samples at 0.5, 1.5, 2.5, 3.5 (3.5 reads row 3)
    out, _ = roi_align_forward(x, xp.asarray([[0, 0.0, 0.0, 4.0, 4.0]]), 1, 1.0, -1)
    assert abs(float(out[0, 0, 0, 0]) - 4 * 1.875 - 1.875) < 1e-12


def test_hand_computed_backward(xp):
    x = xp.asarray(RAMP)
    out, cache = roi_align_forward(x, xp.asarray([[0, 0.0, 0.0, 2.0, 2.0]]), 1, 1.0, 2)
    dx = asnumpy(roi_align_backward(xp.ones_like(out), cache))[0, 0]
    # samples at (0.5 | 1.5)^2, each 1/4 of the bin, spreading 1/4 to each of 4 pixels
    expected = np.array([[1, 2, 1, 0], [2, 4, 2, 0], [1, 2, 1, 0], [0, 0, 0, 0]]) / 16
    np.testing.assert_allclose(dx, expected, atol=1e-12)


def test_max_aggregation_hand_computed(xp):
    x = xp.asarray(RAMP)
    out, cache = roi_align_forward(x, xp.asarray([[0, 0.0, 0.0, 2.0, 2.0]]), 1, 1.0, 2,
                                   aggregation="max")
    assert abs(float(out[0, 0, 0, 0]) - (4 * 1.5 + 1.5)) < 1e-12  # the sample at (1.5, 1.5)
    dx = asnumpy(roi_align_backward(xp.ones_like(out), cache))[0, 0]
    np.testing.assert_allclose(dx[1:3, 1:3], np.full((2, 2), 0.25), atol=1e-12)
    assert abs(dx.sum() - 1.0) < 1e-12


CASES = [(aligned, ratio, agg) for aligned in (False, True) for ratio in (2, -1, 1, 3)
         for agg in ("avg", "max")]


@pytest.mark.parametrize("aligned,ratio,agg", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_matches_naive(xp, aligned, ratio, agg, seed):
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((2, 3, 9, 11)))
    rois = np.concatenate([random_rois(rng, 6, 2, 40.0), special_rois()])
    rois = xp.asarray(rois)
    out, cache = roi_align_forward(x, rois, (2, 3), 0.25, ratio, aligned, agg)
    ref, ref_cache = roi_align_naive(x, rois, (2, 3), 0.25, ratio, aligned, agg)
    assert out.shape == (11, 3, 2, 3)
    assert rel_error(out, ref) < 1e-10
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx = roi_align_backward(dout, cache)
    assert rel_error(dx, roi_align_naive_backward(dout, ref_cache)) < 1e-10


@pytest.mark.parametrize("agg", ["avg", "max"])
def test_gpu_engine_matches_cpu_engine(monkeypatch, agg):
    """The GPU engine (one gather, scatter_add backward; roi_align_gather.py), run on
    NumPy, computes the CPU engine's numbers, adaptive grids and special RoIs included."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 11))
    rois = np.concatenate([random_rois(rng, 9, 2, 40.0), special_rois()])
    out, cache = roi_align_forward(x, rois, (2, 3), 0.25, -1, False, agg)
    dout = rng.standard_normal(out.shape)
    dx = roi_align_backward(dout, cache)
    monkeypatch.setattr(roi_align_fast, "on_device", lambda xp: True)
    out_g, cache_g = roi_align_forward(x, rois, (2, 3), 0.25, -1, False, agg)
    assert type(cache_g.plan).__name__ == "GatherCache"
    assert rel_error(out_g, out) < 1e-12
    assert rel_error(roi_align_backward(dout, cache_g), dx) < 1e-12


@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (1, 13, 10, 5), (1, 1, 1, 1)])
def test_channels_first_is_the_transpose(xp, shape):
    """The blocked NumPy copy of the backward's NHWC -> NCHW gradient, over sizes that are
    and are not a multiple of its block, gives the transpose exactly."""
    xt = np.random.default_rng(2).standard_normal(shape)
    out = roi_align_fast.channels_first(xp.asarray(xt))
    assert out.shape == (shape[0], shape[3], shape[1], shape[2])
    assert out.flags["C_CONTIGUOUS"]
    assert np.array_equal(asnumpy(out), xt.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("aligned,ratio,agg", [(False, 2, "avg"), (True, -1, "avg"),
                                               (False, 2, "max"), (True, 3, "max")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_check(xp, aligned, ratio, agg, seed):
    rng = np.random.default_rng(seed)
    # generic values: no two bilinear samples of a bin tie (a permutation of integers
    # can: two interpolated rows may cross exactly at a sample), so the max has no kink
    x = xp.asarray(rng.standard_normal((2, 2, 7, 8)))
    rois = xp.asarray(random_rois(rng, 4, 2, 28.0, margin=-1.0))  # inside, off the grid
    errs = check_layer(roi_align_forward, roi_align_backward, [x, rois], wrt=[0], seed=seed,
                       output_size=(2, 3), spatial_scale=0.25, sampling_ratio=ratio,
                       aligned=aligned, aggregation=agg)
    print(f"roi_align {agg} aligned={aligned} ratio={ratio}: rel error {errs[0]:.2e}")
    assert errs[0] < 1e-6


@pytest.mark.parametrize("agg", ["avg", "max"])
def test_empty_rois(xp, agg):
    x = xp.asarray(np.ones((1, 4, 5, 5), dtype=np.float32))
    out, cache = roi_align_forward(x, xp.zeros((0, 5), dtype=np.float32), 3, 0.5, 2,
                                   aggregation=agg)
    assert out.shape == (0, 4, 3, 3) and out.dtype == np.float32
    dx = roi_align_backward(out, cache)
    assert dx.shape == x.shape and float(abs(dx).sum()) == 0.0


def test_outside_roi_gives_zero_and_no_gradient(xp):
    x = xp.asarray(np.ones((1, 2, 5, 5)))
    out, cache = roi_align_forward(x, xp.asarray([[0, 30.0, 30.0, 40.0, 40.0]]), 2, 1.0, 2)
    assert float(abs(out).sum()) == 0.0
    assert float(abs(roi_align_backward(xp.ones_like(out), cache)).sum()) == 0.0


@settings(max_examples=25, deadline=None)
@given(y1=st.floats(0, 5), x1=st.floats(0, 5), h=st.floats(0.1, 2.0), w=st.floats(0.1, 2.0),
       ph=st.integers(1, 3), pw=st.integers(1, 3), ratio=st.integers(1, 3))
def test_linear_map_is_read_exactly(y1, x1, h, w, ph, pw, ratio):
    """Inside the map, RoIAlign of f(y, x) = 4y + x is f at each bin's mean sample."""
    rois = np.array([[0, x1, y1, x1 + w, y1 + h]])
    out, _ = roi_align_forward(ramp(8), rois, (ph, pw), 1.0, ratio)
    hh, ww = max(h, 1.0), max(w, 1.0)
    ys = y1 + (np.arange(ph) + 0.5) * hh / ph  # mean of a bin's samples = its centre
    xs = x1 + (np.arange(pw) + 0.5) * ww / pw
    np.testing.assert_allclose(out[0, 0], 4 * ys[:, None] + xs[None, :], atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), aligned=st.booleans(), ratio=st.integers(-1, 3))
def test_backward_is_the_adjoint(seed, aligned, ratio):
    """<roi_align(x), d> == <x, roi_align_backward(d)>: avg RoIAlign is linear in x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 6, 7))
    rois = random_rois(rng, 5, 2, 24.0)
    out, cache = roi_align_forward(x, rois, 2, 0.25, ratio, aligned)
    d = rng.standard_normal(out.shape)
    lhs, rhs = float((out * d).sum()), float((x * roi_align_backward(d, cache)).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_float32_stays_float32(xp):
    x = xp.asarray(np.ones((1, 2, 6, 6), dtype=np.float32))
    out, cache = roi_align_forward(x, xp.asarray([[0, 1, 1, 4, 4]], dtype=np.float32), 2)
    assert out.dtype == np.float32
    assert roi_align_backward(out, cache).dtype == np.float32


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [2, -1])
def test_matches_torchvision(dtype, tol, aligned, ratio):
    """Outputs and gradients equal torchvision.ops.roi_align (abs tol: 1e-12 f64, 1e-5 f32)."""
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 13, 17)).astype(dtype)
    rois = np.concatenate([random_rois(rng, 30, 2, 64.0), special_rois()]).astype(dtype)
    out, cache = roi_align_forward(x, rois, (5, 4), 0.25, ratio, aligned)
    tx = torch.from_numpy(x).requires_grad_()
    ref = tv_ops.roi_align(tx, torch.from_numpy(rois), (5, 4), 0.25, ratio, aligned)
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(roi_align_backward(dout, cache), tx.grad.numpy(), atol=tol, rtol=0)
