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

    def __call__(self, match_quality_matrix, valid_gt=None):
        """Best ground truth for each prediction, or a negative code.

        Args:
            match_quality_matrix: (G, P) quality of each (gt, prediction) pair, e.g.
                ``box_iou(gt_boxes, anchors)``; or a batch (N, G, P), one image each.
            valid_gt: optional (G,) or (N, G) bool: which gt rows are real (padded
                batches, crowd regions); the others never match.
        Returns:
            matched_idxs: (P,) or (N, P) int64; a gt index in ``[0, G)``,
            ``BELOW_LOW_THRESHOLD`` or ``BETWEEN_THRESHOLDS``. Ties in a column go to
            the lowest gt index (``argmax``, as torch's ``max(dim=0)``).
            With no predictions (P == 0) the result is empty. With no ground truth
            (G == 0, or no valid row) every prediction is ``BELOW_LOW_THRESHOLD``
            (background): torchvision raises there in training, but an image without
            objects is a valid negative example.
        """
        xp = get_xp(match_quality_matrix)
        quality = match_quality_matrix
        num_gt = quality.shape[-2]
        if num_gt == 0 or quality.shape[-1] == 0:
            return xp.full(quality.shape[:-2] + quality.shape[-1:], BELOW_LOW_THRESHOLD,
                           dtype=np.int64)
        if valid_gt is not None:  # a padded gt row has quality -1: below every real one
            quality = xp.where(valid_gt[..., None], quality, -1)
        # best gt for each prediction: (..., G, P) -> (..., P)
        all_matches = xp.argmax(quality, axis=-2).astype(np.int64)
        matched_vals = xp.max(quality, axis=-2)
        # thresholds: below low -> background, between -> ignored, else the best gt
        matches = xp.where(matched_vals < self.high_threshold, BETWEEN_THRESHOLDS,
                           all_matches)
        matches = xp.where(matched_vals < self.low_threshold, BELOW_LOW_THRESHOLD, matches)
        if self.allow_low_quality_matches:
            matches = self._restore_low_quality_matches(matches, all_matches, quality,
                                                        valid_gt)
        return matches

    @staticmethod
    def _restore_low_quality_matches(matches, all_matches, match_quality_matrix,
                                     valid_gt=None):
        """Give back their best gt to the predictions some gt overlaps most.

        For each gt ``g`` let ``m_g = max_p Q[g, p]``; every prediction ``p`` with
        ``Q[g, p] == m_g`` for some valid ``g`` gets ``all_matches[p]`` -- its own best
        gt, which may be another gt than ``g`` (torchvision's
        ``set_low_quality_matches_``).

        Args:
            matches: (..., P) int64 after thresholding.
            all_matches: (..., P) int64 argmax over gt, before thresholding.
            match_quality_matrix: (..., G, P).
            valid_gt: (..., G) bool or None (all valid).
        Returns:
            (..., P) int64 matches with those predictions restored.
        """
        xp = get_xp(match_quality_matrix)
        highest = xp.max(match_quality_matrix, axis=-1, keepdims=True)  # (..., G, 1)
        best = match_quality_matrix == highest  # (..., G, P), ties kept
        if valid_gt is not None:
            best &= valid_gt[..., None]
        # (..., G, P) -> (..., P): does any gt have this prediction among its best?
        return xp.where(xp.any(best, axis=-2), all_matches, matches)
