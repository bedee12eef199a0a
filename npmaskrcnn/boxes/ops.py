"""Elementary box operations: area, pairwise IoU, clipping, size filtering.

Box convention (used by every file in ``npmaskrcnn.boxes`` and the whole package): a box
is a row ``(x1, y1, x2, y2)`` in absolute pixel coordinates of the (resized, padded)
image, with ``x1 <= x2`` and ``y1 <= y2``; its width is ``x2 - x1`` and its height
``y2 - y1`` -- no "+1" as in the original Caffe/Detectron code. This is torchvision's
convention (``torchvision.ops.boxes``), so anchors, targets and detections compare
one-to-one with torchvision's.

No gradient flows through anything here: boxes are bookkeeping for matching,
sampling and suppression, never differentiated (torchvision detaches them too).
"""

from __future__ import annotations

import numpy as np

from ..backend import fused, get_xp, on_device


def box_area(boxes):
    """Area of each box, ``(x2 - x1) * (y2 - y1)``, as ``torchvision.ops.box_area``.

    Args:
        boxes: (..., 4), ``(x1, y1, x2, y2)``; usually (N, 4).
    Returns:
        (...) areas, in the dtype of ``boxes``.
    """
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a, b):
    """Pairwise intersection over union, as ``torchvision.ops.box_iou``.

    ``IoU(i, j) = |a_i ∩ b_j| / (|a_i| + |b_j| - |a_i ∩ b_j|)``, with the intersection
    ``max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))``. The float operations
    are done in torchvision's order, so float32 results agree with it bit for bit.

    One deliberate difference: when the union is 0 (two zero-area boxes)
    torchvision returns 0/0 = NaN; here the IoU is 0, so a degenerate box never
    matches or suppresses anything and no NaN reaches an argmax.

    Args:
        a: (N, 4) boxes.
        b: (M, 4) boxes, same array module and dtype.
    Returns:
        (N, M) IoU in [0, 1]; (0, M) or (N, 0) when an input is empty.
    """
    # (5, N, 1) against (5, 1, M) -> (N, M)
    return table_iou(box_table(a)[:, :, None], box_table(b)[:, None, :])


def box_iou_batched(a, b):
    """``box_iou`` of each image of a batch: (N, G, 4) against (N, M, 4) -> (N, G, M)."""
    # (5, N, G, 1) against (5, N, 1, M) -> (N, G, M)
    return table_iou(box_table(a)[..., :, None], box_table(b)[..., None, :])


def box_table(boxes):
    """The boxes as five contiguous rows ``x1, y1, x2, y2, area``.

    Row-major columns make the pairwise IoU fast (each operand is contiguous), and
    gathering some boxes, ``table[:, idx]``, is a single indexing call.

    Args:
        boxes: (..., 4) boxes, usually (N, 4); a batch (B, N, 4) gives (5, B, N).
    Returns:
        (5, ...) table, in the dtype of ``boxes``.
    """
    xp = get_xp(boxes)
    # (..., 4) -> (4, ...) and the areas (1, ...) -> (5, ...)
    return xp.concatenate([xp.moveaxis(boxes, -1, 0), box_area(boxes)[None]])


def iou_exceeds(iou, iou_threshold):
    """``iou > iou_threshold`` with the threshold taken as a double, as torchvision's NMS.

    torchvision's kernel compares a float IoU with a double threshold. Comparing a
    float32 array with a Python float would instead round the threshold to float32,
    which can round *up* (0.3 -> 0.30000001) and spare a box at IoU == float32(0.3).
    For a float IoU, ``iou > t`` (exact) is the same as ``iou > t_down`` with
    ``t_down`` the largest value of the IoU's dtype that is ``<= t``; that value is
    computed once here, on the host, so the comparison itself stays in the IoU's dtype.
    """
    t = float(iou_threshold)
    if iou.dtype.kind != "f":
        return iou > t
    t_down = iou.dtype.type(t)
    if float(t_down) > t:
        t_down = np.nextafter(t_down, iou.dtype.type(-np.inf))
    return iou > t_down


