"""Detection post-processing: from head outputs to final boxes, scores, labels and masks.

Inference in Mask R-CNN (paper §3.1 "Inference"): the box head's class scores are
turned into probabilities, every class decodes its own box from the proposal, boxes are
clipped to the image, background and low scores (<= 0.05) are dropped, NMS runs per
class (IoU 0.5) and the best 100 detections are kept. The mask head then runs on those
boxes only; the mask of the predicted class goes through a sigmoid and is pasted into
the image at the box, giving a per-pixel probability to threshold at 0.5.

No gradient flows here: these functions run at inference time only, on detached
outputs of the heads.

Follows torchvision's ``RoIHeads.postprocess_detections``, ``maskrcnn_inference`` and
``paste_masks_in_image`` (``models/detection/roi_heads.py``).
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, get_xp
from ..boxes.nms import batched_nms
from ..boxes.ops import clip_boxes_to_image, remove_small_boxes
from .transform import resize_bilinear


def expand_boxes(boxes, scale: float):
    """Scale boxes about their centres by ``scale``.

    Args:
        boxes: (D, 4) ``(x1, y1, x2, y2)``.
        scale: factor for both the width and the height.
    Returns:
        (D, 4) boxes with the same centres and ``scale`` times the sides.
    torchvision: ``roi_heads.expand_boxes`` (same order of operations, so that the
    later truncation to integers lands on the same pixels).
    """
    xp = get_xp(boxes)
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    w_half = w_half * scale
    h_half = h_half * scale
    return xp.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def expand_masks(masks, padding: int):
    """Zero-pad the last two axes of M x M masks by ``padding`` on every side.

    The mask head predicts the object inside its box, so the map's border pixels are
    the box edges; a ring of zeros lets the bilinear resize fade to 0 outside the box
    instead of smearing the border values. The box is expanded by the same factor.

    Args:
        masks: (D, M, M) or (D, 1, M, M).
        padding: pixels added on each side.
    Returns:
        padded: (..., M + 2p, M + 2p).
        scale: (M + 2p) / M, the factor to expand the boxes by.
    torchvision: ``roi_heads.expand_masks``.
    """
    xp = get_xp(masks)
    m = masks.shape[-1]
    scale = float(m + 2 * padding) / m
    pad = [(0, 0)] * (masks.ndim - 2) + [(padding, padding), (padding, padding)]
    return xp.pad(masks, pad), scale


def paste_mask_in_image(mask, box, im_h: int, im_w: int, out=None):
    """Resize one mask to its integer box and place it in a zero (im_h, im_w) canvas.

    Args:
        mask: (M', M') probabilities (already padded).
        box: four Python ints ``(x1, y1, x2, y2)``, inclusive pixel corners.
        im_h, im_w: image size.
        out: an (im_h, im_w) array of zeros to paste into (a view of a batch canvas,
            which saves a full-image copy per mask); a new canvas when None.
    Returns:
        (im_h, im_w): the mask resized bilinearly (align_corners=False) to
        ``(y2 - y1 + 1, x2 - x1 + 1)`` (at least 1x1), the part inside the image copied
        to its place, zeros elsewhere.
    torchvision: ``roi_heads.paste_mask_in_image``.
    """
    xp = get_xp(mask)
    x1, y1, x2, y2 = box
    w = max(x2 - x1 + 1, 1)
    h = max(y2 - y1 + 1, 1)
    resized = resize_bilinear(mask, (h, w))  # (M', M') -> (h, w)
    canvas = xp.zeros((im_h, im_w), dtype=resized.dtype) if out is None else out
    # the box clipped to the image, in image pixels [x0, x1e) x [y0, y1e)
    x0, x1e = max(x1, 0), min(x2 + 1, im_w)
    y0, y1e = max(y1, 0), min(y2 + 1, im_h)
    if x1e > x0 and y1e > y0:
        canvas[y0:y1e, x0:x1e] = resized[y0 - y1 : y1e - y1, x0 - x1 : x1e - x1]
    return canvas


def paste_masks_in_image(masks, boxes, img_shape, padding: int = 1):
    """Paste M x M mask probabilities into full-image canvases at their boxes.

    Each map is zero-padded to (M + 2p) x (M + 2p) and its box scaled about the centre
    by (M + 2p) / M, so that the padded map still covers the box exactly; the expanded
    box is truncated to integers, the map resized bilinearly to the box's
    (h + 1, w + 1) pixels and copied into a zero canvas, clipped at the image edges.

    Args:
        masks: (D, M, M) or (D, 1, M, M) probabilities.
        boxes: (D, 4) boxes in pixels of the target image.
        img_shape: (H, W) of the target image.
        padding: zero pixels added around each map.
    Returns:
        (D, H, W) probabilities in the masks' dtype (float32 for non-float masks);
        (0, H, W) when D = 0. Threshold at 0.5 for binary masks.
    torchvision: ``roi_heads.paste_masks_in_image``, which returns (D, 1, H, W).
    """
    xp = get_xp(masks, boxes)
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    masks = masks.reshape(masks.shape[0], masks.shape[-2], masks.shape[-1])  # (D, M, M)
    masks, scale = expand_masks(masks, padding)  # (D, M + 2p, M + 2p)
    # truncation toward zero, as torch's .to(int64); the boxes are needed as Python ints
    int_boxes = asnumpy(expand_boxes(boxes, scale).astype(np.int64)).tolist()
    dtype = masks.dtype if masks.dtype.kind == "f" else np.dtype(np.float32)
    out = xp.zeros((masks.shape[0], im_h, im_w), dtype=dtype)
    for i, box in enumerate(int_boxes):
        paste_mask_in_image(masks[i], box, im_h, im_w, out=out[i])
    return out


def mask_probabilities(mask_logits, labels, mode: str = "sigmoid"):
    """Each detection's mask probabilities in the channel of its predicted class.

    Masks are predicted for every class independently (paper §3); at inference the
    box branch's label picks the one to use. With one channel (class-agnostic masks)
    that channel is used for every label; with ``mode="softmax"`` (the Table 2b
    ablation) the probabilities are a softmax over the K channels.

    Args:
        mask_logits: (D, K, M, M).
        labels: (D,) int64 predicted classes.
    Returns:
        (D, 1, M, M) probabilities (sigmoid ``1 / (1 + exp(-logit))`` by default).
    torchvision: ``roi_heads.maskrcnn_inference`` (for one image's detections).
    """
    xp = get_xp(mask_logits, labels)
    d, k = mask_logits.shape[:2]
    channel = labels if k > 1 else xp.zeros_like(labels)
    if mode == "softmax":
        z = mask_logits - mask_logits.max(axis=1, keepdims=True)
        p = xp.exp(z)
        return (p[xp.arange(d), channel] / p.sum(axis=1))[:, None]
    logits = mask_logits[xp.arange(d), channel][:, None]  # (D, 1, M, M)
    # exp of -|x| only, so that no large logit overflows
    e = xp.exp(-xp.abs(logits))
    return xp.where(logits >= 0, 1 / (1 + e), e / (1 + e))


def softmax(logits):
    """Row-wise softmax ``exp(z - max z) / sum exp(z - max z)``; (R, K) -> (R, K)."""
    xp = get_xp(logits)
    e = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def postprocess_detections(
    class_logits,
    box_regression,
    proposals,
    image_sizes,
    box_coder,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
):
    """Final detections per image from the box head's outputs.

    For each image: softmax over the K classes; decode a box per (proposal, class)
    from the class-specific deltas; clip to the image; drop the background class;
    treat every remaining (box, class) pair as a candidate; keep scores
    ``> score_thresh``; drop boxes with a side ``< min_size``; NMS at ``nms_thresh``
    independently per class; keep the ``detections_per_img`` best by score.

    Args:
        class_logits: (R, K) for the proposals of all images, concatenated.
        box_regression: (R, 4K) class-specific deltas.
        proposals: list of N arrays (R_i, 4), sum R_i = R.
        image_sizes: list of N (h, w) of the (resized) images.
        box_coder: a ``BoxCoder`` with the box head's weights (10, 10, 5, 5).
        score_thresh, nms_thresh, detections_per_img, min_size: as torchvision's
            ``box_score_thresh``, ``box_nms_thresh``, ``box_detections_per_img`` and
            the fixed 1e-2.
    Returns:
        boxes: list of N arrays (D_i, 4).
        scores: list of N arrays (D_i,), decreasing.
        labels: list of N int64 arrays (D_i,) in 1..K-1.
    torchvision: ``RoIHeads.postprocess_detections``.
    """
    xp = get_xp(class_logits, box_regression, *proposals)
    num_classes = class_logits.shape[-1]
    num_rois = class_logits.shape[0]
    pred_boxes = box_coder.decode(box_regression, xp.concatenate(proposals, axis=0))
    pred_boxes = pred_boxes.reshape(num_rois, num_classes, 4)  # (R, 4K) -> (R, K, 4)
    pred_scores = softmax(class_logits)  # (R, K)

    all_boxes, all_scores, all_labels = [], [], []
    start = 0
    for props, image_size in zip(proposals, image_sizes, strict=True):
        stop = start + props.shape[0]
        boxes, scores = pred_boxes[start:stop], pred_scores[start:stop]
        start = stop
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), image_size)
        boxes = boxes.reshape(-1, num_classes, 4)  # (R_i, K, 4)
        labels = xp.broadcast_to(xp.arange(num_classes, dtype=np.int64), scores.shape)

        # drop the background class 0; every (proposal, class) pair is a candidate
        boxes = boxes[:, 1:].reshape(-1, 4)  # (R_i * (K-1), 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)

        inds = xp.nonzero(scores > score_thresh)[0]
        boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
        keep = remove_small_boxes(boxes, min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh, top_k=detections_per_img)
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
        all_labels.append(labels[keep])
    return all_boxes, all_scores, all_labels
