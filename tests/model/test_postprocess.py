"""Tests for npmaskrcnn/model/postprocess.py: mask pasting, mask probabilities and the
final detections (softmax, decode, clip, threshold, per-class NMS, top-k)."""

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.coder import BoxCoder
from npmaskrcnn.model.postprocess import (
    expand_boxes,
    expand_masks,
    mask_probabilities,
    paste_mask_in_image,
    paste_masks_in_image,
    postprocess_detections,
    softmax,
)
from npmaskrcnn.model.targets import pad_proposals
from npmaskrcnn.model.transform import resize_bilinear


def random_boxes(rng, n, h, w):
    """n boxes with corners inside an (h, w) image."""
    xs, ys = rng.uniform(0, w, (n, 2)), rng.uniform(0, h, (n, 2))
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- pasting
def test_expand_boxes_and_masks_hand(xp):
    boxes = xp.asarray([[0.0, 0.0, 28.0, 28.0], [10.0, 20.0, 12.0, 30.0]])
    out = expand_boxes(boxes, 30 / 28)  # about the centres (14, 14) and (11, 25)
    # half sides (14, 14) and (1, 5) grow by 30/28 = 15/14
    expected = [[-1, -1, 29, 29], [11 - 15 / 14, 25 - 75 / 14, 11 + 15 / 14, 25 + 75 / 14]]
    np.testing.assert_allclose(asnumpy(out), expected)
    padded, scale = expand_masks(xp.ones((2, 1, 28, 28)), padding=1)
    assert padded.shape == (2, 1, 30, 30) and scale == 30 / 28
    p = asnumpy(padded)
    assert p[:, :, 1:29, 1:29].min() == 1 and p.sum() == 2 * 28 * 28


def test_paste_hand_2x2(xp):
    # a 2x2 map of ones in box (1, 1, 3, 3): padded to 4x4 (ones in the middle), the
    # box doubled about its centre to (0, 0, 4, 4) -> 5x5 pixels. Resize 4 -> 5: sources
    # (d + 0.5) * 0.8 - 0.5 = 0 (clamped), 0.7, 1.5, 2.3, 3.1 over the profile [0, 1, 1, 0]
    # give [0, 0.7, 1, 0.7, 0]; the 2-D map is the outer product, at rows/cols 0..4
    masks = xp.ones((1, 2, 2), dtype=xp.float32)
    boxes = xp.asarray([[1.0, 1.0, 3.0, 3.0]], dtype=xp.float32)
    out = paste_masks_in_image(masks, boxes, (6, 7))
    v = np.array([0, 0.7, 1, 0.7, 0, 0])
    expected = np.zeros((1, 6, 7))
    expected[0, :, :6] = np.outer(v, v)
    assert out.shape == (1, 6, 7) and out.dtype == np.float32
    np.testing.assert_allclose(asnumpy(out), expected, atol=1e-6)


def test_paste_empty(xp):
    for masks in (xp.zeros((0, 1, 28, 28), dtype=xp.float32), xp.zeros((0, 28, 28))):
        out = paste_masks_in_image(masks, xp.zeros((0, 4)), (5, 6))
        assert out.shape == (0, 5, 6) and out.dtype == masks.dtype


def test_paste_shapes_agree_and_edge_boxes_are_clipped(xp):
    rng = np.random.default_rng(0)
    masks = xp.asarray(rng.random((3, 1, 14, 14)), dtype=xp.float32)
    # boxes touching or crossing the bottom/right edges of a 30x40 image
    boxes = xp.asarray([[2, 2, 40, 30], [30, 20, 45, 38], [38, 28, 40, 30]], dtype=xp.float32)
    small = paste_masks_in_image(masks, boxes, (30, 40))
    assert small.shape == (3, 30, 40)
    np.testing.assert_array_equal(asnumpy(paste_masks_in_image(masks[:, 0], boxes, (30, 40))),
                                  asnumpy(small))
    # pasting into a larger canvas and cropping gives the same pixels: clipping at the
    # edge only drops what falls outside the image. To float32 rounding: on a device every
    # mask is pasted by matrix products whose sizes follow the canvas, and BLAS may sum a
    # product of other sizes in another order (1 ulp apart on a 2-core AMD EPYC)
    big = paste_masks_in_image(masks, boxes, (60, 70))
    np.testing.assert_allclose(asnumpy(big[:, :30, :40]), asnumpy(small), rtol=0, atol=1e-6)
    assert float(big[:, 30:, :].sum()) + float(big[:, :, 40:].sum()) > 0  # the part cut off


