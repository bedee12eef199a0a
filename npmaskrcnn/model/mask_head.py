"""The mask branch: a small FCN on 14x14 pooled features of the positive RoIs.

    pooled (P, C, 14, 14) -> 4 x [conv3x3 256 + ReLU] -> deconv 2x2/2 + ReLU (28x28)
        -> conv1x1 -> mask_logits (P, K, 28, 28)      (paper Fig. 4, right)

Loss (paper section 3): for a positive RoI whose ground-truth class is k, only channel
k is used — a per-pixel sigmoid with binary cross-entropy averaged over the pixels.
The other K-1 channels get *no gradient*, so classes do not compete; the box branch's
classifier decides the class. The target is the RoI's matched ground-truth mask cut
out by RoIAlign onto the RoI at 28x28 (tv ``project_masks_on_boxes``).

The ablation's alternatives (paper Table 2b and 4.2): ``"softmax"`` — a per-pixel
softmax over the K channels, background as class 0, i.e. multinomial masks that
compete — and class-agnostic masks (one output channel). Both losses train on the
*same* soft targets (see :func:`maskrcnn_loss`), so that Table 2b compares the losses
and nothing else.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..layers.activations import ReLU
from ..layers.conv import Conv2d
from ..layers.conv_transpose import ConvTranspose2d
from ..layers.init import kaiming_normal_fan_out_
from ..layers.module import Sequential
from ..layers.roi_align import roi_align_forward, roi_align_levels_forward
from ..losses.cross_entropy import soft_target_cross_entropy
from ..losses.sigmoid_bce import sigmoid_binary_cross_entropy


class MaskRCNNHeads(Sequential):
    """``len(layers)`` x (conv3x3 + ReLU); names ``{i}.0`` as tv ``MaskRCNNHeads``."""

    def __init__(self, in_channels: int, layers: tuple, rng, dtype):
        blocks, c = [], in_channels
        for out in layers:
            conv = Conv2d(c, out, 3, padding=1, rng=rng, dtype=dtype)
            kaiming_normal_fan_out_(conv, rng)
            blocks.append(Sequential(conv, ReLU(inplace=True)))
            c = out
        super().__init__(*blocks)


class MaskRCNNPredictor(Sequential):
    """``conv5_mask`` (2x2 stride-2 deconv) + ReLU + ``mask_fcn_logits`` (1x1 to K)."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int, rng, dtype):
        super().__init__()
        self.add_module("conv5_mask", ConvTranspose2d(in_channels, dim_reduced, 2, stride=2,
                                                      rng=rng, dtype=dtype))
        self.add_module("relu", ReLU(inplace=True))
        self.add_module("mask_fcn_logits", Conv2d(dim_reduced, num_classes, 1, rng=rng,
                                                  dtype=dtype))
        kaiming_normal_fan_out_(self.conv5_mask, rng)
        # Detectron2's mask predictor init, N(0, 0.001): logits start near 0 (BCE ~ ln 2)
        # instead of the large values kaiming init gives, which matters from scratch
        w = self.mask_fcn_logits.params["weight"]
        w[...] = rng.normal(0.0, 0.001, w.shape, dtype=w.dtype)
        self.mask_fcn_logits.params["bias"][...] = 0


def project_masks_on_boxes(gt_masks, boxes, matched_idxs, m: int):
    """Mask targets: each RoI's matched GT mask, RoIAligned onto the RoI at m x m.

    Args:
        gt_masks: (G, H, W) binary masks of one image; boxes: (P, 4) positive RoIs;
        matched_idxs: (P,) index of each RoI's ground truth.
    Returns:
        (P, m, m) soft targets in [0, 1] (tv ``project_masks_on_boxes``: roi_align with
        spatial_scale 1, adaptive sampling, aligned=False). No gradient.
    """
    xp = get_xp(boxes)
    # RoIAlign's first RoI column picks the map a RoI reads ("batch index"). Here the maps
    # are the G ground-truth masks as a (G, 1, H, W) batch, so the column is the GT index:
    # each RoI reads the mask of the object it was matched to.
    rois = xp.concatenate([matched_idxs[:, None].astype(boxes.dtype), boxes], axis=1)
    masks = gt_masks[:, None].astype(boxes.dtype)  # (G, 1, H, W)
    out, _ = roi_align_forward(masks, rois, (m, m), 1.0, sampling_ratio=-1, aligned=False)
    return out[:, 0]


