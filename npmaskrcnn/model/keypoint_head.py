"""The keypoint branch: keypoints as one-hot masks (paper section 5).

Keypoint R-CNN is Mask R-CNN whose mask branch predicts, for each of K keypoint types
(K = 17 for COCO persons), a *one-hot* m x m mask: the single pixel where that keypoint
lies. On 14x14 RoIAlign features of the positive RoIs (tv ``keypointrcnn_resnet50_fpn``):

    pooled (P, C, 14, 14) -> 8 x [conv3x3 512 + ReLU]              KeypointRCNNHeads
        -> ConvTranspose2d(512, K, 4, stride 2, padding 1) (28x28)
        -> x2 bilinear upsampling -> keypoint_logits (P, K, 56, 56)   KeypointRCNNPredictor

Target (``keypoints_to_heatmap``): the RoI is cut into a 56 x 56 grid and a keypoint's
target is the index of the cell it falls in, ``y_bin * 56 + x_bin``. A keypoint is
*valid* when it is labelled (visibility > 0) and lies inside the RoI.

Loss (``keypointrcnn_loss``): for each valid keypoint, cross-entropy over an m^2-way
softmax of its 56 x 56 logits — the positions compete, because exactly one of them is
right (a per-pixel sigmoid would treat the 3136 pixels as independent and be swamped by
3135 negatives). Averaged over the valid keypoints of the batch; keypoint types and
RoIs are independent.

Inference (``keypoint_inference.py``): each heatmap resized bicubically to its box,
argmax, back to image coordinates.

No gradient flows into the RoIs, the matching or the targets.
"""

from __future__ import annotations

import numpy as np

from ..backend import Generator, get_xp
from ..data.transforms import COCO_KEYPOINT_FLIP
from ..layers.activations import ReLU
from ..layers.conv import Conv2d
from ..layers.conv_transpose import ConvTranspose2d
from ..layers.init import kaiming_normal_fan_out_
from ..layers.module import Module, Sequential
from ..layers.upsample_bilinear import UpsampleBilinear2d
from ..losses.cross_entropy import soft_target_cross_entropy, softmax_cross_entropy

KEYPOINT_SCORES = ("box", "box_x_keypoints")  # KeypointConfig.score: what ranks a detection
KEYPOINT_LAYERS = (512,) * 8  # torchvision's keypoint_layers
NUM_KEYPOINTS = 17  # COCO persons
HEATMAP_SIZE = 56  # 14 (pooled) x 2 (deconv) x 2 (bilinear)


class KeypointRCNNHeads(Sequential):
    """``len(layers)`` x (conv3x3 + ReLU), as tv ``KeypointRCNNHeads``.

    Children ``0, 1, 2, ...`` alternate conv and ReLU (one ReLU module per use), so the
    parameters are ``0.weight, 0.bias, 2.weight, ..., 14.bias`` for eight layers, tv's
    ``roi_heads.keypoint_head.*`` keys. Init as tv: kaiming_normal(fan_out, relu), bias 0.

    Args:
        in_channels: C of the pooled features (the FPN's 256).
        layers: output channels of each conv (tv: eight times 512; smaller for CPU presets).
        rng: a ``Generator`` (None: ``Generator(0)``); dtype: parameter dtype.
    Shapes: (P, in_channels, S, S) -> (P, layers[-1], S, S).
    """

    def __init__(self, in_channels: int, layers=KEYPOINT_LAYERS, rng=None, dtype=np.float32):
        rng = Generator(0) if rng is None else rng
        modules, c = [], in_channels
        for out in layers:
            conv = Conv2d(c, out, 3, padding=1, rng=rng, dtype=dtype)
            kaiming_normal_fan_out_(conv, rng)
            modules += [conv, ReLU(inplace=True)]
            c = out
        super().__init__(*modules)
        self.out_channels = c


