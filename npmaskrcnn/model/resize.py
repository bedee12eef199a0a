"""Resizing images, masks, boxes and keypoints, exactly as PyTorch's ``F.interpolate``.

Used by the image transform (``transform.py``: images bilinear, masks nearest) and by
mask pasting at inference (``postprocess.py``). No gradient flows here: these act on
inputs and on final detections only.

Follows ``torch.nn.functional.interpolate`` (``mode="bilinear", align_corners=False``
and ``mode="nearest"``), including its float32 index arithmetic, so that sizes, pixel
values and mask pixels agree with torchvision's. The source indices and weights depend
only on the sizes: they are computed once per (size, size) on the host and kept on the
device (``functools.lru_cache``), so a resize is a few gathers and products.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..backend import get_xp
from ..layers.upsample import source_index


def _float_dtype(x):
    """The dtype interpolation is computed in: the input's if floating, else float32."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


@lru_cache(maxsize=512)
def linear_source_index(in_size: int, out_size: int, dtype, xp):
    """Neighbours and weights of 1-D linear interpolation, ``align_corners=False``.

    Output pixel ``d`` samples the input at ``s = max((d + 0.5) * in/out - 0.5, 0)``
    (pixel centres at half-integers, the sample clamped at the first centre); its
    neighbours are ``i0 = floor(s)`` and ``i1 = min(i0 + 1, in - 1)`` with weights
    ``1 - l`` and ``l = s - i0``. The arithmetic is done in ``dtype``, as PyTorch's
    ``area_pixel_compute_source_index`` does it in the input's precision.

    Returns:
        i0, i1: (out_size,) int64 input indices.
        l0, l1: (out_size,) weights of ``i0`` and ``i1`` in ``dtype`` (``l0 + l1 = 1``).
        Arrays of ``xp``, computed on the host once per argument set and kept: do not
        modify them.
    """
    dtype = np.dtype(dtype)
    scale = np.asarray(in_size, dtype=dtype) / np.asarray(out_size, dtype=dtype)
    dst = np.arange(out_size, dtype=np.float64)
    # scale * (d + 0.5) - 0.5 rounded once to dtype, as the fused multiply-add of
    # PyTorch's compiled kernel rounds it (exact in float64 for float32 scales)
    src = (scale.astype(np.float64) * (dst + 0.5) - 0.5).astype(dtype)
    src = np.maximum(src, 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    l1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    # at the last input pixel the right neighbour is the pixel itself (edge clamp)
    i1 = i0 + (i0 < in_size - 1).astype(np.int64)
    return tuple(xp.asarray(a) for a in (i0, i1, (1 - l1).astype(dtype), l1))


def resize_bilinear(x, size):
    """Bilinear resize of the last two axes, as ``F.interpolate(mode="bilinear")``.

    ``align_corners=False``: output pixel ``(i, j)`` samples the input at
    ``y = max((i + 0.5) * H/h - 0.5, 0)``, ``x = max((j + 0.5) * W/w - 0.5, 0)`` and
    mixes the four neighbours (clamped at the bottom/right edge)::

        out = (1-ly) * ((1-lx) * in[y0, x0] + lx * in[y0, x1])
              + ly   * ((1-lx) * in[y1, x0] + lx * in[y1, x1])

    Separable, so it is done as two gathers: first along the columns, then along the
    rows (the order in which PyTorch's CPU kernel multiplies the weights).

    Args:
        x: (..., H, W), e.g. an image (C, H, W) or a batch (N, C, H, W).
        size: (h, w) output size.
    Returns:
        (..., h, w) in the input's dtype if floating, else float32.
    """
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    H, W = x.shape[-2:]
    c0, c1, lc0, lc1 = linear_source_index(W, w, np.dtype(dtype), xp)
    r0, r1, lr0, lr1 = linear_source_index(H, h, np.dtype(dtype), xp)
    cols = x[..., c0] * lc0 + x[..., c1] * lc1  # (..., H, W) -> (..., H, w)
    return cols[..., r0, :] * lr0[:, None] + cols[..., r1, :] * lr1[:, None]  # (..., h, w)


def resize_bilinear_naive(x, size):
    """Loop reference for ``resize_bilinear``: one output pixel at a time (tests only)."""
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    H, W = x.shape[-2:]
    out = xp.zeros(x.shape[:-2] + (h, w), dtype=dtype)
    for i in range(h):
        y = max((i + 0.5) * (H / h) - 0.5, 0.0)
        y0 = min(int(y), H - 1)
        y1 = min(y0 + 1, H - 1)
        ly = min(y - y0, 1.0)
        for j in range(w):
            s = max((j + 0.5) * (W / w) - 0.5, 0.0)
            x0 = min(int(s), W - 1)
            x1 = min(x0 + 1, W - 1)
            lx = min(s - x0, 1.0)
            top = (1 - lx) * x[..., y0, x0] + lx * x[..., y0, x1]
            bottom = (1 - lx) * x[..., y1, x0] + lx * x[..., y1, x1]
            out[..., i, j] = (1 - ly) * top + ly * bottom
    return out


@lru_cache(maxsize=512)
def nearest_source_index(in_size: int, out_size: int, xp):
    """Input index of each output pixel for ``mode="nearest"``: ``min(floor(d*in/out), in-1)``.

    The rule of the FPN's upsampling (``layers.upsample.source_index``: the product in
    float32, as PyTorch's ``nearest_idx``), as an array of ``xp``, computed once per
    argument set and kept: do not modify it.
    """
    return xp.asarray(source_index(in_size, out_size))


def resize_nearest(x, size):
    """Nearest-neighbour resize of the last two axes, as ``F.interpolate(mode="nearest")``.

    Output pixel ``(i, j)`` copies input pixel ``(floor(i*H/h), floor(j*W/w))`` (the
    legacy "nearest" rule, not "nearest-exact"). A pure gather, so any dtype works and
    is kept: binary uint8 masks stay binary.

    Args:
        x: (..., H, W), e.g. masks (G, H, W).
        size: (h, w) output size.
    Returns:
        (..., h, w), same dtype as ``x``.
    """
    xp = get_xp(x)
    H, W = x.shape[-2:]
    rows = nearest_source_index(H, int(size[0]), xp)
    cols = nearest_source_index(W, int(size[1]), xp)
    return x[..., rows[:, None], cols[None, :]]  # (..., H, W) -> (..., h, w)


def _ratios(original_size, new_size, dtype):
    """(ratio_h, ratio_w) = new / original, divided in float32 as torchvision does, as
    scalars of ``dtype`` (host numbers: a product with them is one operation)."""
    rh = np.float32(new_size[0]) / np.float32(original_size[0])
    rw = np.float32(new_size[1]) / np.float32(original_size[1])
    return np.dtype(dtype).type(rh), np.dtype(dtype).type(rw)


def resize_boxes(boxes, original_size, new_size):
    """Scale ``(x1, y1, x2, y2)`` boxes from an image of ``original_size`` to ``new_size``.

    Args:
        boxes: (G, 4) boxes in pixels of the original image.
        original_size, new_size: (h, w).
    Returns:
        (G, 4): x coordinates times ``w_new / w``, y coordinates times ``h_new / h``.
    torchvision: ``models.detection.transform.resize_boxes``.
    """
    xp = get_xp(boxes)
    boxes = boxes.astype(_float_dtype(boxes), copy=False)
    rh, rw = _ratios(original_size, new_size, boxes.dtype)
    return boxes * xp.asarray(np.array([rw, rh, rw, rh], dtype=boxes.dtype))


def resize_keypoints(keypoints, original_size, new_size):
    """Scale keypoints ``(x, y, visibility)`` like ``resize_boxes``; visibility is kept.

    Args:
        keypoints: (G, 17, 3).
        original_size, new_size: (h, w).
    Returns:
        (G, 17, 3) with x and y scaled.
    torchvision: ``models.detection.transform.resize_keypoints``.
    """
    out = keypoints.astype(_float_dtype(keypoints), copy=True)
    rh, rw = _ratios(original_size, new_size, out.dtype)
    out[..., 0] *= rw
    out[..., 1] *= rh
    return out


def resized_image_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Size after scaling by ``min(min_size / short side, max_size / long side)``.

    Each side is ``floor(side * scale)``, in double precision: what ``F.interpolate``
    computes with ``scale_factor`` and ``recompute_scale_factor=True``.
    """
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(h * scale), int(w * scale)
