"""Keypoint inference: from 56 x 56 heatmap logits to keypoint coordinates (no gradient).

For each detected box and each keypoint type (tv ``roi_heads.heatmaps_to_keypoints``):

1. resize the heatmap *bicubically* (``F.interpolate(mode="bicubic",
   align_corners=False)``) to the box's size rounded up, ceil(h) x ceil(w) pixels, so the
   argmax is found at image resolution rather than on the coarse 56 x 56 grid;
2. take the argmax (x_int, y_int) of the resized map;
3. map the discrete pixel back to a continuous coordinate with Heckbert's convention
   c = d + 0.5 (a pixel's centre), scaled by w / ceil(w) and shifted by the box corner:

       x = (x_int + 0.5) * w / ceil(w) + x1,     y likewise;

4. the keypoint's score is the resized map's value (a logit) at the argmax.

The coordinates are in the frame of the boxes (the resized image, before the transform's
postprocess rescales them to the original image). Visibility is reported as 1 for every
predicted keypoint, as in torchvision.

Only forward code runs here, at inference; there is no backward pass.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import asnumpy, get_xp
from .keypoint_head import as_boxes
from .postprocess import softmax

CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _cubic_near(x, a):
    """Keys' cubic kernel for |x| <= 1: ((a + 2) x - (a + 3)) x^2 + 1."""
    return ((a + 2) * x - (a + 3)) * x * x + 1


def _cubic_far(x, a):
    """Keys' cubic kernel for 1 < |x| < 2: ((a x - 5a) x + 8a) x - 4a."""
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


def cubic_source_index(in_size: int, out_size: int, dtype, xp):
    """The four neighbours and weights of 1-D cubic interpolation, ``align_corners=False``.

    Output index d samples the input at s = (d + 0.5) * in/out - 0.5 (not clamped at 0,
    unlike the linear mode); with i = floor(s) and t = s - i the neighbours are
    i-1, i, i+1, i+2 (clamped to the axis: the border pixel repeats) with weights

        far(t + 1), near(t), near(1 - t), far(2 - t)          (a = -0.75)

    computed in ``dtype`` by the formulas of PyTorch's ``get_cubic_upsample_coefficients``
    (its compiled kernel fuses some of their multiply-adds, so a float32 weight can
    differ from PyTorch's in the last bit).

    Returns:
        idx: (4, out_size) int64 input indices; w: (4, out_size) weights in ``dtype``.
    """
    dtype = np.dtype(dtype)
    t = dtype.type
    scale = t(in_size) / t(out_size)
    dst = xp.arange(out_size, dtype=np.float64)
    real = (float(scale) * (dst + 0.5) - 0.5).astype(dtype)  # rounded once, as an FMA
    i = xp.minimum(xp.floor(real).astype(np.int64), in_size - 1)
    lam = xp.clip(real - i.astype(dtype), 0, 1)
    a = t(CUBIC_A)
    one = t(1)
    w = xp.stack([_cubic_far(lam + one, a), _cubic_near(lam, a),
                  _cubic_near(one - lam, a), _cubic_far((one - lam) + one, a)])
    idx = xp.stack([xp.clip(i + k, 0, in_size - 1) for k in (-1, 0, 1, 2)])
    return idx, w.astype(dtype, copy=False)