def project_masks(gt_masks, mask_rois, matched_idxs, m: int):
    """``project_masks_on_boxes`` for RoIs of several images at once.

    Each image's GT masks are one "level" of ``roi_align_levels_forward`` (a GPU reads
    them all in one gather; a CPU loops over the images).

    Args:
        gt_masks: N arrays (G_i, H_i, W_i), binary.
        mask_rois: (P, 5) ``[image, x1, y1, x2, y2]`` positive RoIs.
        matched_idxs: (P,) index of each RoI's gt within its image.
        m: the target side M.
    Returns:
        (P, M, M) soft targets in [0, 1]. No gradient.
    """
    xp = get_xp(mask_rois)
    dtype = mask_rois.dtype
    maps = [masks[:, None].astype(dtype) for masks in gt_masks]  # N x (G_i, 1, H_i, W_i)
    # image i's masks are "level" i and the GT index is the batch column within it, as in
    # project_masks_on_boxes: each RoI reads the mask of its matched object
    rois = xp.concatenate([matched_idxs[:, None].astype(dtype), mask_rois[:, 1:]], axis=1)
    out, _ = roi_align_levels_forward(maps, rois, mask_rois[:, 0].astype(np.int64),
                                      [1.0] * len(maps), (m, m), sampling_ratio=-1,
                                      aligned=False)
    return out[:, 0]


def maskrcnn_loss(mask_logits, mask_targets, labels, mode: str = "sigmoid"):
    """The mask loss and its gradient.

    Both modes train on the same targets t (P, M, M): the matched GT mask RoIAligned onto
    the RoI, *soft* values in [0, 1] where a target pixel straddles the object's edge
    (tv ``project_masks_on_boxes``, whose BCE takes them as they are).

    - "sigmoid" (paper section 3, the default): per-pixel sigmoid on channel k = the RoI's
      class only, binary cross-entropy against t, mean over the pixels;
      loss = -mean[t log s(z_k) + (1 - t) log(1 - s(z_k))]. No other channel gets gradient.
    - "softmax" (paper Table 2b, "a per-pixel softmax and a multinomial loss"): softmax
      over the K channels at each pixel, cross-entropy against the distribution that puts
      t on class k and 1 - t on background (class 0), 0 elsewhere; mean over the pixels.
      It is the multinomial counterpart of the same BCE: with K = 2 it equals the sigmoid
      loss on the logit difference z_k - z_0 (tested).

    Why soft targets for both: the paper states only the per-pixel losses; the targets
    it uses for the sigmoid are the RoIAligned masks that torchvision also uses, so the
    sigmoid arm stays the model of every other table (Table 2b's sigmoid row *is* the
    RoIAlign (avg) model). Binarising the softmax arm's targets at 0.5, as this function
    did before, changed the targets as well as the loss and confounded Table 2b.

    Args:
        mask_logits: (P, K, M, M) (K = 1 for class-agnostic masks; "softmax" needs K >= 2);
        mask_targets: (P, M, M) in [0, 1]; labels: (P,) ground-truth classes (>= 1).
        mode: "sigmoid" or "softmax".
    Returns:
        (loss, dmask_logits (P, K, M, M)). With P = 0 the loss is 0 and the gradient empty.
    """
    xp = get_xp(mask_logits)
    p, k = mask_logits.shape[:2]
    if mode not in ("sigmoid", "softmax"):
        raise ValueError(f"unknown mask loss {mode!r}: choose 'sigmoid' or 'softmax'")
    if mode == "softmax" and k < 2:
        raise ValueError("the softmax mask loss needs class-specific masks (K >= 2 channels, "
                         "background and the classes); got one channel (class_agnostic_mask)")
    dlogits = xp.zeros_like(mask_logits)
    if p == 0:
        return xp.zeros((), mask_logits.dtype), dlogits
    rows = xp.arange(p)
    if mode == "sigmoid":
        channel = labels if k > 1 else xp.zeros_like(labels)
        loss, dsel = sigmoid_binary_cross_entropy(mask_logits[rows, channel], mask_targets)
        dlogits[rows, channel] = dsel  # every other channel: zero gradient, no competition
        return loss, dlogits
    # softmax: the target distribution q (P, K, M, M): t on the class, 1 - t on background
    targets = mask_targets.astype(mask_logits.dtype)
    q = xp.zeros_like(mask_logits)
    q[rows, labels] = targets
    q[:, 0] += 1 - targets
    return soft_target_cross_entropy(mask_logits, q)
