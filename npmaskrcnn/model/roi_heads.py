"""The RoI heads: sample RoIs, pool them, run the box and mask branches.

Training, per image (paper 3.1; tv ``RoIHeads``):

    proposals + gt boxes ─ Matcher(0.5, 0.5) ─ sample 512 at 25 % positive
        → labels (0 = background), regression targets (weights 10, 10, 5, 5)
    box pooler (7x7) → box head → class logits, deltas → fastrcnn_loss
    mask pooler (14x14) on the *positive* RoIs → mask head → mask logits (P, K, 28, 28)
        → maskrcnn_loss against the GT masks RoIAligned onto each RoI

Everything before the poolers is bookkeeping: **no gradient flows into the proposals,
the matching, the sampling or the targets.** Gradients enter the pyramid only through
the two poolers' backward passes (each RoI's gradient scattered into the level it was
pooled from).

Inference: box branch → ``postprocess_detections`` (softmax, decode, clip, score > 0.05,
per-class NMS 0.5, top 100) → mask branch on the final boxes → mask probabilities.
"""

from __future__ import annotations

from ..backend import get_xp
from ..boxes.coder import BoxCoder
from ..boxes.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from ..boxes.ops import box_iou
from ..boxes.sampler import BalancedPositiveNegativeSampler
from ..layers.module import Module
from .box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss
from .mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_loss,
    project_masks_on_boxes,
)
from .poolers import MultiScaleRoIPooler
from .postprocess import mask_probabilities, postprocess_detections


def boxes_to_rois(boxes_per_image):
    """N arrays (R_i, 4) -> (sum R_i, 5) rows [batch_index, x1, y1, x2, y2]."""
    xp = get_xp(*boxes_per_image)
    rows = [xp.concatenate([xp.full((len(b), 1), i, dtype=b.dtype), b], axis=1)
            for i, b in enumerate(boxes_per_image)]
    return xp.concatenate(rows, axis=0)