def resize_bicubic(x, size):
    """Bicubic resize of the last two axes, as ``F.interpolate(mode="bicubic",
    align_corners=False)`` with an output size.

    Separable: first along the columns, then along the rows (PyTorch's order), each a
    sum of four weighted gathers. The weights of the cubic kernel can be negative, so
    values may overshoot the input's range (as in PyTorch; nothing is clamped).

    Args:
        x: (..., H, W) float, e.g. K heatmaps (K, 56, 56).
        size: (h, w) output size.
    Returns:
        (..., h, w) in x's dtype. Agrees with PyTorch to float32 rounding (PyTorch's
        compiled kernel fuses some of the multiply-adds, NumPy rounds each one).
    """
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    H, W = x.shape[-2:]
    ci, cw = cubic_source_index(W, w, x.dtype, xp)  # (4, w)
    ri, rw = cubic_source_index(H, h, x.dtype, xp)  # (4, h)
    cols = x[..., ci[0]] * cw[0]  # (..., H, W) -> (..., H, w)
    for k in range(1, 4):
        cols = cols + x[..., ci[k]] * cw[k]
    out = cols[..., ri[0], :] * rw[0][:, None]  # (..., H, w) -> (..., h, w)
    for k in range(1, 4):
        out = out + cols[..., ri[k], :] * rw[k][:, None]
    return out


def resize_bicubic_naive(x, size):
    """Loop reference for ``resize_bicubic``: one output pixel at a time, with the
    neighbours and weights computed from Python scalars of x's dtype."""
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    H, W = x.shape[-2:]
    t = np.dtype(x.dtype).type
    a, one = t(CUBIC_A), t(1)

    def taps(d, n_in, n_out):
        real = t(float(t(n_in) / t(n_out)) * (d + 0.5) - 0.5)
        i = min(math.floor(real), n_in - 1)
        lam = min(max(real - t(i), t(0)), one)
        weights = (_cubic_far(lam + one, a), _cubic_near(lam, a),
                   _cubic_near(one - lam, a), _cubic_far((one - lam) + one, a))
        return [(min(max(i + k, 0), n_in - 1), wk) for k, wk in zip((-1, 0, 1, 2), weights)]

    out = xp.zeros(x.shape[:-2] + (h, w), dtype=x.dtype)
    for r in range(h):
        row_taps = taps(r, H, h)
        for c in range(w):
            col_taps = taps(c, W, w)
            acc = 0
            for ri, wr in row_taps:
                inner = 0
                for ci, wc in col_taps:
                    inner = inner + x[..., ri, ci] * wc
                acc = acc + inner * wr
            out[..., r, c] = acc
    return out


def heatmaps_to_keypoints(maps, rois):
    """Keypoint coordinates and scores from heatmap logits, as tv ``heatmaps_to_keypoints``.

    Box sides are clamped to at least 1 pixel; the heatmaps of RoI i are resized to
    (ceil(h_i), ceil(w_i)), so this loops over the RoIs (at most ``detections_per_img``),
    resizing the K maps of each at once. The output sizes are host integers: the boxes
    are read back once.

    Args:
        maps: (R, K, m, m) keypoint logits.
        rois: (R, 4) boxes ``(x1, y1, x2, y2)`` (or (R, 5) rois) of the detections.
    Returns:
        keypoints: (R, K, 3) ``x, y, 1`` in the boxes' frame, boxes' dtype.
        scores: (R, K) the resized logit at each argmax, maps' dtype.
    """
    xp = get_xp(maps, rois)
    boxes = as_boxes(rois)
    R, K = maps.shape[:2]
    x1, y1 = boxes[:, 0], boxes[:, 1]
    widths = xp.maximum(boxes[:, 2] - x1, 1)
    heights = xp.maximum(boxes[:, 3] - y1, 1)
    widths_ceil, heights_ceil = xp.ceil(widths), xp.ceil(heights)
    sizes = asnumpy(xp.stack([heights_ceil, widths_ceil], axis=1)).astype(np.int64)  # (R, 2)
    pos = xp.zeros((R, K), dtype=np.int64)
    scores = xp.zeros((R, K), dtype=maps.dtype)
    rows = xp.arange(K)
    for i in range(R):
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        roi_map = resize_bicubic(maps[i], (h, w)).reshape(K, h * w)  # (K, m, m) -> (K, h*w)
        best = roi_map.argmax(axis=1)  # (K,) first maximum, as torch.argmax
        pos[i] = best
        scores[i] = roi_map[rows, best]
    w_int = widths_ceil.astype(np.int64)[:, None]  # (R, 1)
    x_int, y_int = pos % w_int, pos // w_int
    # Heckbert: pixel d covers [d, d + 1), its centre d + 0.5; scaled from ceil(w) to w
    x = (x_int.astype(boxes.dtype) + 0.5) * (widths / widths_ceil)[:, None] + x1[:, None]
    y = (y_int.astype(boxes.dtype) + 0.5) * (heights / heights_ceil)[:, None] + y1[:, None]
    keypoints = xp.stack([x, y, xp.ones_like(x)], axis=2)  # (R, K, 3)
    return keypoints, scores


