"""RoIAlign (He et al. 2017, section 3 and Fig. 3): bilinear samples, no quantisation.

A RoI is a box in image pixels; the heads want a fixed PH x PW grid of features for it.
RoIPool rounds the box and its bins to the feature grid, which misaligns the pooled
features with the object by up to a feature cell (16 image pixels at stride 16) -- fatal
for pixel-accurate masks. RoIAlign rounds nothing (paper Fig. 3):

1. scale the RoI to feature pixels: ``x1 * s, y1 * s, x2 * s, y2 * s``;
2. split it into PH x PW equal bins;
3. in each bin, place a regular g_h x g_w grid of sample points;
4. read the feature map at each sample point by **bilinear interpolation** of the four
   nearest feature cells (``bilinear.py``);
5. average the samples of each bin (or take their max, the paper's Table 2c "max" rows).

Semantics are exactly ``torchvision.ops.roi_align`` (CPU kernel ``roi_align_kernel.cpp``),
computed in the dtype of ``x``. For a RoI ``[b, x1, y1, x2, y2]`` and scale s:

    o = 0.5 if aligned else 0                  (aligned: pixel i covers [i, i+1))
    y_start = y1*s - o,  roi_h = (y2*s - o) - y_start,  roi_h = max(roi_h, 1) if not aligned
    bin_h = roi_h / PH,  g_h = sampling_ratio if > 0 else ceil(roi_h / PH)
    y(ph, iy) = y_start + ph*bin_h + (iy + 1/2) * bin_h / g_h          for iy < g_h

and the same along x. Each sample is read with torchvision's bilinear rule (zero outside
[-1, H] x [-1, W], border clamping) and

    avg:  out[r, c, ph, pw] = 1/(g_h g_w) sum_{iy, ix} bilinear(x[b, c], y(ph, iy), x(pw, ix))
    max:  the largest of those samples (first one on ties; a sample outside the map reads
          0 and takes part); its gradient goes to the four neighbours of that one sample.
    A bin with no samples (g = 0) gives 0.

The backward pass sends each bin's gradient to the cells its samples read, with the same
bilinear weights (divided by g_h g_w for avg): RoIAlign is linear in x. No gradient flows
into the RoI coordinates (torchvision's does not either). ``roi_align_naive`` and
``roi_align_naive_backward`` below are this recipe, loop by loop.

The model runs the engines of ``roi_align_fast.py`` (imported at the bottom of this file):
the same numbers, computed as small matrix products per RoI on a CPU and as one batched
gather on a GPU. ``tests/layers/test_roi_align.py`` checks them against these loops and
against torchvision.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import get_xp
from .bilinear import bilinear_corners
from .sizes import as_pair

AGGREGATIONS = ("avg", "max")


class RoIAlignNaiveCache(NamedTuple):
    """The naive pair recomputes everything from its inputs."""

    x: Any  # (N, C, H, W)
    rois: Any  # (R, 5)
    params: tuple  # (output_size, spatial_scale, sampling_ratio, aligned, aggregation)


def _naive_geometry(roi, spatial_scale, sampling_ratio, aligned, PH, PW):
    """One RoI's start, bin size and grid (Python floats), torchvision's order of operations."""
    b, x1, y1, x2, y2 = (float(v) for v in roi)
    offset = 0.5 if aligned else 0.0
    x_start, y_start = x1 * spatial_scale - offset, y1 * spatial_scale - offset
    roi_w = (x2 * spatial_scale - offset) - x_start
    roi_h = (y2 * spatial_scale - offset) - y_start
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / PW, roi_h / PH
    g_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bin_h), 0)
    g_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(bin_w), 0)
    return int(b), y_start, x_start, bin_h, bin_w, g_h, g_w


def _naive_bins(x, rois, params):
    """Yield (r, b, ph, pw, samples) with samples the list of bilinear corner lists."""
    output_size, spatial_scale, sampling_ratio, aligned, _ = params
    PH, PW = as_pair(output_size)
    H, W = x.shape[-2:]
    for r, roi in enumerate(rois.tolist()):
        b, y0, x0, bin_h, bin_w, g_h, g_w = _naive_geometry(
            roi, spatial_scale, sampling_ratio, aligned, PH, PW
        )
        for ph in range(PH):
            for pw in range(PW):
                samples = []
                for iy in range(g_h):
                    y = y0 + ph * bin_h + ((iy + 0.5) * bin_h) / g_h
                    for ix in range(g_w):
                        xx = x0 + pw * bin_w + ((ix + 0.5) * bin_w) / g_w
                        samples.append(bilinear_corners(y, xx, H, W))
                yield r, b, ph, pw, samples


def _sample_value(x, b, corners):
    """(C,) value of one bilinear sample: sum of weight * x[b, :, row, col]."""
    value = get_xp(x).zeros(x.shape[1], dtype=x.dtype)
    for row, col, weight in corners:
        value = value + weight * x[b, :, row, col]
    return value


def roi_align_naive(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                    aligned=False, aggregation="avg"):
    """Loop version of ``roi_align_forward`` that reads like the paper.

    For each RoI, each bin, each sample of the bin's regular grid: read x bilinearly
    (``bilinear_corners``), then average (or max) the samples. Coordinates are Python
    floats (float64). Returns (out (R, C, PH, PW), cache) like the fast version.
    """
    xp = get_xp(x)
    PH, PW = as_pair(output_size)
    params = (output_size, spatial_scale, sampling_ratio, aligned, aggregation)
    out = xp.zeros((rois.shape[0], x.shape[1], PH, PW), dtype=x.dtype)
    for r, b, ph, pw, samples in _naive_bins(x, rois, params):
        if not samples:
            continue  # empty grid: 0
        values = [_sample_value(x, b, corners) for corners in samples]
        if aggregation == "avg":
            out[r, :, ph, pw] = sum(values) / len(samples)
        else:
            out[r, :, ph, pw] = xp.stack(values).max(axis=0)
    return out, RoIAlignNaiveCache(x, rois, params)


def roi_align_naive_backward(dout, cache: RoIAlignNaiveCache):
    """Loop version of ``roi_align_backward``: each sample's corners get weight * dout."""
    x, rois, params = cache
    xp = get_xp(x)
    dx = xp.zeros_like(x)
    for r, b, ph, pw, samples in _naive_bins(x, rois, params):
        if not samples:
            continue
        g = dout[r, :, ph, pw]  # (C,)
        if params[4] == "avg":
            shares = [g / len(samples)] * len(samples)
        else:  # per channel, only the first largest sample receives the gradient
            winner = xp.stack([_sample_value(x, b, c) for c in samples]).argmax(axis=0)
            shares = [xp.where(winner == i, g, 0) for i in range(len(samples))]
        for corners, share in zip(samples, shares):
            for row, col, weight in corners:
                dx[b, :, row, col] += weight * share
    return dx


# ------------------------------------------------------------ the engine the model runs
from .roi_align_fast import (  # noqa: E402, F401
    RoIAlignCache,
    roi_align_backward,
    roi_align_forward,
    roi_align_levels_backward,
    roi_align_levels_forward,
)
