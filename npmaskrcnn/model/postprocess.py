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

from ..backend import asnumpy, get_xp, on_device
from ..boxes.nms import batched_nms
from ..boxes.ops import clip_boxes_to_images
from ..layers.activations import sigmoid
from .resize import resize_bilinear


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
    # truncation toward zero, as torch's .to(int64)
    int_boxes = expand_boxes(boxes, scale).astype(np.int64)
    dtype = masks.dtype if masks.dtype.kind == "f" else np.dtype(np.float32)
    if on_device(xp):  # every mask at once: see paste_masks_batched
        return paste_masks_batched(masks.astype(dtype, copy=False), int_boxes, im_h, im_w)
    out = xp.zeros((masks.shape[0], im_h, im_w), dtype=dtype)
    for i, box in enumerate(asnumpy(int_boxes).tolist()):  # the boxes as Python ints
        paste_mask_in_image(masks[i], box, im_h, im_w, out=out[i])
    return out


def paste_masks_batched(masks, int_boxes, im_h: int, im_w: int):
    """``paste_mask_in_image`` of D masks at once, as two batched matrix products.

    Resizing mask d to its box and placing it is linear in the mask: with A_y (H, M')
    the bilinear row weights of the box's rows (zero rows outside the box) and A_x
    (W, M') those of its columns, ``out[d] = A_y[d] @ mask[d] @ A_x[d]^T``. The weights
    follow ``resize_bilinear`` (``align_corners=False``: sample ``(i + 0.5) * M'/h - 0.5``
    clamped at 0, the scale divided in float32), computed for every (d, pixel) at once.
    The CPU loop of ``paste_mask_in_image`` touches only each box's pixels, which is less
    work; on a GPU a handful of launches beats D resizes.

    Args:
        masks: (D, M', M') float, already padded (``expand_masks``).
        int_boxes: (D, 4) int64 inclusive pixel corners (``expand_boxes``, truncated).
        im_h, im_w: image size.
    Returns:
        (D, im_h, im_w).
    """
    xp = get_xp(masks)
    dtype = masks.dtype
    m = masks.shape[-1]
    x1, y1, x2, y2 = (int_boxes[:, k:k + 1] for k in range(4))  # (D, 1) each

    def weights(start, stop, size):
        """(D, size, M') interpolation weights of the pixels [start, stop] of each box."""
        out_len = xp.maximum(stop - start + 1, 1)  # the box's side in pixels, at least 1
        scale = (np.float32(m) / out_len.astype(np.float32)).astype(np.float64)
        d = xp.arange(size)[None, :] - start  # (D, size) position inside the box
        src = xp.maximum((scale * (d + 0.5) - 0.5).astype(dtype), 0)
        i0 = xp.minimum(xp.floor(src).astype(np.int64), m - 1)
        l1 = xp.clip(src - i0.astype(dtype), 0, 1)
        i1 = xp.minimum(i0 + 1, m - 1)
        inside = (d >= 0) & (d <= stop - start)  # pixels of the box (none if stop < start)
        cols = xp.arange(m)[None, None, :]
        return xp.where(inside[..., None], (cols == i0[..., None]) * (1 - l1)[..., None]
                        + (cols == i1[..., None]) * l1[..., None], 0).astype(dtype)

    A_y = weights(y1, y2, im_h)  # (D, H, M')
    A_x = weights(x1, x2, im_w)  # (D, W, M')
    # columns first, as resize_bilinear: (D, M', M') @ (D, M', W) -> (D, M', W)
    return A_y @ (masks @ A_x.transpose(0, 2, 1))  # (D, H, M') @ (D, M', W) -> (D, H, W)


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
    return sigmoid(mask_logits[xp.arange(d), channel][:, None])  # (D, 1, M, M)


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
        class_logits: (N*P, K) for the proposals of all images, image by image.
        box_regression: (N*P, 4K) class-specific deltas.
        proposals: the RPN's ``Proposals`` (boxes (N, P, 4), valid (N, P)); padding
            rows produce no candidate.
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
    xp = get_xp(class_logits, box_regression, proposals.boxes)
    n, p = proposals.valid.shape
    num_classes = class_logits.shape[-1]
    pred_boxes = box_coder.decode(box_regression, proposals.boxes.reshape(n * p, 4))
    # (N*P, 4K) -> (N, P, K, 4), each image's boxes clipped to it
    pred_boxes = clip_boxes_to_images(pred_boxes.reshape(n, p, num_classes, 4), image_sizes)
    pred_scores = softmax(class_logits).reshape(n, p, num_classes)
    # drop the background class 0; every (proposal, class) pair is a candidate
    boxes = pred_boxes[:, :, 1:].reshape(n, -1, 4)  # (N, P * (K-1), 4)
    scores = pred_scores[:, :, 1:].reshape(n, -1)
    labels = xp.broadcast_to(xp.arange(1, num_classes, dtype=np.int64), (p, num_classes - 1))
    labels = labels.reshape(-1)
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = ((scores > score_thresh) & (wh >= min_size).all(axis=-1)
          & xp.repeat(proposals.valid, num_classes - 1, axis=1))
    all_boxes, all_scores, all_labels = [], [], []
    for i in range(n):
        candidates = xp.flatnonzero(ok[i])  # host round-trip: how many candidates
        b, s, lb = boxes[i, candidates], scores[i, candidates], labels[candidates]
        keep = batched_nms(b, s, lb, nms_thresh, top_k=detections_per_img)
        all_boxes.append(b[keep])
        all_scores.append(s[keep])
        all_labels.append(lb[keep])
    return all_boxes, all_scores, all_labels