def keypointrcnn_inference(keypoint_logits, boxes_per_image):
    """Split the logits by image and decode each, as tv ``keypointrcnn_inference``.

    Args:
        keypoint_logits: (D, K, m, m) for the detections of all images, in order.
        boxes_per_image: N arrays (D_i, 4) of detected boxes, sum D_i = D.
    Returns:
        keypoints: N arrays (D_i, K, 3); scores: N arrays (D_i, K).
    """
    keypoints, scores, start = [], [], 0
    for boxes in boxes_per_image:
        n = boxes.shape[0]
        kp, sc = heatmaps_to_keypoints(keypoint_logits[start:start + n], boxes)
        keypoints.append(kp)
        scores.append(sc)
        start += n
    return keypoints, scores


CONFIDENCE_RADIUS = 2  # bins around the maximum: a 5 x 5 window of the 56 x 56 heatmap


def keypoint_confidence(maps, radius: int = CONFIDENCE_RADIUS):
    """How sure the keypoint branch is of each keypoint: (R, K) probabilities.

    The branch is trained with a softmax over the m*m bins of each heatmap
    (``keypointrcnn_loss``), so ``softmax(maps[r, k])`` is its distribution of where keypoint
    k of detection r lies. The mass of that distribution within ``radius`` bins of its
    maximum (a (2*radius + 1)^2 window, cut at the borders) is the branch's own probability
    that the keypoint is within about that distance of where it is placed; the peak bin
    alone would be small even for a sure keypoint, its mass spread over the neighbours.
    Not in torchvision (whose keypoint score is the logit at the argmax): it serves
    ``KeypointConfig.score == "box_x_keypoints"``.

    Args:
        maps: (R, K, m, m) keypoint logits.
        radius: half the window's side, in bins.
    Returns:
        (R, K) in [0, 1], maps' dtype.
    """
    xp = get_xp(maps)
    R, K, mh, mw = maps.shape
    flat = maps.reshape(R, K, mh * mw)
    prob = softmax(flat).reshape(R, K, mh, mw)  # over each map's m*m bins
    side = 2 * radius + 1
    padded = xp.zeros((R, K, mh + 2 * radius, mw + 2 * radius), dtype=maps.dtype)
    padded[:, :, radius:radius + mh, radius:radius + mw] = prob
    rows = sum(padded[:, :, i:i + mh] for i in range(side))  # (R, K, mh, mw + 2r)
    window = sum(rows[..., j:j + mw] for j in range(side))  # (R, K, mh, mw): window sums
    best = flat.argmax(axis=2)[:, :, None]  # (R, K, 1)
    return xp.take_along_axis(window.reshape(R, K, mh * mw), best, axis=2)[:, :, 0]


def keypoint_confidence_naive(maps, radius: int = CONFIDENCE_RADIUS):
    """Loop reference for ``keypoint_confidence``: one heatmap at a time, its softmax and
    the sum over the window around its first maximum."""
    xp = get_xp(maps)
    R, K, mh, mw = maps.shape
    out = xp.zeros((R, K), dtype=maps.dtype)
    for r in range(R):
        for k in range(K):
            m = maps[r, k]
            p = xp.exp(m - m.max())
            p = p / p.sum()
            y, x = divmod(int(m.argmax()), mw)
            window = p[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]
            out[r, k] = window.sum()
    return out