class KeypointRCNNPredictor(Module):
    """``kps_score_lowres`` (4x4 stride-2 padding-1 deconv to K maps), then x2 bilinear.

    As tv ``KeypointRCNNPredictor``: parameters ``kps_score_lowres.weight`` (C, K, 4, 4) and
    ``kps_score_lowres.bias`` (K,), kaiming_normal(fan_out, relu) with PyTorch's fan_out
    for the transposed layout (C * 16) and bias 0; the upsampling is
    ``F.interpolate(scale_factor=2.0, mode="bilinear", align_corners=False,
    recompute_scale_factor=False)`` and has no parameters.

    Shapes: (P, C, S, S) -> (P, K, 4S, 4S); S = 14 gives the 56 x 56 heatmaps.
    """

    def __init__(self, in_channels: int, num_keypoints: int = NUM_KEYPOINTS, rng=None,
                 dtype=np.float32):
        super().__init__()
        rng = Generator(0) if rng is None else rng
        self.kps_score_lowres = ConvTranspose2d(in_channels, num_keypoints, 4, stride=2,
                                                padding=1, rng=rng, dtype=dtype)
        kaiming_normal_fan_out_(self.kps_score_lowres, rng)
        self.up_scale = 2
        self.upsample = UpsampleBilinear2d(scale_factor=float(self.up_scale))
        self.out_channels = num_keypoints

    def forward(self, x):
        x = self.kps_score_lowres(x)  # (P, C, S, S) -> (P, K, 2S, 2S)
        return self.upsample(x)  # -> (P, K, 4S, 4S)

    def backward(self, dout):
        return self.kps_score_lowres.backward(self.upsample.backward(dout))


def check_keypoint_config(keypoint) -> None:
    """Refuse, by name, a ``KeypointConfig`` whose options cannot work together."""
    if keypoint.score not in KEYPOINT_SCORES:
        raise ValueError(f"KeypointConfig.score must be one of {KEYPOINT_SCORES}, "
                         f"not {keypoint.score!r}")
    if not keypoint.target_sigma >= 0:
        raise ValueError(f"KeypointConfig.target_sigma must be >= 0 (0: one-hot targets), "
                         f"not {keypoint.target_sigma!r}")
    if keypoint.flip_test and keypoint.num_keypoints != len(COCO_KEYPOINT_FLIP):
        raise ValueError(f"KeypointConfig.flip_test swaps COCO's {len(COCO_KEYPOINT_FLIP)} "
                         f"keypoints left for right, but num_keypoints is "
                         f"{keypoint.num_keypoints}")


def as_boxes(rois):
    """(R, 4) boxes from (R, 4) boxes or (R, 5) rows ``[batch_index, x1, y1, x2, y2]``."""
    if rois.ndim != 2 or rois.shape[1] not in (4, 5):
        raise ValueError(f"expected (R, 4) boxes or (R, 5) rois, got shape {tuple(rois.shape)}")
    return rois[:, -4:]


def keypoints_to_heatmap(keypoints, rois, heatmap_size: int = HEATMAP_SIZE):
    """The target cell of every keypoint in its RoI's heatmap grid (no gradient).

    As tv ``roi_heads.keypoints_to_heatmap``: with the RoI ``(x1, y1, x2, y2)`` and
    ``s = heatmap_size``,

        x_bin = floor((x - x1) * s / (x2 - x1)),   y_bin likewise,
        x_bin = s - 1 where x == x2 exactly (the right edge belongs to the last bin),
        valid = visibility > 0 and 0 <= x_bin < s and 0 <= y_bin < s,
        heatmaps = (y_bin * s + x_bin) * valid.

    The arithmetic is done in the inputs' dtype, in torchvision's order, so the bins
    are the same in float32. Non-finite positions (a zero-width RoI) are invalid.

    Args:
        keypoints: (P, K, 3) ``x, y, visibility`` of the ground truth matched to each RoI.
        rois: (P, 4) boxes, or (P, 5) rows ``[batch_index, x1, y1, x2, y2]``.
        heatmap_size: s, the side of the logit maps (56).
    Returns:
        heatmaps: (P, K) int64 linear index in [0, s*s) (0 where not valid).
        valid: (P, K) bool.
    """
    xp = get_xp(keypoints, rois)
    boxes = as_boxes(rois)
    x, y = keypoints[..., 0], keypoints[..., 1]  # (P, K)
    x2, y2 = boxes[:, 2:3], boxes[:, 3:4]  # (P, 1)
    u, v = keypoint_positions(keypoints, rois, heatmap_size)
    x_bin, y_bin = xp.floor(u), xp.floor(v)
    x_bin = xp.where(x == x2, heatmap_size - 1, x_bin)
    y_bin = xp.where(y == y2, heatmap_size - 1, y_bin)
    # compared as floats, so NaN or inf (a zero-width RoI) is simply out of range
    inside = (x_bin >= 0) & (y_bin >= 0) & (x_bin < heatmap_size) & (y_bin < heatmap_size)
    valid = inside & (keypoints[..., 2] > 0)
    lin = xp.where(valid, y_bin * heatmap_size + x_bin, 0).astype(np.int64)
    return lin, valid


