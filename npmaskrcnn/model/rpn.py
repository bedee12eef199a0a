"""The Region Proposal Network (Ren et al. 2015; FPN paper section 4.1; Mask R-CNN 3.1).

A shared head runs over every pyramid level: a 3x3 conv + ReLU, then two 1x1 convs
giving A objectness logits and 4A box deltas per position. Anchors are matched to the
ground truth (IoU >= 0.7 positive, < 0.3 negative, plus each ground truth's best
anchors), 256 per image are sampled half positive, and the loss is

    L_rpn = BCE(objectness[sampled], labels[sampled])                     (mean)
          + sum_{positives} smoothL1_beta(deltas - targets) / #sampled    (beta = 1/9)

Proposals are decoded from the deltas, kept top-k per level, clipped, NMS'd per level
and cut to ``post_nms_top_n``. **They are constants: no gradient flows through the
proposals** (torchvision detaches the deltas before decoding; so do we, by never
differentiating the decode). Gradients reach the head only through the loss.

Semantics: torchvision ``models/detection/rpn.py`` (``RPNHead``,
``RegionProposalNetwork``, ``concat_box_prediction_layers``).
"""

from __future__ import annotations

from ..backend import get_xp
from ..boxes.anchors import AnchorGenerator
from ..boxes.coder import BoxCoder
from ..boxes.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from ..boxes.nms import batched_nms
from ..boxes.ops import box_iou, clip_boxes_to_image, remove_small_boxes
from ..boxes.sampler import BalancedPositiveNegativeSampler
from ..layers.activations import ReLU
from ..layers.conv import Conv2d
from ..layers.module import Module, Sequential
from ..losses.sigmoid_bce import sigmoid_binary_cross_entropy
from ..losses.smooth_l1 import smooth_l1


class RPNHead(Module):
    """3x3 conv + ReLU, then 1x1 convs to A logits and 4A deltas, shared over levels.

    Names as torchvision: ``conv.0.0``, ``cls_logits``, ``bbox_pred``; weights
    N(0, 0.01), biases 0 (tv ``RPNHead``).
    """

    def __init__(self, in_channels: int, num_anchors: int, rng, dtype):
        super().__init__()
        conv = Conv2d(in_channels, in_channels, 3, padding=1, rng=rng, dtype=dtype)
        self.conv = Sequential(Sequential(conv, ReLU()))
        self.cls_logits = Conv2d(in_channels, num_anchors, 1, rng=rng, dtype=dtype)
        self.bbox_pred = Conv2d(in_channels, 4 * num_anchors, 1, rng=rng, dtype=dtype)
        for m in (conv, self.cls_logits, self.bbox_pred):
            m.params["weight"][...] = rng.normal(0.0, 0.01, m.params["weight"].shape,
                                                 dtype=m.params["weight"].dtype)
            m.params["bias"][...] = 0

    def forward(self, features):
        """features: L maps (N, C, H_l, W_l) -> (logits L x (N, A, H_l, W_l),
        deltas L x (N, 4A, H_l, W_l))."""
        logits, deltas = [], []
        for f in features:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas

    def backward(self, dlogits, ddeltas):
        """Levels in reverse order (the caches are stacks); returns L x dfeatures."""
        dfeatures = [None] * len(dlogits)
        for lvl in reversed(range(len(dlogits))):
            dt = self.bbox_pred.backward(ddeltas[lvl]) + self.cls_logits.backward(dlogits[lvl])
            dfeatures[lvl] = self.conv.backward(dt)
        return dfeatures