def test_paste_box_crossing_the_top_left_edge(xp):
    # integer box (-2, -3, 5, 6) -> an 10x8 resized map whose rows 3.. and columns 2..
    # land at the image's top-left corner
    mask = xp.asarray(np.random.default_rng(5).random((6, 6)))
    canvas = paste_mask_in_image(mask, (-2, -3, 5, 6), 9, 9)
    expected = np.zeros((9, 9))
    expected[:7, :6] = asnumpy(resize_bilinear(mask, (10, 8)))[3:, 2:]
    np.testing.assert_array_equal(asnumpy(canvas), expected)
    # a box wholly outside the image leaves the canvas empty
    assert float(paste_mask_in_image(mask, (-9, -9, -4, -4), 9, 9).sum()) == 0
    assert float(paste_mask_in_image(mask, (10, 2, 14, 5), 9, 9).sum()) == 0


def test_paste_matches_torchvision():
    torch = pytest.importorskip("torch")
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(10):
        h, w = (int(s) for s in rng.integers(20, 90, 2))
        masks = rng.random((6, 1, 28, 28)).astype(np.float32)
        boxes = random_boxes(rng, 6, h, w)
        boxes[0] = [0, 0, w, h]  # the whole image: the expanded box leaves it on all sides
        ref = roi_heads.paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(boxes),
                                             (h, w))
        out = paste_masks_in_image(masks, boxes, (h, w))
        worst = max(worst, float(np.abs(out - ref[:, 0].numpy()).max()))
    print(f"paste_masks_in_image vs torchvision: max abs error {worst:.2e}")
    assert worst < 1e-6


