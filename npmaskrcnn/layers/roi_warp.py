"""RoIWarp (the "RoIWarp" rows of He et al. 2017, Table 2c; after MNC, Dai et al. 2016).

RoIWarp keeps RoIPool's first rounding and drops its second: the RoI is quantised to the
feature grid exactly as RoIPool does, but the bins of that quantised RoI are sampled
bilinearly, as RoIAlign does, instead of being rounded to whole pixels. The paper finds
it no better than RoIPool (26.9 -> 27.2 mask AP) while RoIAlign gains 3 points: the RoI
quantisation alone already breaks the pixel alignment.

Definition used here. For a RoI ``[b, x1, y1, x2, y2]`` and scale s, RoIPool's quantised
RoI covers the pixels x_start..x_end (and y), with

    x_start = round(x1 * s),  x_end = round(x2 * s)   (C's round),
    roi_w   = max(x_end - x_start + 1, 1),

that is the continuous extent [x_start - 1/2, x_start + roi_w - 1/2] when pixel i is
centred at i. RoIWarp splits that extent into PH x PW equal bins (bin_w = roi_w / PW,
no floor/ceil), reads a sampling_ratio x sampling_ratio grid of bilinear samples in each
bin, and aggregates them by max (Table 2c row 2, the default) or average (row 3). This is
exactly RoIAlign, aligned=True, spatial_scale 1, applied to the box

    [b, x_start, y_start, x_start + roi_w, y_start + roi_h]

so the forward and backward reuse ``roi_align`` on those boxes. A check of the definition:
when bins are whole pixels and the samples fall on pixel centres (roi_w = k * PW,
sampling_ratio = k) RoIWarp with max equals RoIPool. No gradient flows into ``rois``.
"""

from __future__ import annotations

from ..backend import get_xp
from .roi_align import (
    roi_align_backward,
    roi_align_forward,
    roi_align_naive,
    roi_align_naive_backward,
)
from .roi_pool import quantize_rois


def warp_boxes(rois, spatial_scale, dtype):
    """RoIPool's quantised RoIs as boxes in feature pixels, for RoIAlign (aligned=True).

    Args:
        rois: (R, 5) ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        spatial_scale: feature size / image size.
        dtype: the dtype of the feature map (the products are rounded in it).
    Returns:
        (R, 5) ``[b, x_start, y_start, x_start + roi_w, y_start + roi_h]`` of ``dtype``.
    """
    xp = get_xp(rois)
    q = quantize_rois(rois, spatial_scale, dtype).astype(dtype)  # x_start, y_start, w, h
    return xp.concatenate([rois[:, :1].astype(dtype), q[:, :2], q[:, :2] + q[:, 2:]], axis=1)


def roi_warp_naive(x, rois, output_size, spatial_scale=1.0, sampling_ratio=2,
                   aggregation="max"):
    """Loop version: ``roi_align_naive`` on the quantised boxes. Returns (out, cache)."""
    boxes = warp_boxes(rois, spatial_scale, x.dtype)
    return roi_align_naive(x, boxes, output_size, 1.0, sampling_ratio, True, aggregation)


def roi_warp_naive_backward(dout, cache):
    """Loop version of ``roi_warp_backward``: ``roi_align_naive_backward``."""
    return roi_align_naive_backward(dout, cache)


def roi_warp_forward(x, rois, output_size, spatial_scale=1.0, sampling_ratio=2,
                     aggregation="max"):
    """RoIWarp: RoIAlign's bilinear sampling on RoIPool's quantised RoI (see module doc).

    Args:
        x: (N, C, H, W) feature maps.
        rois: (R, 5) rows ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        output_size: PH or (PH, PW).
        spatial_scale: feature size / image size.
        sampling_ratio: samples per bin along each axis (<= 0: ceil(roi_w / PW)).
        aggregation: "max" (Table 2c row 2) or "avg" (row 3).
    Returns:
        out (R, C, PH, PW) and the cache (a RoIAlign cache).
    """
    boxes = warp_boxes(rois, spatial_scale, x.dtype)
    return roi_align_forward(x, boxes, output_size, 1.0, sampling_ratio, True, aggregation)


def roi_warp_backward(dout, cache):
    """Gradient of ``roi_warp_forward`` with respect to x: RoIAlign's backward.

    Args:
        dout: (R, C, PH, PW).
    Returns:
        dx (N, C, H, W).
    """
    return roi_align_backward(dout, cache)