class RoIHeads(Module):
    """Box and mask branches with their sampling, targets and losses."""

    def __init__(self, cfg, in_channels: int, num_classes: int, scales, rng, dtype):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        pooler_args = dict(scales=list(scales), sampling_ratio=cfg.sampling_ratio,
                           op=cfg.pooler, aligned=cfg.aligned, aggregation=cfg.aggregation)
        self.box_roi_pool = MultiScaleRoIPooler(cfg.box_pool_size, **pooler_args)
        self.mask_roi_pool = MultiScaleRoIPooler(cfg.mask_pool_size, **pooler_args)
        self.box_head = TwoMLPHead(in_channels, cfg.box_pool_size, cfg.representation_size,
                                   rng, dtype)
        self.box_predictor = FastRCNNPredictor(cfg.representation_size, num_classes, rng, dtype)
        self.mask_head = MaskRCNNHeads(in_channels, tuple(cfg.mask_layers), rng, dtype)
        mask_classes = 1 if cfg.class_agnostic_mask else num_classes
        self.mask_predictor = MaskRCNNPredictor(cfg.mask_layers[-1], cfg.mask_layers[-1],
                                                mask_classes, rng, dtype)
        self.box_coder = BoxCoder(weights=tuple(cfg.bbox_reg_weights))
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh,
                               allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image,
                                                       cfg.positive_fraction)
        self.rng = rng
        self.hold_sampling = False  # gradient checks: reuse the last sampled RoIs
        self._held = None

    # ------------------------------------------------------------------ sampling
    def select_training_samples(self, proposals, targets):
        """Append the GT boxes, match, sample, and build every target (no gradient).

        Returns a dict: ``rois`` (R, 5), ``labels`` (R,), ``regression_targets``
        (R, 4), and for the positives ``mask_rois`` (P, 5), ``mask_labels`` (P,),
        ``mask_targets`` (P, M, M).
        """
        cfg = self.cfg
        xp = get_xp(*proposals)
        m = 2 * cfg.mask_pool_size  # the deconv doubles the pooled side
        boxes_s, labels_s, reg_s, mrois, mlabels, mtargets = [], [], [], [], [], []
        for i, (props, t) in enumerate(zip(proposals, targets)):
            gt_boxes, gt_labels = t["boxes"], t["labels"]
            props = xp.concatenate([props, gt_boxes.astype(props.dtype)], axis=0)
            if gt_boxes.shape[0] == 0:
                matched = xp.zeros((props.shape[0],), dtype=xp.int64)
                labels = xp.zeros((props.shape[0],), dtype=xp.int64)
            else:
                matched_raw = self.matcher(box_iou(gt_boxes, props))
                matched = xp.maximum(matched_raw, 0)
                labels = gt_labels[matched].astype(xp.int64)
                labels[matched_raw == BELOW_LOW_THRESHOLD] = 0
                labels[matched_raw == BETWEEN_THRESHOLDS] = -1
            pos, neg = self.sampler(labels, self.rng)
            keep = xp.concatenate([pos, neg])
            b, lab, mt = props[keep], labels[keep], matched[keep]
            if gt_boxes.shape[0]:
                reg = self.box_coder.encode(gt_boxes[mt].astype(b.dtype), b)
            else:
                reg = xp.zeros_like(b)
            boxes_s.append(b)
            labels_s.append(lab)
            reg_s.append(reg)
            npos = int(pos.shape[0])
            mrois.append(xp.concatenate([xp.full((npos, 1), i, dtype=b.dtype), b[:npos]], 1))
            mlabels.append(lab[:npos])
            mtargets.append(project_masks_on_boxes(t["masks"], b[:npos], mt[:npos], m)
                            if npos else xp.zeros((0, m, m), dtype=b.dtype))
        return {"rois": boxes_to_rois(boxes_s), "labels": xp.concatenate(labels_s),
                "regression_targets": xp.concatenate(reg_s, axis=0),
                "mask_rois": xp.concatenate(mrois, axis=0),
                "mask_labels": xp.concatenate(mlabels),
                "mask_targets": xp.concatenate(mtargets, axis=0)}

    # ------------------------------------------------------------------ forward
    def forward(self, features, proposals, image_sizes, targets=None):
        """
        Args:
            features: the maps to pool from (P2..P5, or one map); proposals: N x (R_i, 4).
        Returns:
            (detections, losses): in training ``([], {loss_classifier, loss_box_reg,
            loss_mask})``; in eval ``(N dicts of boxes, labels, scores, masks (D,1,M,M)), {}``.
        """
        if not self.training:
            return self.predict(features, proposals, image_sizes), {}
        if self.hold_sampling and self._held is not None:
            s = self._held
        else:
            s = self._held = self.select_training_samples(proposals, targets)
        cfg = self.cfg
        # box branch on every sampled RoI
        x = self.box_roi_pool(features, s["rois"])           # (R, C, 7, 7)
        x = self.box_head(x)                                 # (R, 1024)
        class_logits, box_regression = self.box_predictor(x)  # (R, K), (R, 4K)
        loss_cls, loss_box, dcls, dbox = fastrcnn_loss(
            class_logits, box_regression, s["labels"], s["regression_targets"],
            cfg.smooth_l1_beta)
        # mask branch on the positive RoIs only
        y = self.mask_roi_pool(features, s["mask_rois"])     # (P, C, 14, 14)
        mask_logits = self.mask_predictor(self.mask_head(y))  # (P, K, 28, 28)
        loss_mask, dmask = maskrcnn_loss(mask_logits, s["mask_targets"], s["mask_labels"],
                                         cfg.mask_loss)
        self.push((dcls, dbox, dmask))
        losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box, "loss_mask": loss_mask}
        return [], losses

    def backward(self, w_classifier=1.0, w_box_reg=1.0, w_mask=1.0):
        """Gradients of the weighted losses w.r.t. the pooled-from features.

        Reverse order of ``forward``: mask branch first, then the box branch; the two
        poolers scatter into the same levels, so their gradients add.
        """
        dcls, dbox, dmask = self.pop()
        dy = self.mask_head.backward(self.mask_predictor.backward(w_mask * dmask))
        dfeat_mask = self.mask_roi_pool.backward(dy)
        dx = self.box_head.backward(self.box_predictor.backward(w_classifier * dcls,
                                                                w_box_reg * dbox))
        dfeat_box = self.box_roi_pool.backward(dx)
        return [a + b for a, b in zip(dfeat_box, dfeat_mask)]

    # ------------------------------------------------------------------ inference
    def predict(self, features, proposals, image_sizes):
        """Detections per image: boxes (D, 4), labels (D,), scores (D,), masks (D,1,M,M)."""
        xp = get_xp(features[0])
        cfg = self.cfg
        x = self.box_head(self.box_roi_pool(features, boxes_to_rois(proposals)))
        class_logits, box_regression = self.box_predictor(x)
        boxes, scores, labels = postprocess_detections(
            class_logits, box_regression, proposals, image_sizes, self.box_coder,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_img)
        m = 2 * cfg.mask_pool_size
        rois = boxes_to_rois(boxes)
        if rois.shape[0]:
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, rois)))
            probs = mask_probabilities(mask_logits, xp.concatenate(labels), cfg.mask_loss)
        else:
            probs = xp.zeros((0, 1, m, m), dtype=features[0].dtype)
        out, start = [], 0
        for b, sc, lb in zip(boxes, scores, labels):
            out.append({"boxes": b, "labels": lb, "scores": sc,
                        "masks": probs[start:start + len(b)]})
            start += len(b)
        return out