def keypoint_positions(keypoints, rois, heatmap_size: int = HEATMAP_SIZE):
    """Where each keypoint lies in its RoI's heatmap grid, in cells, before any rounding
    (no gradient): ``u = (x - x1) * s / (x2 - x1)``, ``v`` likewise; cell i spans [i, i+1),
    so ``floor(u)`` is ``keypoints_to_heatmap``'s x_bin.

    Args:
        keypoints: (P, K, 3); rois: (P, 4) boxes or (P, 5) rois; heatmap_size: s.
    Returns:
        u, v: (P, K) each, in the keypoints' dtype.
    """
    boxes = as_boxes(rois)
    x1, y1 = boxes[:, 0:1], boxes[:, 1:2]  # (P, 1)
    scale_x = heatmap_size / (boxes[:, 2:3] - x1)
    scale_y = heatmap_size / (boxes[:, 3:4] - y1)
    return (keypoints[..., 0] - x1) * scale_x, (keypoints[..., 1] - y1) * scale_y


def gaussian_heatmap_targets(u, v, heatmap_size: int, sigma: float):
    """Soft targets: for each keypoint a distribution over the s x s cells, a Gaussian of
    standard deviation ``sigma`` cells centred on its exact position (u, v), normalised::

        q[p, k, i, j] = g(v[p, k] - (i + 0.5)) g(u[p, k] - (j + 0.5)) / Z,
        g(d) = exp(-d^2 / (2 sigma^2))

    Separable, so it is the outer product of two normalised 1-D Gaussians (Z is their
    product). Unlike the one-hot cell, it says where *within* its cell the keypoint is.

    Returns:
        q: (P, K, s, s), u's dtype; each map sums to 1 (all zeros for a keypoint so far
        outside the grid that every weight underflows: such a keypoint is not valid).
    """
    xp = get_xp(u, v)
    centres = xp.arange(heatmap_size, dtype=u.dtype) + u.dtype.type(0.5)  # (s,)

    def normalised(pos):  # (P, K) -> (P, K, s)
        g = xp.exp(-((centres - pos[..., None]) ** 2) / u.dtype.type(2 * sigma * sigma))
        # far outside the grid every weight underflows: an all-zero map, not 0/0
        return g / xp.maximum(g.sum(axis=-1, keepdims=True), np.finfo(u.dtype).tiny)

    return normalised(v)[..., :, None] * normalised(u)[..., None, :]


def keypoint_soft_heatmap_loss(keypoint_logits, targets, valid):
    """Cross-entropy of each valid keypoint's m^2-way softmax against a target
    *distribution* (``gaussian_heatmap_targets``), averaged over the valid keypoints::

        loss = mean over valid (p, k) of  -sum_ij q[p, k, i, j] log softmax(logits[p, k])_ij

    With a one-hot q it is ``keypoint_heatmap_loss``. The invalid keypoints are masked
    out (no row is dropped, so there is no host sync): their targets are zero and their
    gradient rows multiplied by 0, and ``soft_target_cross_entropy``'s mean over all P*K
    rows is rescaled to the mean over the valid ones.

    Args:
        keypoint_logits: (P, K, m, m); targets: (P, K, m, m); valid: (P, K) bool.
    Returns:
        loss: 0-d array; 0 (not NaN) when no keypoint is valid or P = 0.
        dkeypoint_logits: (P, K, m, m), zero for the invalid keypoints.
    """
    xp = get_xp(keypoint_logits, targets)
    P, K, H, W = keypoint_logits.shape
    if P * K == 0:
        return xp.zeros((), dtype=keypoint_logits.dtype), xp.zeros_like(keypoint_logits)
    rows = valid.reshape(-1, 1)  # (P*K, 1)
    weight = rows.astype(keypoint_logits.dtype)
    # where(), not a product: an invalid keypoint's map may be NaN (far outside its RoI)
    q = xp.where(rows, targets.reshape(P * K, H * W), 0)
    mean_all, dlogits = soft_target_cross_entropy(keypoint_logits.reshape(P * K, H * W), q)
    scale = (P * K) / xp.maximum(valid.sum(), 1).astype(keypoint_logits.dtype)
    dlogits *= weight * scale
    return (mean_all * scale).astype(keypoint_logits.dtype), dlogits.reshape(P, K, H, W)


