"""Non-maximum suppression: keep the best box of each cluster of overlapping boxes.

Greedy NMS (the textbook loop, ``nms_naive``): sort the boxes by score; take the
best remaining box, keep it, and discard every remaining box whose IoU with it is
greater than the threshold; repeat until no box remains. A box whose IoU with a
kept box *equals* the threshold survives (``>``, not ``>=``), as in torchvision.

``nms`` computes exactly the same set in blocks of ``_BLOCK`` boxes (score order):

1. Inside a block, the greedy rule ``keep[j] = not any(keep[i] and IoU(i, j) > t
   for i < j)`` is solved as a fixed point: start from "keep everything" and apply
   the rule to all boxes at once until nothing changes. Position ``j`` only depends
   on earlier positions, so the rule has one solution (the greedy one), and after
   ``k`` rounds at least the first ``k`` positions are final; overlaps are short
   chains in practice, so a few vectorised rounds suffice. If they do not settle
   within ``_MAX_ROUNDS``, the block is finished by the sequential loop.
2. The block's kept boxes then suppress all later boxes at once, and the suppressed
   boxes are dropped before the next block, so clustered inputs shrink quickly.
3. Both steps compute IoUs only for pairs that overlap in x at all (``IoU > t >= 0``
   needs an overlap), found by sorting boxes by x centre and testing chunks of them
   against the x-range of the others (``_exceeding_pairs``); most pairs of a large
   image never meet.

IoUs are computed by ``ops.table_iou``, the function behind ``box_iou``, so all
three functions here agree bit for bit with each other and with torchvision.
On CuPy the same code runs on the device; the few host round-trips (loop sizes and
a convergence flag per round) are marked where they happen.

``batched_nms`` runs NMS independently per category in the same pass: boxes are
ordered by (category, score), which makes each category a contiguous run, and a
box can only suppress boxes of its own category.

No gradient flows through NMS; it selects indices only.
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, get_xp
from .ops import box_iou, box_table, table_iou

_BLOCK = 256  # boxes resolved together; a (256, 256) bool matrix per fixed-point round
_ROW_CHUNK = 32  # boxes per x-sorted chunk in the pruned IoUs, see _exceeding_pairs
_MAX_ROUNDS = 16  # fixed-point rounds before a block falls back to the sequential loop


def nms_naive(boxes, scores, iou_threshold):
    """Greedy NMS, one kept box at a time (the reference for ``nms``).

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)`` (convention of ``boxes/ops.py``).
        scores: (N,) scores.
        iou_threshold: boxes with IoU ``>`` this with a kept box are discarded.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    xp = get_xp(boxes, scores)
    order = xp.argsort(-scores, kind="stable")  # best first; ties by index
    keep = []
    while order.size > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        iou = box_iou(boxes[best][None, :], boxes[rest])[0]  # (1, R) -> (R,)
        order = rest[~_exceeds(iou, iou_threshold)]
    if not keep:
        return xp.zeros((0,), dtype=np.int64)
    return xp.stack(keep).astype(np.int64)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Same result as ``nms_naive`` and as torchvision's CPU kernel, ties included:
    boxes are visited by decreasing score, equal scores in index order (a stable
    sort, like the kernel's), and a box is suppressed when its IoU with a kept box
    is strictly greater than ``iou_threshold``. IoU is computed in the boxes' dtype
    with torchvision's operation order and compared with the threshold as a double.
    Degenerate pairs (two zero-area boxes) have IoU 0 and never suppress each other.

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)``.
        scores: (N,) scores.
        iou_threshold: discard boxes whose IoU with a kept box is ``>`` this.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    xp = get_xp(boxes, scores)
    order = xp.argsort(-scores, kind="stable")  # (N,) best first; ties by index
    return order[_greedy_sorted(boxes[order], None, iou_threshold)]


