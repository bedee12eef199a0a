"""The Region Proposal Network (Faster R-CNN 3.1; FPN paper 4.1; Mask R-CNN 3.1).

A shared head runs over every pyramid level: a 3x3 conv + ReLU, then two 1x1 convs
giving A objectness logits and 4A box deltas per position. Anchors are matched to the
ground truth (IoU >= 0.7 positive, < 0.3 negative, plus each ground truth's best
anchors: Faster R-CNN 3.1.2), 256 per image are sampled half positive, and the loss is

    L_rpn = BCE(objectness[sampled], labels[sampled])                     (mean)
          + sum_{positives} smoothL1_beta(deltas - targets) / #sampled    (beta = 1/9)

Proposals are decoded from the deltas, kept top-k per level, clipped, NMS'd per level
and cut to ``post_nms_top_n``. **They are constants: no gradient flows through the
proposals** (torchvision detaches the deltas before decoding; so do we, by never
differentiating the decode). Gradients reach the head only through the loss.

Every step works on the whole batch at once -- images as the first axis, levels as
padded rows -- so the number of array operations does not grow with the batch.

Semantics: torchvision ``models/detection/rpn.py`` (``RPNHead``,
``RegionProposalNetwork``, ``concat_box_prediction_layers``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, on_device
from ..boxes.anchors import AnchorGenerator
from ..boxes.coder import BoxCoder
from ..boxes.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from ..boxes.nms import nms_padded
from ..boxes.ops import box_iou, clip_boxes_to_images
from ..boxes.sampler import sample_balanced
from ..layers.activations import sigmoid
from ..layers.module import Module
from ..losses.sigmoid_bce import sigmoid_binary_cross_entropy
from ..losses.smooth_l1 import smooth_l1
from .rpn_head import RPNHead, flatten_predictions, unflatten_gradients  # noqa: F401
from .targets import GroundTruth, Proposals


class AnchorSamples(NamedTuple):
    """The anchors the RPN loss sees, for every image of the batch (no gradient)."""

    positive: Any  # (N, A) bool: sampled anchors matched to a ground truth
    negative: Any  # (N, A) bool: sampled background anchors
    regression_targets: Any  # (N, A, 4) deltas to each anchor's matched ground truth


class RPNLossCache(NamedTuple):
    """The loss gradients w.r.t. the head outputs, per unit of each loss."""

    dobjectness: Any  # (N, sumA) d loss_objectness / d objectness
    dpred_deltas: Any  # (N, sumA, 4) d loss_rpn_box_reg / d pred_deltas
    shapes: list  # the (N, A, H, W) of each level's logits


class RegionProposalNetwork(Module):
    """Anchors, the head, targets and loss (training), and proposals (always).

    ``forward`` returns the proposals (constants), in training the two losses, and the
    anchor samples it used; ``backward(dloss)`` sends the losses' gradients, scaled by
    ``dloss["loss_objectness"]`` and ``dloss["loss_rpn_box_reg"]``, through the head and
    returns the gradients of the pyramid features.
    """

    def __init__(self, cfg, in_channels: int, rng, dtype):
        super().__init__()
        self.cfg = cfg
        # the pyramid levels with anchors; a level without (an empty tuple of sizes) is
        # not looked at, so costs nothing (see RPNConfig.anchor_sizes)
        self.levels = tuple(i for i, sizes in enumerate(cfg.anchor_sizes) if len(sizes))
        if not self.levels:
            raise ValueError(f"RPNConfig.anchor_sizes {cfg.anchor_sizes!r}: no level has an "
                             "anchor size")
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(cfg.anchor_sizes[i]) for i in self.levels),
            aspect_ratios=(tuple(cfg.aspect_ratios),) * len(self.levels))
        # sizes x ratios per position: 3 on each FPN level, 15 on a single C4/C5 level
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RPNHead(in_channels, num_anchors, rng, dtype)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh,
                               allow_low_quality_matches=True)
        self.rng = rng
        self._anchors = {}  # (batch shape, feature sizes, dtype, backend) -> anchors

    # ------------------------------------------------------------------ forward
    def forward(self, batch_shape, image_sizes, features, gt: GroundTruth | None = None,
                proposals: Proposals | None = None, samples: AnchorSamples | None = None):
        """
        Args:
            batch_shape: (Hp, Wp) of the padded batch.
            image_sizes: N x (h, w) of each image inside the batch (after resize).
            features: L maps (N, C, H_l, W_l) (P2..P6 for FPN), one per entry of
                ``anchor_sizes``; the RPN reads those of ``self.levels``.
            gt: the batch's ``GroundTruth``, in training.
            proposals, samples: reuse these instead of computing them (gradient checks).
        Returns:
            proposals: ``Proposals``, no gradient.
            losses: {"loss_objectness", "loss_rpn_box_reg"} (empty in eval).
            samples: the ``AnchorSamples`` of the loss (None in eval).
        """
        if len(features) != len(self.cfg.anchor_sizes):
            raise ValueError(f"RPN: {len(features)} feature maps but anchor sizes for "
                             f"{len(self.cfg.anchor_sizes)} levels")
        features = [features[i] for i in self.levels]
        # (N, sumA), (N, sumA, 4): every level's predictions, rows (level, position, anchor)
        objectness, pred_deltas, shapes = self.head.forward_flat(features)
        anchors, num_per_level = self.anchors(batch_shape, features)  # (sumA, 4)
        if proposals is None:
            proposals = self.filter_proposals(anchors, objectness, pred_deltas, image_sizes,
                                              num_per_level)
        if not self.training:
            return proposals, {}, None
        if samples is None:
            samples = self.sample_anchors(anchors, gt)
        loss_obj, loss_reg, dobj, ddeltas = self.compute_loss(objectness, pred_deltas, samples)
        self.push(RPNLossCache(dobj, ddeltas, shapes))
        return proposals, {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}, samples

    def anchors(self, batch_shape, features):
        """The batch's anchors (sumA, 4) on the features' backend, and A_l per level.

        They depend only on the sizes, so they are made once per size and kept.
        """
        xp = get_xp(features[0])
        sizes = tuple(tuple(f.shape[-2:]) for f in features)
        key = (tuple(batch_shape), sizes, features[0].dtype.str, xp.__name__)
        if key not in self._anchors:
            per_level = self.anchor_generator(tuple(batch_shape), sizes, xp=np,
                                              dtype=features[0].dtype)
            self._anchors[key] = (xp.asarray(np.concatenate(per_level, axis=0)),
                                  [len(a) for a in per_level])
        return self._anchors[key]

    def filter_proposals(self, anchors, objectness, pred_deltas, image_sizes, num_per_level):
        """Top-k per level, decode, clip, drop tiny boxes, NMS per level, keep the best.

        No gradient: the proposals are constants (tv ``filter_proposals``).

        Args:
            anchors: (sumA, 4); objectness: (N, sumA); pred_deltas: (N, sumA, 4).
            image_sizes: N x (h, w); num_per_level: A_l of each level.
        Returns:
            ``Proposals`` with P = min(post_nms_top_n, L * k) columns, best first.
        """
        xp = get_xp(objectness)
        cfg = self.cfg
        pre_n = cfg.pre_nms_top_n_train if self.training else cfg.pre_nms_top_n_test
        post_n = cfg.post_nms_top_n_train if self.training else cfg.post_nms_top_n_test
        n, num_levels = objectness.shape[0], len(num_per_level)
        # (N, L, k): the k best anchors of each level (k = min(pre_n, largest level))
        index, valid = top_k_per_level(objectness, num_per_level, pre_n)
        k = index.shape[2]
        index = index.reshape(n, num_levels * k)  # (N, L*k), level-major
        scores = xp.take_along_axis(objectness, index, axis=1)  # (N, L*k)
        deltas = pred_deltas[xp.arange(n)[:, None], index]  # (N, L*k, 4)
        boxes = clip_boxes_to_images(self.box_coder.decode(deltas, anchors[index]),
                                     image_sizes)
        wh = boxes[..., 2:] - boxes[..., :2]
        valid = valid.reshape(n, num_levels * k) & (wh >= cfg.min_size).all(axis=-1)
        if cfg.score_thresh > 0:
            valid &= sigmoid(scores) >= cfg.score_thresh
        # NMS within each (image, level), all problems at once
        keep = nms_padded(boxes.reshape(n * num_levels, k, 4),
                          scores.reshape(n * num_levels, k),
                          valid.reshape(n * num_levels, k), cfg.nms_thresh)
        keep = keep.reshape(n, num_levels * k)
        # the post_n best kept boxes of each image, by decreasing score (ties: level-major
        # position, as torchvision's batched_nms)
        order = xp.argsort(xp.where(keep, -scores, xp.inf), axis=1, kind="stable")
        order = order[:, :post_n]
        return Proposals(xp.take_along_axis(boxes, order[:, :, None], axis=1),
                         xp.take_along_axis(keep, order, axis=1))

    def sample_anchors(self, anchors, gt: GroundTruth) -> AnchorSamples:
        """Match anchors to ground truth, sample 256 per image, encode targets.

        No gradient. All images at once: (N, G, A) IoUs with padded ground truth.
        """
        xp = get_xp(anchors)
        n = gt.num_images
        quality = box_iou(gt.boxes.reshape(-1, 4), anchors).reshape(n, -1, anchors.shape[0])
        matched = self.matcher(quality, gt.valid)  # (N, A)
        labels = xp.where(matched >= 0, 1, 0)
        labels = xp.where(matched == BETWEEN_THRESHOLDS, -1, labels)
        labels = xp.where(matched == BELOW_LOW_THRESHOLD, 0, labels)
        keys = self.rng.uniform(size=labels.shape, dtype=anchors.dtype)
        positive, negative = sample_balanced(labels, xp.asarray(keys),
                                             self.cfg.batch_size_per_image,
                                             self.cfg.positive_fraction)
        if gt.boxes.shape[1] == 0:  # no object in the batch: nothing to regress
            return AnchorSamples(positive, negative, xp.zeros((n,) + anchors.shape,
                                                              dtype=anchors.dtype))
        # (N, A, 4): each positive anchor's matched box; the others get themselves, so
        # their (unused) targets are 0 rather than log(0) of a padding box
        matched_boxes = gt.boxes[xp.arange(n)[:, None], xp.maximum(matched, 0)]
        matched_boxes = xp.where(positive[:, :, None], matched_boxes, anchors)
        return AnchorSamples(positive, negative, self.box_coder.encode(matched_boxes, anchors))

    def compute_loss(self, objectness, pred_deltas, samples: AnchorSamples):
        """BCE over sampled anchors (mean) + smooth-L1 over positives / #sampled.

        Returns the two losses and their gradients w.r.t. ``objectness`` (N, sumA)
        and ``pred_deltas`` (N, sumA, 4), zero outside the sampled anchors.
        """
        xp = get_xp(objectness)
        pos, neg = samples.positive, samples.negative
        sampled = (pos | neg).astype(objectness.dtype)
        num_sampled = xp.maximum(sampled.sum(), 1)
        loss_obj, dobj = sigmoid_binary_cross_entropy(
            objectness, pos.astype(objectness.dtype), weight=sampled, reduction="sum")
        # smooth-L1 of the positives only: elsewhere the prediction is replaced by its
        # target, so the difference, the loss and the gradient are 0 there
        targets = samples.regression_targets
        loss_reg, ddeltas = smooth_l1(xp.where(pos[:, :, None], pred_deltas, targets), targets,
                                      self.cfg.smooth_l1_beta)
        return (loss_obj / num_sampled, loss_reg / num_sampled, dobj / num_sampled,
                ddeltas / num_sampled)

    # ------------------------------------------------------------------ backward
    def backward(self, dloss: dict):
        """Gradients of ``dloss["loss_objectness"] * loss_objectness + dloss[
        "loss_rpn_box_reg"] * loss_rpn_box_reg`` w.r.t. the features (L maps; None for a
        level the RPN does not look at)."""
        cache = self.pop()
        dobjectness = dloss["loss_objectness"] * cache.dobjectness  # (N, sumA)
        dpred_deltas = dloss["loss_rpn_box_reg"] * cache.dpred_deltas  # (N, sumA, 4)
        dlevels = self.head.backward_flat(dobjectness, dpred_deltas, cache.shapes)
        dfeatures = [None] * len(self.cfg.anchor_sizes)  # one per map forward got
        for i, d in zip(self.levels, dlevels):
            dfeatures[i] = d
        return dfeatures


def top_k_per_level(objectness, num_per_level, k: int):
    """The ``k`` best anchors of each level of each image, by objectness (no gradient).

    Args:
        objectness: (N, sumA) logits, levels one after another.
        num_per_level: A_l of each level.
        k: how many per level (pre_nms_top_n); a level with fewer anchors has padding.
    Returns:
        index: (N, L, k') int64 into the sumA anchors, best first, k' = min(k, max A_l).
        valid: (N, L, k') bool: False for the padding of small levels.
    """
    xp = get_xp(objectness)
    n, num_levels = objectness.shape[0], len(num_per_level)
    k = min(k, max(num_per_level))
    starts = np.cumsum([0] + list(num_per_level[:-1]))
    valid = np.arange(k)[None, :] < np.minimum(num_per_level, k)[:, None]  # (L, k) host
    if not on_device(xp):
        # CPU: one sort per level, of that level's anchors only
        index = np.zeros((n, num_levels, k), dtype=np.int64)
        for level, (start, num) in enumerate(zip(starts, num_per_level)):
            m = min(k, num)
            order = np.argsort(-objectness[:, start:start + num], axis=1)[:, :m]
            index[:, level, :m] = order + start
        return index, np.broadcast_to(valid, index.shape)
    # GPU: the levels as padded rows (N, L, max A_l), -inf in the padding, one sort
    most = max(num_per_level)
    grid = np.arange(most)[None, :]
    padded = np.where(grid < np.asarray(num_per_level)[:, None], starts[:, None] + grid, -1)
    padded = xp.asarray(padded)  # (L, max A_l) anchor index, -1 for padding
    scores = xp.where(padded >= 0, objectness[:, xp.maximum(padded, 0)], -xp.inf)
    order = xp.argsort(-scores, axis=2)[:, :, :k]  # (N, L, k)
    index = xp.take_along_axis(xp.broadcast_to(padded, scores.shape), order, axis=2)
    return xp.maximum(index, 0), xp.broadcast_to(xp.asarray(valid), index.shape)
