"""Tests for npmaskrcnn/model/mask_head.py: the mask loss (sigmoid and softmax on the same
soft targets), the targets, and the head's layers."""

from dataclasses import replace

import numpy as np
import pytest

from npmaskrcnn.backend import Generator
from npmaskrcnn.config import tiny
from npmaskrcnn.data.shapes import generate_shapes_image
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.model import roi_heads
from npmaskrcnn.model.mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_loss,
    project_masks_on_boxes,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN
from npmaskrcnn.model.postprocess import mask_probabilities


def test_only_the_ground_truth_channel_receives_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 5, 5))
    targets = (rng.random((3, 5, 5)) > 0.5).astype(np.float64)
    labels = np.array([1, 3, 2])
    loss, d = maskrcnn_loss(logits, targets, labels, "sigmoid")
    for r, k in enumerate(labels):
        assert np.abs(d[r, k]).sum() > 0
        others = [c for c in range(4) if c != k]
        assert np.all(d[r, others] == 0)
    # and the value is the mean BCE of exactly those channels
    x = logits[np.arange(3), labels]
    ref = np.mean(np.maximum(x, 0) - x * targets + np.log1p(np.exp(-np.abs(x))))
    assert float(loss) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_mask_loss_gradient(mode):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4, 4))
    targets = rng.random((2, 4, 4))
    labels = np.array([2, 1])
    _, d = maskrcnn_loss(logits, targets, labels, mode)
    num = numerical_gradient(lambda: float(maskrcnn_loss(logits, targets, labels, mode)[0]),
                             logits)
    err = rel_error(num, d)
    print(mode, "mask loss rel error", err)
    assert err < 1e-7


def test_softmax_masks_compete_across_channels():
    logits = np.zeros((1, 3, 2, 2))
    _, d = maskrcnn_loss(logits, np.ones((1, 2, 2)), np.array([1]), "softmax")
    assert np.all(d[0, 0] > 0) and np.all(d[0, 2] > 0) and np.all(d[0, 1] < 0)


