"""Tests for npmaskrcnn/boxes/matcher.py: Matcher."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from npmaskrcnn.boxes.ops import box_iou


def test_constants():
    assert (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS) == (-1, -2)
    assert Matcher.BELOW_LOW_THRESHOLD == -1 and Matcher.BETWEEN_THRESHOLDS == -2


def test_thresholds_hand_computed(xp):
    # two gt boxes (rows), six predictions (columns)
    quality = xp.asarray([
        [0.90, 0.20, 0.50, 0.10, 0.00, 0.30],
        [0.10, 0.80, 0.60, 0.29, 0.00, 0.69],
    ], dtype=xp.float32)
    matched = Matcher(0.7, 0.3)(quality)
    assert matched.dtype == np.int64
    # 0.9 -> gt 0; 0.8 -> gt 1; 0.6 between; 0.29 below; 0 below; 0.69 between
    np.testing.assert_array_equal(asnumpy(matched), [0, 1, -2, -1, -1, -2])


def test_iou_exactly_at_thresholds(xp):
    # IoUs of exactly 0.7 (positive) and 0.3 (between, not background), from real boxes
    gt = xp.asarray([[0, 0, 10, 10]], dtype=xp.float32)
    preds = xp.asarray([[0, 0, 7, 10], [0, 0, 3, 10], [0, 0, 2.9, 10]], dtype=xp.float32)
    matched = Matcher(0.7, 0.3)(box_iou(gt, preds))
    np.testing.assert_array_equal(asnumpy(matched), [0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD])


def test_equal_thresholds_have_no_between(xp):
    quality = xp.asarray([[0.49, 0.5, 0.51]])
    np.testing.assert_array_equal(asnumpy(Matcher(0.5, 0.5)(quality)), [-1, 0, 0])


def test_low_quality_matches_with_ties(xp):
    quality = xp.asarray([
        # gt 0's best IoU is 0.4, shared by predictions 0 and 2 (a tie: both restored)
        [0.40, 0.10, 0.40, 0.00, 0.20],
        # gt 1's best is 0.5, at prediction 3 only; prediction 4 (0.45) stays between
        [0.00, 0.20, 0.10, 0.50, 0.45],
    ])
    plain = Matcher(0.7, 0.3)(quality)
    np.testing.assert_array_equal(asnumpy(plain), [-2, -1, -2, -2, -2])
    low_quality = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    np.testing.assert_array_equal(asnumpy(low_quality), [0, -1, 0, 1, -2])


def test_low_quality_match_restores_the_predictions_own_best_gt(xp):
    # prediction 0 is gt 0's best (0.3), but its own best gt is gt 1 (0.35):
    # torchvision restores all_matches[0] = 1, not 0
    quality = xp.asarray([[0.30, 0.10], [0.35, 0.90]])
    matched = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    np.testing.assert_array_equal(asnumpy(matched), [1, 1])


def test_column_ties_go_to_the_lowest_gt(xp):
    quality = xp.asarray([[0.8, 0.2], [0.8, 0.2], [0.1, 0.2]])
    np.testing.assert_array_equal(asnumpy(Matcher(0.7, 0.3)(quality)), [0, -1])


def test_no_ground_truth_is_all_background(xp):
    for allow in (False, True):
        matched = Matcher(0.7, 0.3, allow)(xp.zeros((0, 5)))
        assert matched.dtype == np.int64
        np.testing.assert_array_equal(asnumpy(matched), [-1] * 5)


def test_no_predictions_is_empty(xp):
    for shape in [(3, 0), (0, 0)]:
        matched = Matcher(0.7, 0.3, True)(xp.zeros(shape))
        assert matched.shape == (0,) and matched.dtype == np.int64


def test_rejects_inverted_thresholds():
    with pytest.raises(ValueError):
        Matcher(0.3, 0.7)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.booleans(), st.integers(0, 2**31 - 1))
def test_torchvision_parity(num_gt, num_pred, allow, seed):
    torch = pytest.importorskip("torch")
    tv_utils = pytest.importorskip("torchvision.models.detection._utils")
    # values on a coarse grid: ties in rows and columns, and values exactly at 0.3 / 0.7
    rng = np.random.default_rng(seed)
    quality = (rng.integers(0, 11, (num_gt, num_pred)) / 10).astype(np.float32)
    want = tv_utils.Matcher(0.7, 0.3, allow)(torch.from_numpy(quality)).numpy()
    np.testing.assert_array_equal(Matcher(0.7, 0.3, allow)(quality), want)
