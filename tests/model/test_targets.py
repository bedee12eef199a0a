"""Tests for npmaskrcnn/model/targets.py: the padded ground truth of a batch."""

import warnings

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.model.targets import batch_ground_truth, pad_proposals


def test_padding_and_validity(xp):
    targets = [
        {"boxes": xp.asarray([[0.0, 0, 4, 4], [2, 2, 2, 6], [1, 1, 5, 5]]),  # 2nd: zero width
         "labels": xp.asarray([1, 2, 3]), "iscrowd": xp.asarray([0, 0, 1])},  # 3rd: crowd
        {"boxes": xp.zeros((0, 4)), "labels": xp.zeros((0,), dtype=np.int64),
         "iscrowd": xp.zeros((0,), dtype=np.int64)},  # an image without objects
        {"boxes": xp.asarray([[3.0, 3, 9, 7]]), "labels": xp.asarray([2]),
         "iscrowd": xp.asarray([0])},
    ]
    with pytest.warns(UserWarning, match=r"image 0: dropped 1 ground-truth box"):
        gt = batch_ground_truth(targets, np.float32)
    assert gt.boxes.shape == (3, 3, 4) and gt.boxes.dtype == np.float32
    np.testing.assert_array_equal(asnumpy(gt.valid), [[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(asnumpy(gt.labels), [[1, 2, 3], [0, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(asnumpy(gt.boxes[2]), [[3, 3, 9, 7], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert gt.masks is None and gt.num_images == 3


def test_no_object_anywhere_and_no_warning_for_good_boxes(xp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gt = batch_ground_truth([{"boxes": xp.zeros((0, 4)),
                                  "labels": xp.zeros((0,), dtype=np.int64)}], np.float64)
    assert gt.boxes.shape == (1, 0, 4) and gt.valid.shape == (1, 0)


def test_pad_proposals(xp):
    p = pad_proposals([xp.ones((2, 4)), xp.zeros((0, 4)), xp.full((3, 4), 2.0)])
    assert p.boxes.shape == (3, 3, 4)
    np.testing.assert_array_equal(asnumpy(p.valid), [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert float(p.boxes[2].sum()) == 24.0 and float(p.boxes[0, 2].sum()) == 0.0