def table_iou(a, b):
    """IoU of two broadcastable (5, ...) box tables (see ``box_table``).

    Used by ``box_iou`` and by NMS, so both compute IoU with the same float
    operations in the same order as torchvision. On a CPU, in-place operations into
    three buffers keep allocations of the (broadcast) result shape few; on a GPU the
    same formula is one fused kernel (``_fused_iou``) instead of a dozen launches.
    (As one fused function on NumPy too it made NMS and ``box_iou`` 7-10% slower.)

    Args:
        a: (5, ...) table, e.g. (5, N, 1).
        b: (5, ...) table, e.g. (5, 1, M).
    Returns:
        the broadcast shape without the leading 5, e.g. (N, M).
    """
    xp = get_xp(a, b)
    if on_device(xp) and a.dtype.kind == "f":
        return _fused_iou(*a, *b, np.finfo(a.dtype).tiny)
    inter = xp.minimum(a[2], b[2])  # min(x2) - max(x1), clipped at 0
    tmp = xp.maximum(a[0], b[0])
    inter -= tmp
    xp.maximum(inter, 0, out=inter)
    h = xp.minimum(a[3], b[3])  # min(y2) - max(y1), clipped at 0
    xp.maximum(a[1], b[1], out=tmp)
    h -= tmp
    xp.maximum(h, 0, out=h)
    inter *= h
    union = xp.add(a[4], b[4], out=h)  # reuses h's buffer
    union -= inter
    # A zero union means two zero-area boxes and a zero intersection: raise the
    # denominator to the smallest normal float so that 0 / tiny = 0 instead of NaN.
    # A positive intersection implies a union >= the larger area, far above `tiny`.
    if union.dtype.kind == "f":
        xp.maximum(union, np.finfo(union.dtype).tiny, out=union)
        inter /= union
        return inter
    return inter / xp.maximum(union, 1)


@fused
def _fused_iou(xp, ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, b_area, tiny):
    """``table_iou``'s float formula in its order, as one kernel (see there for ``tiny``)."""
    inter = xp.maximum(xp.minimum(ax2, bx2) - xp.maximum(ax1, bx1), 0)
    inter = inter * xp.maximum(xp.minimum(ay2, by2) - xp.maximum(ay1, by1), 0)
    return inter / xp.maximum(a_area + b_area - inter, tiny)


def clip_boxes_to_image(boxes, size):
    """Clip boxes to lie inside an image, as ``torchvision.ops.clip_boxes_to_image``.

    ``x`` coordinates are clamped to ``[0, width]`` and ``y`` to ``[0, height]``.

    Args:
        boxes: (..., 4) boxes, usually (N, 4).
        size: ``(height, width)`` of the image.
    Returns:
        A new array of the shape and dtype of ``boxes``.
    """
    xp = get_xp(boxes)
    height, width = size
    out = boxes.copy()
    out[..., 0::2] = xp.clip(boxes[..., 0::2], 0, width)
    out[..., 1::2] = xp.clip(boxes[..., 1::2], 0, height)
    return out


def clip_boxes_to_images(boxes, image_sizes):
    """``clip_boxes_to_image`` for a batch: image i's boxes clipped to ``image_sizes[i]``.

    Args:
        boxes: (N, ..., 4) boxes, image i's in ``boxes[i]``.
        image_sizes: N pairs ``(height, width)``.
    Returns:
        A new array of the shape and dtype of ``boxes``.
    """
    xp = get_xp(boxes)
    n = len(image_sizes)
    wh = np.array([(w, h, w, h) for h, w in image_sizes], dtype=boxes.dtype)  # (N, 4) host
    upper = xp.asarray(wh).reshape((n,) + (1,) * (boxes.ndim - 2) + (4,))
    return xp.clip(boxes, 0, upper)


def remove_small_boxes(boxes, min_size):
    """Indices of the boxes at least ``min_size`` wide and high.

    Keeps box ``i`` when ``w_i >= min_size`` and ``h_i >= min_size`` (both), as
    ``torchvision.ops.remove_small_boxes``.

    Args:
        boxes: (N, 4) boxes.
        min_size: the smallest side length to keep.
    Returns:
        (K,) int64 indices into ``boxes``, ascending.
    """
    xp = get_xp(boxes)
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    return xp.flatnonzero((ws >= min_size) & (hs >= min_size)).astype(np.int64, copy=False)
