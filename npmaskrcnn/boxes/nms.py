"""Non-maximum suppression: keep the best box of each cluster of overlapping boxes.

A detector proposes many boxes around every object, each with a score. Greedy NMS keeps
one per object (Faster R-CNN 3.1.3 for proposals, IoU 0.7; Mask R-CNN 3.1 for the final
detections, per class, IoU 0.5)::

    sort the boxes by score, best first
    while boxes remain:
        take the best remaining box and keep it
        discard every remaining box whose IoU with it is greater than the threshold

A box whose IoU with a kept box *equals* the threshold survives (``>``, not ``>=``), as
in torchvision. ``nms_naive`` below is this loop, line by line; ``batched_nms_naive``
runs it separately per category (per class for detections, per FPN level for the RPN's
proposals), because boxes of different categories never suppress each other.

No gradient flows through NMS: it selects indices only.

The model runs the engine of ``nms_fast.py`` (imported at the bottom of this file): the
same kept boxes, in the same order, computed without visiting boxes one at a time --
blocks of boxes resolved together on a CPU, one dense IoU matrix on a GPU. The tests
(``tests/boxes/test_nms.py``) check that it agrees with these loops and with torchvision.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from .ops import box_iou, iou_exceeds


def nms_naive(boxes, scores, iou_threshold):
    """Greedy NMS, one kept box at a time: the loop above.

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)`` (convention of ``boxes/ops.py``).
        scores: (N,) scores.
        iou_threshold: boxes with IoU ``>`` this with a kept box are discarded.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score (equal scores: lower
        index first).
    """
    xp = get_xp(boxes, scores)
    order = xp.argsort(-scores, kind="stable")  # best first; ties by index
    keep = []
    while order.size > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        iou = box_iou(boxes[best][None, :], boxes[rest])[0]  # (1, R) -> (R,)
        order = rest[~iou_exceeds(iou, iou_threshold)]
    if not keep:
        return xp.zeros((0,), dtype=np.int64)
    return xp.stack(keep).astype(np.int64)


def batched_nms_naive(boxes, scores, idxs, iou_threshold):
    """``nms_naive`` within each category, the kept boxes merged by decreasing score.

    Args:
        boxes: (N, 4); scores: (N,); idxs: (N,) integer category of each box.
        iou_threshold: as ``nms_naive``.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score (ties: lower index).
    """
    xp = get_xp(boxes, scores, idxs)
    kept = []
    for category in sorted(set(idxs.tolist())):
        members = xp.flatnonzero(idxs == category)
        kept.append(members[nms_naive(boxes[members], scores[members], iou_threshold)])
    if not kept:
        return xp.zeros((0,), dtype=np.int64)
    kept = xp.sort(xp.concatenate(kept))  # index order, so that score ties stay in it
    return kept[xp.argsort(-scores[kept], kind="stable")].astype(np.int64)


# ------------------------------------------------------------ the engine the model runs
from .nms_fast import batched_nms, nms, nms_padded  # noqa: E402, F401
