"""The RoI heads: sample RoIs, pool them, run the box, mask and keypoint branches.

Training (paper 3.1 and 5; tv ``RoIHeads``), all images of the batch at once:

    proposals + gt boxes ─ Matcher(0.5, 0.5) ─ sample 512 per image at 25 % positive
        → labels (0 = background), regression targets (weights 10, 10, 5, 5)
    box pooler (7x7) → box head → class logits, deltas → fastrcnn_loss
    mask pooler (14x14) on the *positive* RoIs → mask head → mask logits (P, K, 28, 28)
        → maskrcnn_loss against the GT masks RoIAligned onto each RoI      (if mask_on)
    keypoint pooler (14x14) on the same positive RoIs (all as tv, or the first
        ``KeypointConfig.rois_per_image`` of each image; scaled by ``roi_scale``, 1 as tv)
        → keypoint head → keypoint logits
        (P, 17, 56, 56) → a softmax over the 56² positions of each visible keypoint of the
        matched GT (keypoints_to_heatmap, keypoint_heatmap_loss)         (if keypoint.on)

Everything before the poolers is bookkeeping: **no gradient flows into the proposals,
the matching, the sampling or the targets.** Gradients enter the pyramid only through
the poolers' backward passes (each RoI's gradient scattered into the level it was
pooled from).

Inference: box branch → ``postprocess_detections`` (softmax, decode, clip, score > 0.05,
per-class NMS 0.5, top 100) → mask branch on the final boxes → mask probabilities;
keypoint branch on the same boxes (scaled likewise) → ``heatmaps_to_keypoints``; with
``KeypointConfig.score == "box_x_keypoints"`` each detection's score is multiplied by its
keypoints' mean confidence (``keypoint_confidence``) and the detections re-sorted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import asnumpy, get_xp
from ..boxes.coder import BoxCoder
from ..boxes.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from ..boxes.ops import box_iou_batched
from ..boxes.sampler import sample_balanced, sampled_first
from ..data.transforms import COCO_KEYPOINT_FLIP
from ..layers.module import Module
from .box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss
from .keypoint_head import (
    KeypointRCNNHeads,
    KeypointRCNNPredictor,
    check_keypoint_config,
    keypoint_loss,
    keypoint_positions,
    keypoints_to_heatmap,
)
from .keypoint_inference import heatmaps_to_keypoints, keypoint_confidence
from .mask_head import MaskRCNNHeads, MaskRCNNPredictor, maskrcnn_loss, project_masks
from .poolers import MultiScaleRoIPooler
from .postprocess import expand_boxes, mask_probabilities, postprocess_detections
from .targets import GroundTruth, Proposals

IGNORE = -100  # label of a filler row: ignored by the classification loss (F.cross_entropy)


def boxes_to_rois(boxes_per_image):
    """N arrays (R_i, 4) -> (sum R_i, 5) rows [batch_index, x1, y1, x2, y2]."""
    xp = get_xp(*boxes_per_image)
    rows = [xp.concatenate([xp.full((len(b), 1), i, dtype=b.dtype), b], axis=1)
            for i, b in enumerate(boxes_per_image)]
    return xp.concatenate(rows, axis=0)


class RoISamples(NamedTuple):
    """The RoIs the heads train on and their targets (no gradient); R = N * B rows,
    image by image, each image's sampled positives first."""

    rois: Any  # (R, 5) [image, x1, y1, x2, y2]
    labels: Any  # (R,) int64 class (0 background), IGNORE for filler rows
    regression_targets: Any  # (R, 4) deltas to the matched gt (0 unless positive)
    mask_rois: Any  # (P, 5) the positive RoIs (of the mask and the keypoint branch)
    mask_labels: Any  # (P,) their classes
    mask_targets: Any  # (P, M, M) their matched gt masks, RoIAligned onto them (or None)
    # the keypoint branch: the positives it trains on (all, or a subset, see
    # keypoint_positives), their RoIs (see keypoint_rois) and targets
    keypoint_heatmaps: Any = None  # (P', K) int64 target cell y * 56 + x of each keypoint
    keypoint_valid: Any = None  # (P', K) bool: labelled and inside the RoI
    keypoint_rois: Any = None  # (P', 5)
    keypoint_positions: Any = None  # (P', K, 2) in cells, with KeypointConfig.target_sigma


class RoIHeadsCache(NamedTuple):
    """The loss gradients w.r.t. the heads' outputs, per unit of each loss."""

    dclass_logits: Any  # (R, K)
    dbox_regression: Any  # (R, 4K)
    dmask_logits: Any  # (P, K, M, M), or None without the mask branch
    dkeypoint_logits: Any = None  # (P, K, 56, 56), or None without the keypoint branch