def keypoint_heatmap_loss(keypoint_logits, heatmaps, valid):
    """Softmax cross-entropy over the m^2 positions of each valid keypoint.

        loss = mean over valid (p, k) of  -log softmax(logits[p, k].ravel())[heatmaps[p, k]]

    Args:
        keypoint_logits: (P, K, m, m).
        heatmaps: (P, K) int target index in [0, m*m); valid: (P, K) bool.
    Returns:
        loss: 0-d array; 0 (not NaN) when no keypoint is valid or P = 0.
        dkeypoint_logits: (P, K, m, m), zero for the invalid keypoints (and everywhere
            when none is valid).
    """
    xp = get_xp(keypoint_logits, heatmaps)
    P, K, H, W = keypoint_logits.shape
    logits = keypoint_logits.reshape(P * K, H * W)  # one m^2-way softmax per keypoint
    labels = xp.where(valid, heatmaps, -100).reshape(-1)  # invalid: ignore_index
    loss, dlogits = softmax_cross_entropy(logits, labels, ignore_index=-100)
    # softmax_cross_entropy gives NaN (0/0) with nothing to average and a zero gradient;
    # torchvision returns keypoint_logits.sum() * 0 there
    loss = xp.where(valid.any(), loss, xp.zeros((), dtype=loss.dtype))
    return loss, dlogits.reshape(P, K, H, W)


def keypoint_loss(keypoint_logits, samples, target_sigma: float = 0.0):
    """The training loss of the keypoint branch on ``RoIHeads``' samples: against the
    one-hot cells (``keypoint_heatmap_loss``, the paper and tv) when ``target_sigma`` is 0,
    else against Gaussians of that width at the exact positions (``KeypointConfig.
    target_sigma``: ``gaussian_heatmap_targets``, ``keypoint_soft_heatmap_loss``)."""
    if target_sigma == 0:
        return keypoint_heatmap_loss(keypoint_logits, samples.keypoint_heatmaps,
                                     samples.keypoint_valid)
    u, v = samples.keypoint_positions[..., 0], samples.keypoint_positions[..., 1]
    targets = gaussian_heatmap_targets(u, v, keypoint_logits.shape[-1], target_sigma)
    return keypoint_soft_heatmap_loss(keypoint_logits, targets, samples.keypoint_valid)


def keypointrcnn_loss(keypoint_logits, proposals, gt_keypoints, keypoint_matched_idxs):
    """The keypoint loss and its gradient, as tv ``roi_heads.keypointrcnn_loss``.

    Args:
        keypoint_logits: (P, K, m, m) for the positive RoIs of all images, in order.
        proposals: per image, (P_i, 4) positive boxes (or (P_i, 5) rois); sum P_i = P.
        gt_keypoints: per image, (G_i, K, 3) ground-truth keypoints.
        keypoint_matched_idxs: per image, (P_i,) index of each RoI's ground truth.
    Returns:
        (loss, dkeypoint_logits): see ``keypoint_heatmap_loss``.
    Raises:
        ValueError: the heatmaps are not square (as torchvision).
    """
    xp = get_xp(keypoint_logits)
    P, K, H, W = keypoint_logits.shape
    if H != W:
        raise ValueError(f"keypoint_logits must be square heatmaps, got {H} x {W}")
    heatmaps, valid = [], []
    for boxes, kps, midx in zip(proposals, gt_keypoints, keypoint_matched_idxs):
        if midx.shape[0] == 0:
            continue
        h, v = keypoints_to_heatmap(kps[midx], boxes, H)
        heatmaps.append(h)
        valid.append(v)
    if not heatmaps:
        return xp.zeros((), dtype=keypoint_logits.dtype), xp.zeros_like(keypoint_logits)
    return keypoint_heatmap_loss(keypoint_logits, xp.concatenate(heatmaps),
                                 xp.concatenate(valid))