def test_softmax_with_two_classes_is_the_sigmoid_loss_on_the_logit_difference():
    """K = 2 (background, one class): the softmax arm's loss on soft targets t is the BCE of
    the sigmoid arm on z_1 - z_0, value and gradient: the same targets, the same loss."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 2, 4, 4))
    t = rng.random((3, 4, 4))  # soft targets, as RoIAlign of a GT mask gives
    labels = np.ones(3, np.int64)
    soft, dsoft = maskrcnn_loss(logits, t, labels, "softmax")
    diff = logits[:, 1:] - logits[:, :1]  # (3, 1, 4, 4)
    sig, dsig = maskrcnn_loss(diff, t, labels, "sigmoid")  # one channel: class-agnostic
    assert float(soft) == pytest.approx(float(sig), rel=1e-12)
    np.testing.assert_allclose(dsoft[:, 1], dsig[:, 0], rtol=1e-10)
    np.testing.assert_allclose(dsoft[:, 0], -dsig[:, 0], rtol=1e-10)


def test_softmax_arm_trains_on_the_soft_targets_not_binarised_ones():
    logits = np.zeros((1, 3, 1, 1))
    labels = np.array([2])
    losses = [float(maskrcnn_loss(logits, np.full((1, 1, 1), t), labels, "softmax")[0])
              for t in (0.3, 0.45)]
    # q = (1 - t, 0, t) against softmax (1/3, 1/3, 1/3): loss ln 3 for every t, but the
    # gradient softmax - q moves with t; binarised at 0.5 both would be the same (t = 0)
    assert losses == pytest.approx([np.log(3)] * 2)
    d = [maskrcnn_loss(logits, np.full((1, 1, 1), t), labels, "softmax")[1] for t in (0.3, 0.45)]
    np.testing.assert_allclose(d[0][0, :, 0, 0], [1 / 3 - 0.7, 1 / 3, 1 / 3 - 0.3])
    np.testing.assert_allclose(d[1][0, :, 0, 0], [1 / 3 - 0.55, 1 / 3, 1 / 3 - 0.45])


def test_softmax_needs_class_specific_masks():
    with pytest.raises(ValueError, match="class-specific"):
        maskrcnn_loss(np.zeros((1, 1, 2, 2)), np.zeros((1, 2, 2)), np.array([1]), "softmax")
    with pytest.raises(ValueError, match="unknown mask loss"):
        maskrcnn_loss(np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2)), np.array([1]), "hinge")


def test_both_table_2b_arms_receive_the_same_targets(monkeypatch):
    """The sigmoid and softmax models of Table 2b, built from the same seed and shown the
    same batch, hand identical (soft) targets to the mask loss."""
    seen = {}

    def spy(mask_logits, mask_targets, labels, mode):
        seen[mode] = (np.array(mask_targets), np.array(labels))
        return maskrcnn_loss(mask_logits, mask_targets, labels, mode)

    monkeypatch.setattr(roi_heads, "maskrcnn_loss", spy)
    image, masks, labels = generate_shapes_image(np.random.default_rng(4), 64, num_objects=3,
                                                 classes=("square", "ring"), min_size=12)
    boxes = []
    for m in masks:  # each mask's pixel extent, (x1, y1, x2, y2)
        cols, rows = np.nonzero(m.any(0))[0], np.nonzero(m.any(1))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    boxes = np.array(boxes, np.float32)
    target = {"boxes": boxes, "labels": labels, "masks": masks}
    x = image.transpose(2, 0, 1).astype(np.float32) / 255
    for mode in ("sigmoid", "softmax"):
        cfg = tiny()
        cfg.roi_heads = replace(cfg.roi_heads, mask_loss=mode)
        MaskRCNN(cfg).forward([x], [target])
    (t_sig, l_sig), (t_soft, l_soft) = seen["sigmoid"], seen["softmax"]
    print("positives", len(l_sig), "soft target values", np.unique(t_sig).size)
    assert len(l_sig) > 0
    np.testing.assert_array_equal(t_sig, t_soft)
    np.testing.assert_array_equal(l_sig, l_soft)
    assert ((t_sig > 0) & (t_sig < 1)).any()  # soft: edge pixels between 0 and 1


def test_empty_positives_give_zero_loss():
    loss, d = maskrcnn_loss(np.zeros((0, 3, 28, 28)), np.zeros((0, 28, 28)),
                            np.zeros((0,), np.int64))
    assert float(loss) == 0.0 and d.shape == (0, 3, 28, 28)


def test_project_masks_on_boxes_cuts_the_roi():
    masks = np.zeros((2, 20, 20), np.uint8)
    masks[0, 4:12, 4:12] = 1  # a square exactly filling the first RoI
    boxes = np.array([[4.0, 4.0, 12.0, 12.0], [0.0, 0.0, 20.0, 20.0]])
    t = project_masks_on_boxes(masks, boxes, np.array([0, 1]), 8)
    assert t.shape == (2, 8, 8)
    # aligned=False samples bin j at x = 4 + j + 0.5 on a grid whose pixel centres are
    # integers: the last column sits at 11.5, halfway between pixel 11 (1) and 12 (0)
    assert np.all(t[0, :7, :7] == 1)
    np.testing.assert_allclose(t[0, 7, :7], 0.5)
    np.testing.assert_allclose(t[0, :7, 7], 0.5)
    assert t[0, 7, 7] == 0.25
    assert np.all(t[1] == 0)


def test_mask_probabilities_softmax_and_class_agnostic():
    logits = np.zeros((2, 3, 2, 2))
    logits[0, 2] = 10.0
    p = mask_probabilities(logits, np.array([2, 1]), mode="softmax")
    assert p.shape == (2, 1, 2, 2)
    assert np.all(p[0] > 0.99) and np.allclose(p[1], 1 / 3)
    agnostic = mask_probabilities(np.full((2, 1, 2, 2), 10.0), np.array([2, 1]))
    assert np.all(agnostic > 0.99)


def test_mask_head_and_predictor_names_and_shapes():
    rng = Generator(0, backend="numpy")
    head = MaskRCNNHeads(8, (16, 16, 16, 16), rng, np.float32)
    pred = MaskRCNNPredictor(16, 16, 5, rng, np.float32)
    assert "0.0.weight" in head.parameters() and "3.0.bias" in head.parameters()
    assert set(pred.parameters()) == {"conv5_mask.weight", "conv5_mask.bias",
                                      "mask_fcn_logits.weight", "mask_fcn_logits.bias"}
    x = np.random.default_rng(0).standard_normal((3, 8, 14, 14)).astype(np.float32)
    out = pred(head(x))
    assert out.shape == (3, 5, 28, 28)
    dx = head.backward(pred.backward(np.ones_like(out)))
    assert dx.shape == x.shape