def batched_nms(boxes, scores, idxs, iou_threshold, top_k=None):
    """NMS within each category separately, as ``torchvision.ops.batched_nms``.

    Equals running ``nms`` on each category's boxes and merging the kept indices by
    decreasing score (ties in index order). torchvision gets the same effect by
    offsetting each category's boxes so that categories never overlap; that trick
    rounds coordinates, so here categories are kept apart explicitly instead.

    ``top_k`` returns ``batched_nms(...)[:top_k]`` without deciding the fate of every
    box: whether a box is kept depends only on the boxes of its category visited
    before it, so NMS of the ``m`` best-scored boxes (ties in index order) decides
    those ``m`` boxes exactly as NMS of all of them does. ``m`` starts at 4 * top_k
    and grows 4x until ``top_k`` boxes are kept or every box is in. Detection keeps
    the best 100 of ~90 000 class-specific boxes, most of which never need an IoU.

    Args:
        boxes: (N, 4) boxes ``(x1, y1, x2, y2)``.
        scores: (N,) scores.
        idxs: (N,) integer category of each box (class, or FPN level for the RPN).
        iou_threshold: discard boxes whose IoU with a kept box of the same category is
            ``>`` this.
        top_k: keep at most this many (the best); None keeps all.
    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    if top_k is None:
        return _batched_nms_all(boxes, scores, idxs, iou_threshold)
    xp = get_xp(boxes, scores, idxs)
    order = xp.argsort(-scores, kind="stable")  # visiting order of all categories at once
    m = max(4 * int(top_k), _BLOCK)
    while True:
        best = order[:m]  # the m best; ties by index, so positions in best keep index order
        kept = best[_batched_nms_all(boxes[best], scores[best], idxs[best], iou_threshold)]
        if kept.size >= top_k or m >= order.size:
            return kept[:top_k]
        m *= 4


def _batched_nms_all(boxes, scores, idxs, iou_threshold):
    """``batched_nms`` deciding every box: one greedy pass in (category, score) order."""
    xp = get_xp(boxes, scores, idxs)
    by_score = xp.argsort(-scores, kind="stable")
    # stable sort by category keeps score order inside each category: (N,) order
    order = by_score[xp.argsort(idxs[by_score], kind="stable")]
    kept = order[_greedy_sorted(boxes[order], idxs[order], iou_threshold)]
    kept = xp.sort(kept)  # back to index order so that equal scores stay index-ordered
    return kept[xp.argsort(-scores[kept], kind="stable")]


def _exceeds(iou, iou_threshold):
    """``iou > iou_threshold`` with the threshold taken as a double, as torchvision.

    torchvision's kernel compares a float IoU with a double threshold. Comparing a
    float32 array with a Python float would instead round the threshold to float32,
    which can round *up* (0.3 -> 0.30000001) and spare a box at IoU == float32(0.3).
    For a float IoU, ``iou > t`` (exact) is the same as ``iou > t_down`` with
    ``t_down`` the largest value of the IoU's dtype that is ``<= t``; that value is
    computed once here so the comparison itself stays in the IoU's dtype.
    """
    t = float(iou_threshold)
    if iou.dtype.kind != "f":
        return iou > t
    t_down = iou.dtype.type(t)
    if float(t_down) > t:
        t_down = np.nextafter(t_down, iou.dtype.type(-np.inf))  # one scalar, on the host
    return iou > t_down


# The fast path works on a (5, N + 1) table (``box_table``: rows x1, y1, x2, y2, area):
# one column per box in visiting order, then a "sentinel" column at position N
# (x1 = y1 = +inf, x2 = y2 = -inf, area 0) that pads ragged index arrays: its overlap
# with any box is clipped to 0, so its IoU with anything is 0.
_X1, _X2 = 0, 2  # table rows used for pruning


def _greedy_sorted(boxes, groups, iou_threshold):
    """Greedy NMS of boxes already in visiting order; returns kept positions.

    Args:
        boxes: (N, 4), best first (within each group, when grouped).
        groups: (N,) int category, non-decreasing, or None for a single category.
        iou_threshold: suppression threshold.
    Returns:
        (K,) int64 ascending positions into ``boxes`` of the kept ones.
    """
    xp = get_xp(boxes)
    n = boxes.shape[0]
    if n == 0:
        return xp.zeros((0,), dtype=np.int64)
    float_boxes = boxes if boxes.dtype.kind == "f" else boxes.astype(np.float64)
    sentinel = xp.asarray([[np.inf], [np.inf], [-np.inf], [-np.inf], [0.0]],
                          dtype=float_boxes.dtype)
    table = xp.concatenate([box_table(float_boxes), sentinel], axis=1)  # (5, N + 1)
    if groups is None:
        group_start = xp.zeros((n,), dtype=np.int64)
        group_end = xp.full((n,), n, dtype=np.int64)
    else:
        # [start, end) of the contiguous run of each position's category
        group_start = xp.searchsorted(groups, groups, side="left")
        group_end = xp.searchsorted(groups, groups, side="right")

    alive = xp.arange(n, dtype=np.int64)  # ascending positions not processed nor suppressed
    kept_blocks = []
    while alive.size > 0:
        block, rest = alive[:_BLOCK], alive[_BLOCK:]
        # (b, b): earlier box i would suppress later box j (of the same category)
        i, j = _exceeding_pairs(table, block, block, iou_threshold)
        earlier = i < j  # the block is ascending, so local order is visiting order
        if groups is not None:
            earlier &= groups[block[i]] == groups[block[j]]
        suppresses = xp.zeros((block.size, block.size), dtype=bool)
        suppresses[i[earlier], j[earlier]] = True
        kept = block[_resolve_block(suppresses)]
        kept_blocks.append(kept)

        # Later boxes can only be suppressed by the block's kept boxes of the category
        # of the block's last box: every earlier category ended inside the block.
        # Host round-trip: two scalars decide the slice sizes.
        last = block[-1]
        start, end = int(group_start[last]), int(group_end[last])
        n_same = int(xp.searchsorted(rest, end))
        same, rest_other = rest[:n_same], rest[n_same:]
        suppressors = kept[kept >= start]
        if same.size > 0 and suppressors.size > 0:
            _, hit = _exceeding_pairs(table, suppressors, same, iou_threshold)
            suppressed = xp.zeros((same.size,), dtype=bool)
            suppressed[hit] = True
            same = same[~suppressed]
        alive = xp.concatenate([same, rest_other])
    return xp.concatenate(kept_blocks)


def _exceeding_pairs(table, rows, cols, iou_threshold):
    """All pairs ``(i, j)`` with IoU(rows[i], cols[j]) > threshold.

    Most pairs do not even overlap, so the IoUs are computed only where they can
    matter: the rows are ordered by x centre and cut into chunks of ``_ROW_CHUNK``;
    each chunk spans a narrow x-range, and is paired only with the columns that
    overlap that range in x, its "candidates". All chunks are done in one
    (chunks, _ROW_CHUNK, most candidates) computation, shorter candidate lists padded
    with the sentinel. The pruning is exact for ``iou_threshold >= 0``, since
    IoU > t >= 0 needs a positive x overlap; a negative threshold gets the dense matrix.

    Args:
        table: (5, N + 1) box table with the sentinel at position N.
        rows: (R,) box positions, R >= 1.
        cols: (C,) box positions, C >= 1.
        iou_threshold: suppression threshold.
    Returns:
        (i, j): two (E,) int arrays indexing ``rows`` and ``cols``.
    """
    xp = get_xp(table)
    if iou_threshold < 0:
        return xp.nonzero(_iou_exceeds(table[:, rows, None], table[:, None, cols],
                                       iou_threshold))
    sentinel = table.shape[1] - 1
    num_chunks = -(-rows.size // _ROW_CHUNK)
    # (R,) -> (chunks, r): local row indices by x centre, padded with -1 (the sentinel)
    by_x = xp.full((num_chunks * _ROW_CHUNK,), -1, dtype=np.int64)
    by_x[:rows.size] = xp.argsort(table[_X1, rows] + table[_X2, rows])
    by_x = by_x.reshape(num_chunks, _ROW_CHUNK)
    chunk_boxes = table[:, xp.where(by_x >= 0, rows[by_x], sentinel)]  # (5, chunks, r)
    lo = chunk_boxes[_X1].min(axis=1)  # (chunks,) x-range of each chunk
    hi = chunk_boxes[_X2].max(axis=1)
    # (chunks, C): the columns that overlap each chunk's x-range
    is_candidate = ((table[_X1, cols][None, :] < hi[:, None])
                    & (table[_X2, cols][None, :] > lo[:, None]))
    # ragged candidate lists -> (chunks, k) local column indices, padded with -1
    which_chunk, which_col = xp.nonzero(is_candidate)
    slot = (xp.cumsum(is_candidate, axis=1) - 1)[which_chunk, which_col]
    k = int(is_candidate.sum(axis=1).max())  # host round-trip: the padded width
    candidates = xp.full((num_chunks, k), -1, dtype=np.int64)
    candidates[which_chunk, slot] = which_col
    candidate_boxes = table[:, xp.where(candidates >= 0, cols[candidates], sentinel)]
    # (5, chunks, r, 1) against (5, chunks, 1, k) -> (chunks, r, k)
    c, a, b = xp.nonzero(_iou_exceeds(chunk_boxes[:, :, :, None],
                                      candidate_boxes[:, :, None, :], iou_threshold))
    return by_x[c, a], candidates[c, b]


def _iou_exceeds(a, b, iou_threshold):
    """Bool ``IoU(a, b) > threshold`` for two broadcastable (5, ...) box tables."""
    return _exceeds(table_iou(a, b), iou_threshold)


def _resolve_block(suppresses):
    """Greedy keep mask of one block, given who would suppress whom.

    Solves ``keep[j] = not any_i (keep[i] and suppresses[i, j])`` (``suppresses`` is
    strictly upper triangular: only earlier boxes suppress later ones) by fixed-point
    rounds from ``keep = all True``; see the module docstring for why this is the
    greedy answer.

    Args:
        suppresses: (b, b) bool, strictly upper triangular.
    Returns:
        (b,) bool keep mask.
    """
    xp = get_xp(suppresses)
    keep = xp.ones((suppresses.shape[0],), dtype=bool)
    for _ in range(_MAX_ROUNDS):
        new_keep = ~xp.any(suppresses[keep], axis=0)  # suppressed by a kept earlier box?
        # host round-trip: one bool per round to test convergence
        if bool(xp.all(new_keep == keep)):
            return keep
        keep = new_keep
    return _resolve_block_sequential(suppresses)


def _resolve_block_sequential(suppresses):
    """The greedy loop over one block's suppression matrix (the fallback).

    Host round-trip: the loop is sequential, so the (b, b) matrix is copied to the
    host once and the mask copied back, instead of one device sync per box.
    """
    xp = get_xp(suppresses)
    host = asnumpy(suppresses)
    removed = get_xp(host).zeros((host.shape[0],), dtype=bool)  # get_xp(host) is NumPy
    for i in range(host.shape[0]):
        if not removed[i]:
            removed |= host[i]
    return xp.asarray(~removed)