class RoIHeads(Module):
    """Box, mask and keypoint branches with their sampling, targets and losses.

    Args:
        cfg: the ``RoIHeadsConfig`` (``mask_on``: build the mask branch).
        in_channels: channels of the pooled feature maps.
        num_classes: K, background included.
        scales: spatial scale of each feature map pooled from (1/4 ... 1/32 for FPN).
        rng: the model's ``Generator`` (the sampler's random keys).
        dtype: float dtype of the parameters.
        keypoint: the ``KeypointConfig``; its branch is built when ``keypoint.on``.
    """

    def __init__(self, cfg, in_channels: int, num_classes: int, scales, rng, dtype,
                 keypoint=None):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.mask_on = cfg.mask_on
        self.keypoint_on = keypoint is not None and keypoint.on
        pooler_args = dict(scales=list(scales), sampling_ratio=cfg.sampling_ratio,
                           op=cfg.pooler, aligned=cfg.aligned, aggregation=cfg.aggregation,
                           canonical_scale=cfg.canonical_scale)
        self.box_roi_pool = MultiScaleRoIPooler(cfg.box_pool_size, **pooler_args)
        if self.mask_on:
            self.mask_roi_pool = MultiScaleRoIPooler(cfg.mask_pool_size, **pooler_args)
        self.box_head = TwoMLPHead(in_channels, cfg.box_pool_size, cfg.representation_size,
                                   rng, dtype)
        self.box_predictor = FastRCNNPredictor(cfg.representation_size, num_classes, rng, dtype)
        if self.mask_on:
            self.mask_head = MaskRCNNHeads(in_channels, tuple(cfg.mask_layers), rng, dtype)
            mask_classes = 1 if cfg.class_agnostic_mask else num_classes
            self.mask_predictor = MaskRCNNPredictor(cfg.mask_layers[-1], cfg.mask_layers[-1],
                                                    mask_classes, rng, dtype)
        if self.keypoint_on:  # the pooler's op, aligned and aggregation are the box/mask ones
            self.keypoint_roi_pool = MultiScaleRoIPooler(
                keypoint.pool_size, **{**pooler_args, "sampling_ratio": keypoint.sampling_ratio})
            self.keypoint_head = KeypointRCNNHeads(in_channels, tuple(keypoint.layers), rng,
                                                   dtype)
            self.keypoint_predictor = KeypointRCNNPredictor(keypoint.layers[-1],
                                                            keypoint.num_keypoints, rng, dtype)
            self.heatmap_size = 4 * keypoint.pool_size  # deconv x2, bilinear x2: 56
            self.keypoint_roi_scale = keypoint.roi_scale
            self.keypoint_rois_per_image = keypoint.rois_per_image
            check_keypoint_config(keypoint)  # score, target_sigma, flip_test: by name
            self.keypoint_score = keypoint.score
            self.keypoint_target_sigma = float(keypoint.target_sigma)
        self.box_coder = BoxCoder(weights=tuple(cfg.bbox_reg_weights))
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh,
                               allow_low_quality_matches=False)
        self.rng = rng

    # ------------------------------------------------------------------ sampling
    def select_training_samples(self, proposals: Proposals, gt: GroundTruth) -> RoISamples:
        """Append the GT boxes, match, sample, and build every target (no gradient).

        Per image (tv ``select_training_samples``): the ground-truth boxes join the
        proposals (so every object has at least one perfect RoI); each candidate takes
        the label of the gt it overlaps most if IoU >= 0.5, else background; B =
        ``batch_size_per_image`` are sampled with at most a quarter positive; positives
        get regression targets and, for the mask branch, mask targets; for the keypoint
        branch, the heatmap cell of each keypoint of their matched gt.
        """
        cfg = self.cfg
        xp = get_xp(proposals.boxes)
        n, g = gt.boxes.shape[:2]
        rows = xp.arange(n)[:, None]
        candidates = xp.concatenate([proposals.boxes, gt.boxes.astype(proposals.boxes.dtype)],
                                    axis=1)  # (N, P + G, 4)
        valid = xp.concatenate([proposals.valid, gt.valid], axis=1)
        if g:
            matched = self.matcher(box_iou_batched(gt.boxes, candidates), gt.valid)
            labels = gt.labels[rows, xp.maximum(matched, 0)]  # (N, P + G)
            labels = xp.where(matched == BELOW_LOW_THRESHOLD, 0, labels)
            labels = xp.where(matched == BETWEEN_THRESHOLDS, -1, labels)
        else:  # no object in the batch: every candidate is background
            matched = xp.zeros(valid.shape, dtype=np.int64)
            labels = xp.zeros(valid.shape, dtype=np.int64)
        labels = xp.where(valid, labels, -1)  # padding proposals are never sampled
        keys = xp.asarray(self.rng.uniform(size=labels.shape, dtype=candidates.dtype))
        pos, neg = sample_balanced(labels, keys, cfg.batch_size_per_image,
                                   cfg.positive_fraction)
        # (N, B): each image's sampled RoIs, positives first, filler marked invalid
        index, sampled = sampled_first(pos, neg, keys,
                                       min(cfg.batch_size_per_image, labels.shape[1]))
        boxes = candidates[rows, index]  # (N, B, 4)
        positive = pos[rows, index]
        matched = xp.maximum(matched[rows, index], 0)
        # regression targets of the positives; every other row gets the unit box for both
        # (target 0; a padding row's empty box would give 0/0)
        unit = xp.asarray(np.array([0, 0, 1, 1], dtype=boxes.dtype))
        target_boxes = xp.where(positive[..., None], gt.boxes[rows, matched] if g else boxes,
                                unit)
        reference_boxes = xp.where(positive[..., None], boxes, unit)
        b = index.shape[1]
        rois = xp.concatenate([xp.broadcast_to(rows[..., None], (n, b, 1)).astype(boxes.dtype),
                               boxes], axis=2).reshape(n * b, 5)
        roi_labels = xp.where(sampled, labels[rows, index], IGNORE).reshape(n * b)
        # the positives are a prefix of each image's rows: their count per image, read
        # by the host, sizes the mask branch (the one host round-trip of sampling)
        num_pos = asnumpy(positive.sum(axis=1)).tolist()
        first = np.concatenate([i * b + np.arange(k) for i, k in enumerate(num_pos)]
                               + [np.zeros(0, np.int64)])
        first = xp.asarray(first.astype(np.int64))
        mask_rois = rois[first]
        matched_first = matched.reshape(-1)[first]  # (P,) each positive's gt in its image
        mask_targets = None
        if self.mask_on:
            m = 2 * cfg.mask_pool_size  # the deconv doubles the pooled side
            if first.shape[0] and gt.masks is not None:
                mask_targets = project_masks(gt.masks, mask_rois, matched_first, m)
            else:
                mask_targets = xp.zeros((first.shape[0], m, m), dtype=boxes.dtype)
        heatmaps = valid_keypoints = keypoint_rois = positions = None
        if self.keypoint_on:
            if gt.keypoints is None:
                raise ValueError("the keypoint branch needs ground-truth keypoints: the "
                                 "targets have no 'keypoints'")
            image = np.repeat(np.arange(n), num_pos)  # (P,) image of each positive
            positives, matched_kp = mask_rois, matched_first
            kept = self.keypoint_positives(num_pos)  # those that train the branch
            if kept is not None:
                image, kept = image[kept], xp.asarray(kept)
                positives, matched_kp = mask_rois[kept], matched_first[kept]
            keypoint_rois = self.keypoint_rois(positives)
            kps = gt.keypoints[xp.asarray(image), matched_kp]
            heatmaps, valid_keypoints = keypoints_to_heatmap(kps, keypoint_rois, self.heatmap_size)
            if self.keypoint_target_sigma > 0:  # the centres of the soft targets
                positions = xp.stack(keypoint_positions(kps, keypoint_rois, self.heatmap_size), -1)
        return RoISamples(
            rois, roi_labels,
            self.box_coder.encode(target_boxes, reference_boxes).reshape(n * b, 4),
            mask_rois, roi_labels[first], mask_targets, heatmaps, valid_keypoints, keypoint_rois,
            positions)

    def keypoint_positives(self, num_pos: list):
        """Which of the P positives (``num_pos`` per image, a prefix of each image's rows in
        random-key order) train the keypoint branch: the first
        ``KeypointConfig.rois_per_image`` of each image, as a host index array; None (all
        of them) when that is None, as torchvision."""
        cap = self.keypoint_rois_per_image
        if cap is None:
            return None
        starts = np.cumsum([0] + num_pos[:-1])
        kept = [start + np.arange(min(k, cap)) for start, k in zip(starts, num_pos)]
        return np.concatenate(kept + [np.zeros(0, np.int64)])

    def keypoint_rois(self, rois):
        """(R, 5) RoIs of the keypoint branch: ``rois`` with each box scaled about its centre
        by ``KeypointConfig.roi_scale`` (``rois`` itself at 1.0, torchvision's rule)."""
        if self.keypoint_roi_scale == 1.0:
            return rois
        xp = get_xp(rois)
        return xp.concatenate([rois[:, :1], expand_boxes(rois[:, 1:], self.keypoint_roi_scale)],
                              axis=1)

    # ------------------------------------------------------------------ forward
    def forward(self, features, proposals: Proposals, image_sizes, gt: GroundTruth | None = None,
                samples: RoISamples | None = None, mirrored=None):
        """
        Args:
            features: the maps to pool from (P2..P5, or one map).
            proposals: the RPN's ``Proposals``.
            image_sizes: N x (h, w) of the resized images.
            gt: the batch's ``GroundTruth``, in training.
            samples: reuse these ``RoISamples`` instead of sampling (gradient checks).
            mirrored: eval, ``KeypointConfig.flip_test``: the maps of the mirrored images
                (``mirror_batch``).
        Returns:
            training: ``(losses, samples)`` with losses ``{loss_classifier, loss_box_reg,
            loss_mask, loss_keypoint}`` (those of the branches built); eval: N dicts of
            detections (boxes, labels, scores, masks (D, 1, M, M), keypoints (D, K, 3),
            keypoints_scores (D, K)).
        """
        if not self.training:
            return self.predict(features, proposals, image_sizes, mirrored)
        if samples is None:
            samples = self.select_training_samples(proposals, gt)
        cfg = self.cfg
        # box branch on every sampled RoI
        x = self.box_roi_pool(features, samples.rois)          # (R, C, 7, 7)
        x = self.box_head(x)                                   # (R, 1024)
        class_logits, box_regression = self.box_predictor(x)   # (R, K), (R, 4K)
        loss_cls, loss_box, dcls, dbox = fastrcnn_loss(
            class_logits, box_regression, samples.labels, samples.regression_targets,
            cfg.smooth_l1_beta)
        losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
        dmask = dkeypoint = None
        if self.mask_on:  # mask branch on the positive RoIs only
            y = self.mask_roi_pool(features, samples.mask_rois)    # (P, C, 14, 14)
            mask_logits = self.mask_predictor(self.mask_head(y))   # (P, K, 28, 28)
            losses["loss_mask"], dmask = maskrcnn_loss(mask_logits, samples.mask_targets,
                                                       samples.mask_labels, cfg.mask_loss)
        if self.keypoint_on:  # keypoint branch on the same RoIs
            # (P, 17, 56, 56) logits of the positives
            keypoint_logits = self.keypoint_branch(features, samples.keypoint_rois)
            losses["loss_keypoint"], dkeypoint = keypoint_loss(
                keypoint_logits, samples, self.keypoint_target_sigma)
        self.push(RoIHeadsCache(dcls, dbox, dmask, dkeypoint))
        return losses, samples

    def backward(self, dloss: dict):
        """Gradients of the weighted losses w.r.t. the pooled-from features.

        ``dloss[name]`` is d(total loss)/d(loss ``name``) -- the loss weight. Reverse
        order of ``forward``: the keypoint branch first, then the mask branch, then the box
        branch; the poolers scatter into the same levels, so their gradients add.
        """
        cache = self.pop()
        dfeatures = []  # per branch: L arrays, the gradient its pooler scattered
        if self.keypoint_on:
            dkeypoint_logits = dloss["loss_keypoint"] * cache.dkeypoint_logits
            dz = self.keypoint_head.backward(self.keypoint_predictor.backward(dkeypoint_logits))
            dfeatures.append(self.keypoint_roi_pool.backward(dz))
        if self.mask_on:
            dmask_logits = dloss["loss_mask"] * cache.dmask_logits
            dy = self.mask_head.backward(self.mask_predictor.backward(dmask_logits))
            dfeatures.append(self.mask_roi_pool.backward(dy))
        dclass_logits = dloss["loss_classifier"] * cache.dclass_logits
        dbox_regression = dloss["loss_box_reg"] * cache.dbox_regression
        dx = self.box_head.backward(self.box_predictor.backward(dclass_logits, dbox_regression))
        dfeat = self.box_roi_pool.backward(dx)
        for branch in dfeatures:
            dfeat = [a + b for a, b in zip(dfeat, branch)]
        return dfeat

    # ------------------------------------------------------------------ inference
    def keypoint_branch(self, features, rois):
        """Keypoint logits (R, K, 56, 56) of rois (R, 5): pooler, head, predictor."""
        return self.keypoint_predictor(self.keypoint_head(self.keypoint_roi_pool(features,
                                                                                 rois)))

    def mirrored_keypoint_logits(self, mirrored, rois, image_sizes):
        """The keypoint logits of ``rois`` seen in the mirrored images, mirrored back.

        In image n (width w_n) the box x1..x2 is w_n - x2..w_n - x1 in the mirror, and its
        heatmap bin j (of m, left to right) is bin m - 1 - j of the box: the mirror's logits,
        columns reversed and left and right keypoints swapped (``COCO_KEYPOINT_FLIP``), are
        a second estimate of the same heatmaps.
        """
        xp = get_xp(rois)
        widths = xp.asarray([w for _, w in image_sizes], dtype=rois.dtype)
        w = widths[rois[:, 0].astype(np.int64)]  # (R,) the width of each RoI's image
        flipped = xp.stack([rois[:, 0], w - rois[:, 3], rois[:, 2], w - rois[:, 1],
                            rois[:, 4]], axis=1)
        logits = self.keypoint_branch(mirrored, flipped)
        return logits[:, list(COCO_KEYPOINT_FLIP), :, ::-1]

    def predict(self, features, proposals: Proposals, image_sizes, mirrored=None):
        """Detections per image: boxes (D, 4), labels (D,), scores (D,), and the branches'
        masks (D, 1, M, M), keypoints (D, K, 3) ``x, y, 1`` and keypoints_scores (D, K).
        Sorted by score, highest first; the score is the box classifier's (tv), or that times
        the keypoints' confidence (``KeypointConfig.score``). ``mirrored``: the maps of the
        mirrored images, whose keypoint heatmaps are averaged in (``mirrored_keypoint_logits``).
        """
        xp = get_xp(features[0])
        cfg = self.cfg
        n, p = proposals.valid.shape
        rows = xp.broadcast_to(xp.arange(n)[:, None, None], (n, p, 1))
        rois = xp.concatenate([rows.astype(proposals.boxes.dtype), proposals.boxes],
                              axis=2).reshape(n * p, 5)
        x = self.box_head(self.box_roi_pool(features, rois))
        class_logits, box_regression = self.box_predictor(x)
        boxes, scores, labels = postprocess_detections(
            class_logits, box_regression, proposals, image_sizes, self.box_coder,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_img)
        rois = boxes_to_rois(boxes)
        dtype = features[0].dtype
        branches = {}  # name -> (D, ...) for the detections of all images, in order
        confidence = None  # (D,) keypoint confidence, with KeypointConfig.score "box_x_keypoints"
        if self.mask_on:
            m = 2 * cfg.mask_pool_size
            branches["masks"] = xp.zeros((0, 1, m, m), dtype=dtype)
            if rois.shape[0]:
                mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features,
                                                                                   rois)))
                branches["masks"] = mask_probabilities(mask_logits, xp.concatenate(labels),
                                                       cfg.mask_loss)
        if self.keypoint_on:
            k = self.keypoint_predictor.out_channels
            branches["keypoints"] = xp.zeros((0, k, 3), dtype=dtype)
            branches["keypoints_scores"] = xp.zeros((0, k), dtype=dtype)
            if rois.shape[0]:
                keypoint_rois = self.keypoint_rois(rois)
                keypoint_logits = self.keypoint_branch(features, keypoint_rois)  # (D, K, 56, 56)
                if mirrored is not None:  # flip test: the mean of the two views' logits
                    keypoint_logits = (keypoint_logits + self.mirrored_keypoint_logits(
                        mirrored, keypoint_rois, image_sizes)) / 2
                # one heatmap resize per detection, to its own box size: the boxes are read
                # by the host once (see heatmaps_to_keypoints)
                branches["keypoints"], branches["keypoints_scores"] = heatmaps_to_keypoints(
                    keypoint_logits, keypoint_rois)
                if self.keypoint_score == "box_x_keypoints":
                    confidence = keypoint_confidence(keypoint_logits).mean(axis=1)  # (D,)
        out, start = [], 0
        for b, sc, lb in zip(boxes, scores, labels):
            det = {"boxes": b, "labels": lb, "scores": sc,
                   **{k: v[start:start + len(b)] for k, v in branches.items()}}
            if confidence is not None:  # rank by box x keypoints, highest first again
                det["scores"] = sc * confidence[start:start + len(b)]
                order = xp.argsort(-det["scores"], kind="stable")
                det = {k: v[order] for k, v in det.items()}
            out.append(det)
            start += len(b)
        return out