# ----------------------------------------------------------------------------- masks
def test_mask_probabilities_hand_and_extremes(xp):
    logits = xp.zeros((2, 3, 2, 2))
    logits[0, 1] = xp.asarray([[0.0, 2.0], [-2.0, 1000.0]])
    logits[1, 2] = -1000.0
    out = mask_probabilities(logits, xp.asarray([1, 2]))
    s = 1 / (1 + np.exp(-2.0))
    expected = np.array([[[[0.5, s], [1 - s, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert out.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(asnumpy(out), expected, atol=1e-15)
    assert mask_probabilities(xp.zeros((0, 3, 4, 4)), xp.zeros(0, dtype=xp.int64)).shape == (
        0, 1, 4, 4)


def test_mask_probabilities_match_torchvision():
    torch = pytest.importorskip("torch")
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4, (5, 4, 7, 7)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    (ref,) = roi_heads.maskrcnn_inference(torch.from_numpy(logits), [torch.from_numpy(labels)])
    np.testing.assert_allclose(mask_probabilities(logits, labels), ref.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- detections
def test_softmax_rows_sum_to_one(xp):
    z = xp.asarray([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]])
    np.testing.assert_allclose(asnumpy(softmax(z)), [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]])


def hand_case(xp):
    """Two images of 20x20; K = 3 (background, 1, 2); zero deltas so boxes = proposals."""
    proposals = [
        xp.asarray([[0, 0, 10, 10],      # P0
                    [1, 0, 11, 10],      # P1: IoU 90/110 with P0
                    [12, 12, 25, 18],    # P2: crosses the right edge -> (12, 12, 20, 18)
                    [5, 5, 5, 9]],       # P3: zero width -> removed however high its score
                   dtype=xp.float64),
        xp.zeros((0, 4)),                # the second image has no proposals
    ]
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.5, 0.03, 0.47], [0.0, 1.0, 0.0]])
    class_logits = xp.asarray(np.log(np.maximum(probs, 1e-12)))
    # the second image's padding row gets logits too (the head runs on padded rows)
    class_logits = xp.concatenate([class_logits, xp.zeros((4, 3))])
    return class_logits, xp.zeros((8, 12)), proposals


def test_postprocess_detections_hand(xp):
    class_logits, box_regression, proposals = hand_case(xp)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    proposals = pad_proposals(proposals)
    boxes, scores, labels = postprocess_detections(class_logits, box_regression, proposals,
                                                   [(20, 20), (20, 20)], coder)
    # candidates > 0.05: P0c1 .8, P0c2 .1, P1c1 .6, P1c2 .2, P2c2 .47 (P2c1 .03 dropped).
    # class 1: P0 suppresses P1; class 2: P1 (.2) suppresses P0 (.1), P2 kept
    np.testing.assert_allclose(asnumpy(boxes[0]), [[0, 0, 10, 10], [12, 12, 20, 18],
                                                   [1, 0, 11, 10]], atol=1e-9)
    np.testing.assert_allclose(asnumpy(scores[0]), [0.8, 0.47, 0.2], atol=1e-9)
    np.testing.assert_array_equal(asnumpy(labels[0]), [1, 2, 2])
    assert labels[0].dtype == np.int64
    assert boxes[1].shape == (0, 4) and scores[1].shape == (0,) and labels[1].shape == (0,)
    # the top-k cut and the score threshold
    boxes, scores, labels = postprocess_detections(class_logits, box_regression, proposals,
                                                   [(20, 20), (20, 20)], coder,
                                                   detections_per_img=2, score_thresh=0.5)
    np.testing.assert_allclose(asnumpy(scores[0]), [0.8])
    boxes, scores, labels = postprocess_detections(class_logits, box_regression, proposals,
                                                   [(20, 20), (20, 20)], coder,
                                                   detections_per_img=2)
    np.testing.assert_allclose(asnumpy(scores[0]), [0.8, 0.47], atol=1e-9)


@pytest.mark.parametrize("detections_per_img", [100, 7])
def test_postprocess_detections_match_torchvision(detections_per_img):
    torch = pytest.importorskip("torch")
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    rng = np.random.default_rng(3)
    image_sizes = [(60, 80), (50, 40)]
    proposals = [random_boxes(rng, 40, 60, 80), random_boxes(rng, 25, 50, 40)]
    k = 5
    class_logits = rng.normal(0, 2, (65, k)).astype(np.float32)
    box_regression = rng.normal(0, 1, (65, 4 * k)).astype(np.float32)
    ref = roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None,
                             score_thresh=0.05, nms_thresh=0.5,
                             detections_per_img=detections_per_img)
    with torch.no_grad():
        ref_out = ref.postprocess_detections(torch.from_numpy(class_logits),
                                             torch.from_numpy(box_regression),
                                             [torch.from_numpy(p) for p in proposals],
                                             image_sizes)
    # our head runs on the proposals padded to 40 per image: pad the logits alike
    padded = pad_proposals(proposals)
    rows = np.concatenate([np.arange(40), 40 + np.arange(40)])
    rows = np.where(rows < 40, rows, np.minimum(rows, 64))  # padding rows: any values
    out = postprocess_detections(class_logits[rows], box_regression[rows], padded,
                                 image_sizes, BoxCoder((10.0, 10.0, 5.0, 5.0)),
                                 detections_per_img=detections_per_img)
    for ours, theirs in zip(out, ref_out, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == tuple(b.shape) and a.shape[0] > 0
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-4)
    print(f"postprocess_detections vs torchvision: {[len(b) for b in out[0]]} detections")


def test_gpu_paste_equals_the_per_mask_loop(monkeypatch):
    """paste_masks_batched (two batched products per mask; the GPU's path), run on NumPy,
    pastes what the CPU loop pastes: boxes inside, across every edge, degenerate."""
    from npmaskrcnn.model import postprocess

    rng = np.random.default_rng(7)
    masks = rng.random((6, 1, 28, 28)).astype(np.float32)
    boxes = np.array([[3, 4, 30, 25], [-5, -7, 12, 9], [30, 20, 55, 48], [10, 10, 10.4, 30],
                      [20, 5, 18, 9], [0, 0, 40, 32]], dtype=np.float32)
    loop = paste_masks_in_image(masks, boxes, (32, 40))
    monkeypatch.setattr(postprocess, "on_device", lambda xp: True)
    batched = paste_masks_in_image(masks, boxes, (32, 40))
    assert batched.shape == loop.shape == (6, 32, 40)
    np.testing.assert_allclose(batched, loop, rtol=1e-6, atol=1e-7)
    assert np.array_equal(batched > 0.5, loop > 0.5)
