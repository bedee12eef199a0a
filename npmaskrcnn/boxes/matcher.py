"""The matcher: assign each prediction (anchor or proposal) to a ground-truth box.

Given the IoU of every (ground truth, prediction) pair, each prediction takes the
ground truth it overlaps most, and the size of that overlap decides its fate:

    best IoU >= high_threshold              -> matched: the index of that gt box
    low_threshold <= best IoU < high        -> BETWEEN_THRESHOLDS (-2): ignored
    best IoU < low_threshold                -> BELOW_LOW_THRESHOLD (-1): background

The RPN uses 0.7 / 0.3 and also restores "low-quality" matches (Faster R-CNN
section 3.1.2): every gt box claims the predictions it overlaps most, ties
included, even below 0.7, so that no object is left without an anchor. The box head
uses 0.5 / 0.5 without them.

No gradient flows through matching: it only decides which targets the losses see.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class Matcher:
    """Match predictions to ground truth, as torchvision's ``_utils.Matcher``.

    Args:
        high_threshold: IoU at or above which a prediction is matched.
        low_threshold: IoU below which a prediction is background; must be
            ``<= high_threshold``.
        allow_low_quality_matches: restore, for each gt box, the match of every
            prediction whose IoU with it equals that gt's largest IoU (ties included).
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        if low_threshold > high_threshold:
            raise ValueError("low_threshold should be <= high_threshold")
        # Python floats: compared with a float32 matrix they are rounded to float32,
        # exactly what torch does, so an IoU that *is* float32(0.7) counts as >= 0.7.
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix):
        """Best ground truth for each prediction, or a negative code.

        Args:
            match_quality_matrix: (G, P) quality of each (gt, prediction) pair, e.g.
                ``box_iou(gt_boxes, anchors)``.
        Returns:
            matched_idxs: (P,) int64; a gt index in ``[0, G)``, ``BELOW_LOW_THRESHOLD``
            or ``BETWEEN_THRESHOLDS``. Ties in a column go to the lowest gt index
            (``argmax``, as torch's ``max(dim=0)``).

            With no predictions (P == 0) the result is empty. With no ground truth
            (G == 0) every prediction is ``BELOW_LOW_THRESHOLD`` (background):
            torchvision raises there in training, but an image without objects is a
            valid negative example.
        """
        xp = get_xp(match_quality_matrix)
        num_gt, num_pred = match_quality_matrix.shape
        if num_gt == 0:
            return xp.full((num_pred,), BELOW_LOW_THRESHOLD, dtype=np.int64)
        if num_pred == 0:
            return xp.zeros((0,), dtype=np.int64)

        # best gt for each prediction: (G, P) -> (P,)
        all_matches = xp.argmax(match_quality_matrix, axis=0).astype(np.int64)
        matched_vals = xp.max(match_quality_matrix, axis=0)

        matches = all_matches.copy()
        matches[matched_vals < self.low_threshold] = BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = BETWEEN_THRESHOLDS

        if self.allow_low_quality_matches:
            matches = self._restore_low_quality_matches(matches, all_matches,
                                                        match_quality_matrix)
        return matches

    @staticmethod
    def _restore_low_quality_matches(matches, all_matches, match_quality_matrix):
        """Give back their best gt to the predictions some gt overlaps most.

        For each gt ``g`` let ``m_g = max_p Q[g, p]``; every prediction ``p`` with
        ``Q[g, p] == m_g`` for some ``g`` gets ``all_matches[p]`` -- its own best gt,
        which may be another gt than ``g`` (torchvision's ``set_low_quality_matches_``).

        Args:
            matches: (P,) int64 after thresholding.
            all_matches: (P,) int64 argmax over gt, before thresholding.
            match_quality_matrix: (G, P).
        Returns:
            (P,) int64 matches with those predictions restored.
        """
        xp = get_xp(match_quality_matrix)
        highest_quality_foreach_gt = xp.max(match_quality_matrix, axis=1)  # (G,)
        # (G, P) -> (P,): does any gt have this prediction among its best (ties kept)?
        is_best_for_some_gt = xp.any(
            match_quality_matrix == highest_quality_foreach_gt[:, None], axis=0)
        return xp.where(is_best_for_some_gt, all_matches, matches)
