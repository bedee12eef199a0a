"""Tests for npmaskrcnn/model/roi_heads.py: sampling and targets by hand, the branches."""

from dataclasses import replace

import numpy as np
import pytest

from npmaskrcnn.backend import Generator, asnumpy
from npmaskrcnn.config import tiny
from npmaskrcnn.model.mask_head import project_masks_on_boxes
from npmaskrcnn.model.roi_heads import IGNORE, RoIHeads, boxes_to_rois
from npmaskrcnn.model.targets import batch_ground_truth, pad_proposals


def heads(batch=8, fraction=0.25, mask_pool=2):
    cfg = replace(tiny().roi_heads, batch_size_per_image=batch, positive_fraction=fraction,
                  mask_pool_size=mask_pool)
    return RoIHeads(cfg, 8, 3, [1 / 4, 1 / 8, 1 / 16, 1 / 32], Generator(0, backend="numpy"),
                    np.float64)


def full_mask(box, size=32):
    m = np.zeros((size, size), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = 1
    return m


def gt_of(boxes_per_image, labels_per_image):
    return batch_ground_truth([
        {"boxes": np.asarray(b, np.float64).reshape(-1, 4), "labels": np.asarray(lab),
         "masks": np.stack([full_mask(x) for x in b]) if len(b) else np.zeros((0, 32, 32),
                                                                                np.uint8)}
        for b, lab in zip(boxes_per_image, labels_per_image)], np.float64)


def test_gt_boxes_are_appended_and_become_the_positives():
    """With no proposal at all, each image's RoIs are its own GT boxes: positives with
    zero regression targets and their full masks as mask targets."""
    h = heads()
    gt = gt_of([[[2, 2, 12, 10], [16, 4, 28, 20]]], [[1, 2]])
    s = h.select_training_samples(pad_proposals([np.zeros((0, 4))]), gt)
    labels = asnumpy(s.labels)
    assert labels.tolist()[:2] in ([1, 2], [2, 1])  # the two positives first
    assert (labels[2:] == IGNORE).all()  # nothing else to sample: filler
    np.testing.assert_allclose(asnumpy(s.regression_targets)[:2], 0, atol=1e-12)
    assert s.mask_rois.shape == (2, 5)
    assert asnumpy(s.mask_labels).tolist() == labels[:2].tolist()
    # mask targets: each RoI's matched GT mask, RoIAligned onto it (the single-image rule)
    masks = np.stack([full_mask(b) for b in ([2, 2, 12, 10], [16, 4, 28, 20])])
    rois = asnumpy(s.mask_rois)
    matched = np.where(labels[:2] == 1, 0, 1)
    want = project_masks_on_boxes(masks, rois[:, 1:], matched, 4)
    np.testing.assert_allclose(asnumpy(s.mask_targets), want, atol=1e-12)
    assert (asnumpy(s.mask_targets)[:, :2, :2] == 1).all()  # inside each object: 1


def test_positives_are_capped_and_come_first():
    """7 proposals overlapping the object (IoU >= 0.5) + the GT itself = 8 positives, but
    at most int(8 * 0.25) = 2 are taken; 6 negatives fill the rest, after them."""
    h = heads(batch=8, fraction=0.25)
    obj = [4, 4, 24, 24]
    near = [[4 + d, 4, 24 + d, 24] for d in range(7)]  # IoU 20(20-d)/(20(20+d)) >= 0.5
    far = [[x, 26, x + 5, 31] for x in range(0, 27, 3)]  # IoU 0: background
    s = h.select_training_samples(pad_proposals([np.asarray(near + far, np.float64)]),
                                  gt_of([[obj]], [[2]]))
    labels = asnumpy(s.labels)
    assert labels.tolist() == [2, 2, 0, 0, 0, 0, 0, 0]
    assert s.mask_rois.shape[0] == 2 and asnumpy(s.mask_labels).tolist() == [2, 2]
    rois = asnumpy(s.rois)
    assert all(r[2] < 25 and r[4] <= 24 for r in rois[:2])  # positives from near/GT
    assert all(r[2] >= 26 for r in rois[2:])  # negatives from the far boxes


def test_image_without_objects_gives_only_negatives():
    h = heads(batch=4)
    props = [np.asarray([[0, 0, 8, 8], [8, 8, 16, 16], [1, 1, 9, 9]], np.float64),
             np.asarray([[2, 2, 12, 10]], np.float64)]
    s = h.select_training_samples(pad_proposals(props), gt_of([[], [[2, 2, 12, 10]]],
                                                               [[], [1]]))
    labels = asnumpy(s.labels).reshape(2, 4)
    assert labels[0].tolist() == [0, 0, 0, IGNORE]  # 3 negatives, one filler row
    # image 1: the proposal and the appended GT box are both positive, but at most
    # int(4 * 0.25) = 1 positive is taken; nothing is negative: filler
    assert labels[1].tolist() == [1, IGNORE, IGNORE, IGNORE]
    rois = asnumpy(s.rois).reshape(2, 4, 5)
    assert (rois[0, :, 0] == 0).all() and (rois[1, :, 0] == 1).all()  # image index column
    assert (asnumpy(s.mask_rois)[:, 0] == 1).all()  # no mask RoI for image 0


def test_boxes_to_rois():
    rois = boxes_to_rois([np.ones((2, 4)), np.zeros((0, 4)), np.full((1, 4), 3.0)])
    np.testing.assert_array_equal(rois[:, 0], [0, 0, 2])
    assert rois.shape == (3, 5)


def test_keypoint_targets_of_the_positives_by_hand():
    """Two images, one person each, GT box = the only RoI: each positive gets its own
    person's keypoints as heatmap cells, y_bin * 56 + x_bin with bin = floor((x - x1) * 56 /
    w); unlabelled (v = 0) keypoints are not valid, and a keypoint on the right edge x = x2
    belongs to the last bin."""
    from npmaskrcnn.config import KeypointConfig

    cfg = replace(tiny().roi_heads, batch_size_per_image=4, mask_on=False)
    h = RoIHeads(cfg, 8, 2, [1 / 4, 1 / 8, 1 / 16, 1 / 32], Generator(0, backend="numpy"),
                 np.float64, keypoint=KeypointConfig(on=True, num_keypoints=3, layers=(4,)))
    assert not hasattr(h, "mask_head") and h.heatmap_size == 56
    boxes = [[[0.0, 0.0, 28.0, 56.0]], [[10.0, 20.0, 24.0, 34.0]]]
    keypoints = [np.array([[[7.0, 1.0, 2], [28.0, 55.9, 1], [3.0, 3.0, 0]]]),
                 np.array([[[10.0, 20.0, 2], [17.0, 33.9, 2], [30.0, 21.0, 2]]])]
    gt = batch_ground_truth([{"boxes": np.array(b), "labels": np.array([1]), "keypoints": k}
                             for b, k in zip(boxes, keypoints)], np.float64)
    assert gt.keypoints.shape == (2, 1, 3, 3) and gt.masks is None
    s = h.select_training_samples(pad_proposals([np.zeros((0, 4))] * 2), gt)
    assert s.mask_targets is None and s.mask_rois.shape == (2, 5)
    # image 0: RoI 28 x 56 -> x bins of 0.5 px, y bins of 1 px; image 1: 14 x 14 -> 0.25 px
    want = [[1 * 56 + 14, 55 * 56 + 55, 0], [0, 55 * 56 + 28, 0]]
    np.testing.assert_array_equal(asnumpy(s.keypoint_heatmaps), want)
    np.testing.assert_array_equal(asnumpy(s.keypoint_valid),
                                  [[True, True, False], [True, True, False]])


def test_keypoint_branch_without_ground_truth_keypoints_says_so():
    from npmaskrcnn.config import KeypointConfig

    h = RoIHeads(tiny().roi_heads, 8, 3, [1 / 4, 1 / 8, 1 / 16, 1 / 32],
                 Generator(0, backend="numpy"), np.float64,
                 keypoint=KeypointConfig(on=True, layers=(4,)))
    gt = gt_of([[[2, 2, 12, 10]]], [[1]])
    with pytest.raises(ValueError, match="needs ground-truth keypoints"):
        h.select_training_samples(pad_proposals([np.zeros((0, 4))]), gt)
