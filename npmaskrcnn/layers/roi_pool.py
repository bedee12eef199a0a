"""RoIPool (Fast R-CNN, Girshick 2015): quantised RoI, quantised bins, max. Forward/backward.

The baseline that RoIAlign replaces (He et al. 2017, section 3, Table 2c). Semantics are
exactly ``torchvision.ops.roi_pool`` (CPU kernel ``roi_pool_kernel.cpp``), computed in the
dtype of ``x``. For a RoI ``[b, x1, y1, x2, y2]`` and scale s:

    x_start = round(x1 * s), x_end = round(x2 * s)       C's round: half away from zero
    roi_w = max(x_end - x_start + 1, 1)                    pixels x_start..x_end inclusive
    bin_w = roi_w / PW
    w_lo(pw) = clamp(floor(pw * bin_w) + x_start, 0, W)   w_hi(pw) = clamp(ceil((pw+1) * bin_w)
                                                                       + x_start, 0, W)

(the same along y), and out[r, c, ph, pw] = max of x[b, c, h, w] over h_lo <= h < h_hi,
w_lo <= w < w_hi. An empty bin (clamped away) gives 0 and no gradient. The backward
sends dout to the argmax; on ties, the first maximum in row-major (h, then w) order, as
the kernel's ``>`` scan keeps it. Like the kernel, the running max starts at -FLT_MAX.

Two roundings lose alignment: the RoI edges (``round``: up to half a feature pixel, 8
image pixels at stride 16) and the bin edges (floor/ceil: up to one more pixel).

``roi_pool_naive`` and ``roi_pool_naive_backward`` below are this recipe, loop by loop.
The model runs the engine of ``roi_pool_fast.py`` (imported at the bottom of this file):
the same numbers from a separable max per RoI. ``tests/layers/test_roi_pool.py`` checks it
against these loops and against torchvision.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp
from .sizes import as_pair

_FLT_MAX = float(np.finfo(np.float32).max)  # torchvision's initial max, for every dtype


def round_half_away(v):
    """C's ``round``: halves go away from zero (NumPy's ``round`` goes to even).

    ``v - floor(v)`` is exact in floating point, so the test against 0.5 is too.
    """
    xp = get_xp(v)
    a = xp.abs(v)
    f = xp.floor(a)
    return xp.sign(v) * (f + (a - f >= 0.5))


def quantize_rois(rois, spatial_scale, dtype):
    """RoIPool's integer RoI: (x_start, y_start, roi_w, roi_h) per RoI, int64 (R, 4).

    x_start = round(x1 * s), roi_w = max(round(x2 * s) - x_start + 1, 1) (and y), with the
    products taken in ``dtype`` as the kernel does.
    """
    xp = get_xp(rois)
    q = round_half_away(rois[:, 1:5].astype(dtype) * np.dtype(dtype).type(spatial_scale))
    q = q.astype(np.int64)  # (R, 4): x_start, y_start, x_end, y_end
    size = xp.maximum(q[:, 2:4] - q[:, 0:2] + 1, 1)
    return xp.concatenate([q[:, 0:2], size], axis=1)


class RoIPoolCache(NamedTuple):
    """What ``roi_pool_backward`` needs."""

    x_shape: tuple  # (N, C, H, W)
    batch: Any  # (R,) int64 image of each RoI
    argmax: Any  # (R, C, PH, PW) int64 h*W + w of each bin's max in its plane, -1 if empty


def roi_pool_naive(x, rois, output_size, spatial_scale=1.0):
    """RoIPool as the kernel computes it, the scan written out (the teaching version).

    For each RoI and bin, scan h then w with a strict ``>`` from -FLT_MAX, vectorised
    over channels only. Returns (out, cache) like the fast version.
    """
    xp = get_xp(x)
    PH, PW = as_pair(output_size)
    N, C, H, W = x.shape
    R = rois.shape[0]
    out = xp.zeros((R, C, PH, PW), dtype=x.dtype)
    argmax = xp.full((R, C, PH, PW), -1, dtype=np.int64)
    q = quantize_rois(rois, spatial_scale, x.dtype).tolist()
    t = np.dtype(x.dtype).type
    for r in range(R):
        b = int(rois[r, 0])
        x_start, y_start, roi_w, roi_h = q[r]
        bin_h, bin_w = t(roi_h) / t(PH), t(roi_w) / t(PW)
        for ph in range(PH):
            h_lo = min(max(math.floor(t(ph) * bin_h) + y_start, 0), H)
            h_hi = min(max(math.ceil(t(ph + 1) * bin_h) + y_start, 0), H)
            for pw in range(PW):
                w_lo = min(max(math.floor(t(pw) * bin_w) + x_start, 0), W)
                w_hi = min(max(math.ceil(t(pw + 1) * bin_w) + x_start, 0), W)
                if h_hi <= h_lo or w_hi <= w_lo:
                    continue  # empty bin: 0, argmax -1
                best = xp.full(C, -_FLT_MAX, dtype=x.dtype)
                where = xp.full(C, -1, dtype=np.int64)
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        v = x[b, :, h, w]
                        better = v > best
                        best = xp.where(better, v, best)
                        where = xp.where(better, h * W + w, where)
                out[r, :, ph, pw] = best
                argmax[r, :, ph, pw] = where
    return out, RoIPoolCache(tuple(x.shape), rois[:, 0].astype(np.int64), argmax)


def roi_pool_naive_backward(dout, cache: RoIPoolCache):
    """Loop version of ``roi_pool_backward``: one ``+=`` per bin and channel."""
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    dx = xp.zeros(cache.x_shape, dtype=dout.dtype)
    R, _, PH, PW = dout.shape
    for r in range(R):
        b = int(cache.batch[r])
        for c in range(C):
            for ph in range(PH):
                for pw in range(PW):
                    k = int(cache.argmax[r, c, ph, pw])
                    if k >= 0:
                        dx[b, c, k // W, k % W] += dout[r, c, ph, pw]
    return dx


# ------------------------------------------------------------ the engine the model runs
from .roi_pool_fast import roi_pool_backward, roi_pool_forward  # noqa: E402, F401