def flatten_predictions(logits, deltas):
    """Per-level head outputs -> anchor-ordered rows (level, position, anchor).

    (N, A, H, W) -> (N, H*W*A) and (N, 4A, H, W) -> (N, H*W*A, 4), concatenated over
    levels; tv ``concat_box_prediction_layers``.
    """
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        n, a, h, w = lg.shape
        flat_logits.append(lg.transpose(0, 2, 3, 1).reshape(n, h * w * a))
        # (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)
        flat_deltas.append(dl.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return flat_logits, flat_deltas


def unflatten_gradients(dlogits, ddeltas, shapes):
    """The inverse of ``flatten_predictions`` for the gradients, level by level."""
    out_logits, out_deltas = [], []
    start = 0
    for n, a, h, w in shapes:
        stop = start + h * w * a
        out_logits.append(dlogits[:, start:stop].reshape(n, h, w, a).transpose(0, 3, 1, 2))
        dd = ddeltas[:, start:stop].reshape(n, h, w, a, 4).transpose(0, 3, 4, 1, 2)
        out_deltas.append(dd.reshape(n, a * 4, h, w))
        start = stop
    return out_logits, out_deltas


class RegionProposalNetwork(Module):
    """Anchors, the head, targets and loss (training), and proposals (always).

    ``forward`` returns the proposals (constants) and, in training, the two losses
    together with their gradients w.r.t. the head outputs; ``backward(weights)``
    sends those gradients (scaled by the loss weights) through the head and returns
    the gradients of the pyramid features.
    """

    def __init__(self, cfg, in_channels: int, rng, dtype):
        super().__init__()
        self.cfg = cfg
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(s) for s in cfg.anchor_sizes),
            aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))
        # sizes x ratios per position: 3 on each FPN level, 15 on a single C4/C5 level
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RPNHead(in_channels, num_anchors, rng, dtype)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh,
                               allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image,
                                                       cfg.positive_fraction)
        self.rng = rng
        self.hold_sampling = False  # gradient checks: reuse the last proposals and samples
        self._held = None

    # ------------------------------------------------------------------ forward
    def forward(self, batch_shape, image_sizes, features, targets=None):
        """
        Args:
            batch_shape: (Hp, Wp) of the padded batch.
            image_sizes: N x (h, w) of each image inside the batch (after resize).
            features: L maps (N, C, H_l, W_l) (P2..P6 for FPN).
            targets: N dicts with ``boxes`` (G, 4), in training.
        Returns:
            proposals: N arrays (P_i, 4), no gradient.
            losses: {"loss_objectness", "loss_rpn_box_reg"} (empty in eval).
        """
        xp = get_xp(features[0])
        logits, deltas = self.head(features)
        shapes = [lg.shape for lg in logits]
        anchors = self.anchor_generator(
            tuple(batch_shape), [tuple(f.shape[-2:]) for f in features], xp=xp)
        num_per_level = [len(a) for a in anchors]
        anchors = xp.concatenate(anchors, axis=0).astype(features[0].dtype)  # (sumA, 4)
        flat_logits, flat_deltas = flatten_predictions(logits, deltas)
        objectness = xp.concatenate(flat_logits, axis=1)  # (N, sumA)
        pred_deltas = xp.concatenate(flat_deltas, axis=1)  # (N, sumA, 4)

        if self.hold_sampling and self._held is not None:
            proposals, sampled = self._held
        else:
            proposals = self.filter_proposals(anchors, objectness, pred_deltas, image_sizes,
                                              num_per_level)
            sampled = None
        losses = {}
        if self.training:
            if sampled is None:
                sampled = self.sample_targets(anchors, targets)
            loss_obj, loss_reg, dobj, ddeltas = self.compute_loss(objectness, pred_deltas,
                                                                  sampled)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}
            self.push((dobj, ddeltas, shapes))
        self._held = (proposals, sampled)
        return proposals, losses

    def filter_proposals(self, anchors, objectness, pred_deltas, image_sizes, num_per_level):
        """Decode, top-k per level, clip, drop tiny boxes, NMS per level, keep the top.

        No gradient: the proposals are treated as constants (tv ``filter_proposals``).
        """
        xp = get_xp(objectness)
        cfg = self.cfg
        pre_n = cfg.pre_nms_top_n_train if self.training else cfg.pre_nms_top_n_test
        post_n = cfg.post_nms_top_n_train if self.training else cfg.post_nms_top_n_test
        n = objectness.shape[0]
        # (N*sumA, 4) decoded against the anchors repeated for each image
        boxes = self.box_coder.decode(pred_deltas.reshape(-1, 4), xp.tile(anchors, (n, 1)))
        boxes = boxes.reshape(n, -1, 4)
        # top-k per level on the logits (monotone in the probability)
        idx, lvl, start = [], [], 0
        for li, num in enumerate(num_per_level):
            k = min(pre_n, num)
            order = xp.argsort(-objectness[:, start:start + num], axis=1)
            idx.append(order[:, :k] + start)
            lvl.append(xp.full((k,), li, dtype=xp.int64))
            start += num
        idx, lvl = xp.concatenate(idx, axis=1), xp.concatenate(lvl)
        proposals = []
        for i in range(n):
            b = clip_boxes_to_image(boxes[i][idx[i]], tuple(image_sizes[i]))
            s = objectness[i][idx[i]]
            keep = remove_small_boxes(b, cfg.min_size)
            b, s, lv = b[keep], s[keep], lvl[keep]
            if cfg.score_thresh > 0:
                prob = 1.0 / (1.0 + xp.exp(-s))
                keep = xp.nonzero(prob >= cfg.score_thresh)[0]
                b, s, lv = b[keep], s[keep], lv[keep]
            keep = batched_nms(b, s, lv, cfg.nms_thresh, top_k=post_n)
            proposals.append(b[keep])
        return proposals

    def sample_targets(self, anchors, targets):
        """Match anchors to ground truth, encode targets, sample 256 per image.

        Returns a dict of index arrays into the (N, sumA) rows: ``pos`` and ``neg``
        (flattened image*sumA + anchor), and ``regression_targets`` (P, 4) for ``pos``.
        No gradient.
        """
        xp = get_xp(anchors)
        num_anchors = anchors.shape[0]
        pos_all, neg_all, reg_all = [], [], []
        for i, t in enumerate(targets):
            gt = t["boxes"]
            if gt.shape[0] == 0:  # no object: every anchor is background
                labels = xp.zeros((num_anchors,), dtype=xp.int64)
                matched_gt = xp.zeros_like(anchors)
            else:
                matched = self.matcher(box_iou(gt, anchors))
                matched_gt = gt[xp.maximum(matched, 0)]
                labels = (matched >= 0).astype(xp.int64)
                labels[matched == BETWEEN_THRESHOLDS] = -1
                labels[matched == BELOW_LOW_THRESHOLD] = 0
            pos, neg = self.sampler(labels, self.rng)
            reg_all.append(self.box_coder.encode(matched_gt[pos], anchors[pos]))
            pos_all.append(pos + i * num_anchors)
            neg_all.append(neg + i * num_anchors)
        return {"pos": xp.concatenate(pos_all), "neg": xp.concatenate(neg_all),
                "regression_targets": xp.concatenate(reg_all, axis=0)}

    def compute_loss(self, objectness, pred_deltas, sampled):
        """BCE over sampled anchors (mean) + smooth-L1 over positives / #sampled.

        Returns the two losses and their gradients w.r.t. ``objectness`` (N, sumA)
        and ``pred_deltas`` (N, sumA, 4), zero outside the sampled anchors.
        """
        xp = get_xp(objectness)
        pos, neg = sampled["pos"], sampled["neg"]
        inds = xp.concatenate([pos, neg])
        num_sampled = max(int(inds.shape[0]), 1)
        flat_obj = objectness.reshape(-1)
        flat_deltas = pred_deltas.reshape(-1, 4)
        labels = xp.concatenate([xp.ones(pos.shape, objectness.dtype),
                                 xp.zeros(neg.shape, objectness.dtype)])
        dobj = xp.zeros_like(flat_obj)
        ddeltas = xp.zeros_like(flat_deltas)
        if inds.shape[0]:
            loss_obj, dsel = sigmoid_binary_cross_entropy(flat_obj[inds], labels)
            dobj[inds] = dsel  # sampled indices are unique: plain assignment scatters
        else:
            loss_obj = xp.zeros((), objectness.dtype)
        loss_reg, dreg = smooth_l1(flat_deltas[pos], sampled["regression_targets"],
                                   self.cfg.smooth_l1_beta)
        ddeltas[pos] = dreg / num_sampled
        return (loss_obj, loss_reg / num_sampled, dobj.reshape(objectness.shape),
                ddeltas.reshape(pred_deltas.shape))

    # ------------------------------------------------------------------ backward
    def backward(self, w_objectness: float = 1.0, w_box_reg: float = 1.0):
        """Gradients of ``w_obj * loss_objectness + w_reg * loss_rpn_box_reg`` w.r.t.
        the features the head saw (L maps)."""
        dobj, ddeltas, shapes = self.pop()
        dlogits, dd = unflatten_gradients(w_objectness * dobj, w_box_reg * ddeltas, shapes)
        return self.head.backward(dlogits, dd)
