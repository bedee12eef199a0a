"""The NMS engine the model runs: greedy NMS's answer without a box-by-box loop.

``nms.py`` teaches the greedy loop; this file computes exactly its answer, faster. Both
engines solve the greedy rule for boxes in visiting order (best score first)

    keep[j] = not any(keep[i] and IoU(i, j) > t  for i < j)

as a **fixed point**: start from "keep everything" and apply the rule to all boxes at
once until nothing changes. Position ``j`` depends only on earlier positions, so the rule
has one solution (the greedy one), and after ``k`` rounds at least the first ``k``
positions are final; overlaps form short chains in practice, so a few rounds suffice.

The two engines differ in how much of the IoU matrix they compute, the one backend
choice of this file (``on_device``):

- **CPU** (``_greedy_blocked``): blocks of ``_BLOCK`` boxes. A block is resolved by
  fixed-point rounds on its (256, 256) IoUs (a sequential loop if the rounds do not
  settle within ``_MAX_ROUNDS``); its kept boxes then suppress all later boxes at once,
  and suppressed boxes are dropped before the next block. IoUs are computed only for
  pairs that overlap in x at all (``_exceeding_pairs``). Little memory, little work.
- **GPU** (``_greedy_dense``): the whole (m, m) "i suppresses j" matrix in one batched
  computation, then fixed-point rounds over it, ``_ROUNDS_PER_SYNC`` rounds between two
  convergence checks (a check reads one bool back: a host sync). A few large kernels and
  one or two syncs instead of thousands of small launches; the m^2 memory is what a GPU
  has plenty of. ``nms_padded`` runs many independent problems (images x FPN levels) in
  the same launches.

IoUs come from ``ops.table_iou`` (behind ``box_iou``), compared by ``ops.iou_exceeds``,
so every function here agrees bit for bit with ``nms_naive`` and with torchvision.
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, get_xp, on_device
from .ops import box_table, iou_exceeds, table_iou

_BLOCK = 256  # CPU: boxes resolved together; a (256, 256) bool matrix per fixed-point round
_ROW_CHUNK = 32  # CPU: boxes per x-sorted chunk in the pruned IoUs, see _exceeding_pairs
_MAX_ROUNDS = 16  # CPU: fixed-point rounds before a block falls back to the sequential loop
_ROUNDS_PER_SYNC = 4  # GPU: fixed-point rounds between two convergence checks


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
    decreasing score (ties in index order), i.e. ``batched_nms_naive``. torchvision gets
    the same effect by offsetting each category's boxes so that categories never
    overlap; that trick rounds coordinates, so here categories are kept apart explicitly.

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
        # host round-trip: the number kept decides whether more boxes are needed
        if m >= order.size or kept.size >= top_k:
            return kept[:top_k]
        m *= 4


def nms_padded(boxes, scores, valid, iou_threshold):
    """Many independent NMS problems at once, padded to one size (no gradient).

    Problem ``b`` is the boxes ``boxes[b][valid[b]]``; the RPN makes one per image and
    FPN level. On a GPU all problems go through the same few launches; on a CPU each is
    solved by ``nms`` on its valid boxes.

    Args:
        boxes: (B, m, 4) boxes of each problem (padding rows are ignored).
        scores: (B, m) scores.
        valid: (B, m) bool, which rows are boxes.
        iou_threshold: as ``nms``.
    Returns:
        keep: (B, m) bool, True for the kept boxes of each problem (never for padding).
    """
    xp = get_xp(boxes, scores, valid)
    B, m = scores.shape
    if not on_device(xp):
        keep = np.zeros((B, m), dtype=bool)
        for b in range(B):
            members = np.flatnonzero(valid[b])
            keep[b, members[nms(boxes[b, members], scores[b, members], iou_threshold)]] = True
        return keep
    # visiting order per problem: valid boxes by decreasing score (ties by index), then
    # the padding; the sort key puts padding last whatever its score
    key = xp.where(valid, -scores, xp.inf)
    order = xp.argsort(key, axis=1, kind="stable")  # (B, m)
    rows = xp.arange(B)[:, None]
    keep_sorted = _greedy_dense(boxes[rows, order], valid[rows, order], None, iou_threshold)
    keep = xp.zeros((B, m), dtype=bool)
    keep[rows, order] = keep_sorted  # back to each problem's own order
    return keep


def _batched_nms_all(boxes, scores, idxs, iou_threshold):
    """``batched_nms`` deciding every box: one greedy pass in (category, score) order."""
    xp = get_xp(boxes, scores, idxs)
    by_score = xp.argsort(-scores, kind="stable")
    # stable sort by category keeps score order inside each category: (N,) order
    order = by_score[xp.argsort(idxs[by_score], kind="stable")]
    kept = order[_greedy_sorted(boxes[order], idxs[order], iou_threshold)]
    kept = xp.sort(kept)  # back to index order so that equal scores stay index-ordered
    return kept[xp.argsort(-scores[kept], kind="stable")]


def _greedy_sorted(boxes, groups, iou_threshold):
    """Greedy NMS of boxes already in visiting order; returns the kept positions.

    Args:
        boxes: (N, 4), best first (within each group, when grouped).
        groups: (N,) int category, non-decreasing, or None for a single category.
        iou_threshold: suppression threshold.
    Returns:
        (K,) int64 ascending positions into ``boxes`` of the kept ones.
    """
    xp = get_xp(boxes)
    if boxes.shape[0] == 0:
        return xp.zeros((0,), dtype=np.int64)
    if not on_device(xp):
        return _greedy_blocked(boxes, groups, iou_threshold)
    valid = xp.ones((1, boxes.shape[0]), dtype=bool)
    keep = _greedy_dense(boxes[None], valid, None if groups is None else groups[None],
                         iou_threshold)
    return xp.flatnonzero(keep[0])  # host round-trip: the number kept


# ----------------------------------------------------------------------------- GPU engine


def _greedy_dense(boxes, valid, groups, iou_threshold):
    """Greedy keep masks of B problems in visiting order, from their whole IoU matrices.

    Args:
        boxes: (B, m, 4), each problem's boxes best first (padding anywhere after).
        valid: (B, m) bool; invalid rows are never kept and suppress nothing.
        groups: (B, m) int categories (non-decreasing) or None: boxes of different
            categories never suppress each other.
    Returns:
        (B, m) bool keep masks.
    """
    xp = get_xp(boxes)
    B, m = valid.shape
    floats = boxes if boxes.dtype.kind == "f" else boxes.astype(np.float64)
    table = box_table(floats)  # (5, B, m)
    # (5, B, m, 1) against (5, B, 1, m) -> (B, m, m): box i would suppress box j
    suppresses = iou_exceeds(table_iou(table[..., :, None], table[..., None, :]),
                             iou_threshold)
    earlier = xp.arange(m)[:, None] < xp.arange(m)[None, :]  # only i < j suppresses
    suppresses &= earlier & valid[:, :, None]
    if groups is not None:
        suppresses &= groups[:, :, None] == groups[:, None, :]
    weights = suppresses.astype(np.float32)  # so that a round is one batched product

    def round_(keep):  # keep[j] = valid[j] and no kept i suppresses j
        # (B, 1, m) @ (B, m, m) -> (B, 1, m): how many kept boxes suppress each box
        hit = xp.matmul(keep.astype(np.float32)[:, None, :], weights)[:, 0]
        return valid & (hit == 0)

    keep = valid
    while True:
        for _ in range(_ROUNDS_PER_SYNC - 1):
            keep = round_(keep)
        new_keep = round_(keep)
        # host round-trip: one bool per _ROUNDS_PER_SYNC rounds decides convergence
        if bool(xp.all(new_keep == keep)):
            return keep
        keep = new_keep


# ----------------------------------------------------------------------------- CPU engine

# The blocked engine works on a (5, N + 1) table (``box_table``: rows x1, y1, x2, y2,
# area): one column per box in visiting order, then a "sentinel" column at position N
# (x1 = y1 = +inf, x2 = y2 = -inf, area 0) that pads ragged index arrays: its overlap
# with any box is clipped to 0, so its IoU with anything is 0.
_X1, _X2 = 0, 2  # table rows used for pruning


def _greedy_blocked(boxes, groups, iou_threshold):
    """``_greedy_sorted`` block by block (see the module docstring)."""
    xp = get_xp(boxes)
    n = boxes.shape[0]
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
    k = int(is_candidate.sum(axis=1).max())  # the padded width
    candidates = xp.full((num_chunks, k), -1, dtype=np.int64)
    candidates[which_chunk, slot] = which_col
    candidate_boxes = table[:, xp.where(candidates >= 0, cols[candidates], sentinel)]
    # (5, chunks, r, 1) against (5, chunks, 1, k) -> (chunks, r, k)
    c, a, b = xp.nonzero(_iou_exceeds(chunk_boxes[:, :, :, None],
                                      candidate_boxes[:, :, None, :], iou_threshold))
    return by_x[c, a], candidates[c, b]


def _iou_exceeds(a, b, iou_threshold):
    """Bool ``IoU(a, b) > threshold`` for two broadcastable (5, ...) box tables."""
    return iou_exceeds(table_iou(a, b), iou_threshold)


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
        if bool(xp.all(new_keep == keep)):
            return keep
        keep = new_keep
    return _resolve_block_sequential(suppresses)


def _resolve_block_sequential(suppresses):
    """The greedy loop over one block's suppression matrix (the fallback)."""
    removed = np.zeros((suppresses.shape[0],), dtype=bool)
    host = asnumpy(suppresses)
    for i in range(host.shape[0]):
        if not removed[i]:
            removed |= host[i]
    return get_xp(suppresses).asarray(~removed)
