"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017), all of it on one page.

``forward`` reads top-down like the paper's figure, one line per stage; ``backward``
reads the same stages bottom-up. There is no autograd: every stage's ``backward``
is written by hand and gradient-checked.

    images ─ transform ─ backbone (ResNet C2..C5) ─ FPN (P2..P6)
        ├─ RPN → proposals (constants) + RPN losses
        └─ RoI heads (P2..P5) → box + mask (+ keypoint) losses | detections

The keypoint branch (paper section 5) is one more optional stage of the RoI heads, beside
the mask branch (``cfg.keypoint.on``, ``cfg.roi_heads.mask_on``): Keypoint R-CNN is this
same page with another head on the positive RoIs.
"""

from __future__ import annotations

import numpy as np

from ..backend import Generator, get_xp
from ..config import MaskRCNNConfig
from ..layers.module import Module
from .backbone import ResNet
from .fpn import FeaturePyramidNetwork
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork
from .targets import GroundTruth, TrainingSamples, batch_ground_truth
from .transform import GeneralizedRCNNTransform, mirror_batch


class BackboneWithFPN(Module):
    """``body`` (ResNet) then ``fpn``: names ``backbone.body.*`` / ``backbone.fpn.*`` as tv."""

    def __init__(self, cfg: MaskRCNNConfig, rng, dtype):
        super().__init__()
        b = cfg.backbone
        return_layers = {"fpn": ("C2", "C3", "C4", "C5"), "c4": ("C4",), "c5": ("C5",)}[b.features]
        self.body = ResNet(depth=b.depth, width=b.width, norm=b.norm, gn_groups=b.gn_groups,
                           frozen_stages=b.frozen_stages, return_layers=return_layers,
                           rng=rng, dtype=dtype)
        self.fpn = FeaturePyramidNetwork(
            self.body.out_channels, cfg.fpn.out_channels,
            extra_block="maxpool" if b.features == "fpn" else None, rng=rng, dtype=dtype)
        self.out_channels = cfg.fpn.out_channels

    def forward(self, x):
        return self.fpn(self.body(x))

    def backward(self, dfeatures, input_grad: bool = False):
        return self.body.backward(self.fpn.backward(dfeatures), input_grad)


class MaskRCNN(Module):
    """The whole model. ``forward(images, targets)`` in training returns the losses;
    ``backward()`` fills every parameter's ``grads``; ``predict(images)`` detects.

    Args:
        cfg: a ``MaskRCNNConfig`` (see ``npmaskrcnn.config`` presets).
        dtype: float32 for training and inference, float64 for gradient checks.
        backend: "numpy" | "cupy" | None (the default backend).
    """

    def __init__(self, cfg: MaskRCNNConfig | None = None, dtype=np.float32,
                 backend: str | None = None):
        super().__init__()
        cfg = cfg or MaskRCNNConfig()
        self.cfg = cfg
        # one generator for the whole model: it draws the initial weights, then the RPN's
        # and the RoI heads' sampling keys; a checkpoint saves its state to resume exactly
        self.rng = rng = Generator(cfg.seed, backend=backend)
        t = cfg.transform
        self.transform = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean,
                                                  t.image_std, t.size_divisible)
        self.backbone = BackboneWithFPN(cfg, rng, dtype)
        rpn_cfg = cfg.rpn
        if cfg.backbone.features != "fpn":  # one level: all anchor sizes on it
            sizes = tuple(s for level in rpn_cfg.anchor_sizes for s in level)
            rpn_cfg = type(rpn_cfg)(**{**vars(rpn_cfg), "anchor_sizes": (sizes,)})
        self.rpn = RegionProposalNetwork(rpn_cfg, self.backbone.out_channels, rng, dtype)
        scales = [1.0 / s for s in cfg.feature_strides]
        self.roi_heads = RoIHeads(cfg.roi_heads, self.backbone.out_channels, cfg.num_classes,
                                  scales, rng, dtype, keypoint=cfg.keypoint)
        self.num_pooled_levels = len(scales)

    # ------------------------------------------------------------------ training
    def forward(self, images, targets=None):
        """Training: images N x (3, H, W) in [0, 1], targets N dicts -> dict of losses."""
        batch, image_sizes, targets = self.transform(images, targets)  # (N, 3, Hp, Wp)
        gt = batch_ground_truth(targets, batch.dtype)                  # padded to G per image
        losses, _ = self.forward_batch(batch, image_sizes, gt)
        return losses

    def forward_batch(self, batch, image_sizes, gt: GroundTruth,
                      samples: TrainingSamples | None = None):
        """The differentiable part, from the normalised, padded batch to the losses.

        Returns the losses and the ``TrainingSamples`` the step used; passing them back
        as ``samples`` repeats the step with the same proposals and sampled anchors and
        RoIs (what a gradient check needs).
        """
        s = samples or TrainingSamples(None, None, None)
        features = self.backbone(batch)                      # L x (N, 256, H/s, W/s)
        proposals, rpn_losses, rpn_samples = self.rpn(       # (N, P, 4), no gradient
            batch.shape[-2:], image_sizes, features, gt, s.proposals, s.rpn)
        pooled = features[: self.num_pooled_levels]          # P2..P5 (P6 is RPN-only)
        roi_losses, roi_samples = self.roi_heads(pooled, proposals, image_sizes, gt, s.roi)
        return ({**rpn_losses, **roi_losses},
                TrainingSamples(rpn_samples, proposals, roi_samples))

    def backward(self, dloss: dict | None = None, input_grad: bool = False):
        """The chain rule from the losses down to the parameters, ``forward`` reversed.

        Args:
            dloss: d(total)/d(loss) for each loss by name; the total is
                ``sum_k w_k * loss_k``, so by default each is its weight w_k
                (``cfg.loss_weights``).
            input_grad: also return d(total)/d(batch) (gradient checks); without it
                the stem convolution skips its input gradient.
        Returns:
            (N, 3, Hp, Wp) or None. Every trainable parameter's ``grads`` is filled.
        """
        dloss = dict(self.cfg.loss_weights) if dloss is None else dloss
        dpooled = self.roi_heads.backward(dloss)              # keypoint, mask, box -> P2..P5
        dfeatures = self.rpn.backward(dloss)                           # RPN -> P2..P6
        for i, d in enumerate(dpooled):                                # both used P2..P5
            dfeatures[i] = d if dfeatures[i] is None else dfeatures[i] + d
        return self.backbone.backward(dfeatures, input_grad)           # FPN, ResNet

    def total_loss(self, losses: dict) -> float:
        """sum_k w_k * loss_k, as a Python float (one read of the device)."""
        xp = get_xp(*losses.values())
        total = sum(self.cfg.loss_weights[k] * v for k, v in losses.items())
        return float(xp.asarray(total))

    # ------------------------------------------------------------------ inference
    def predict(self, images, paste_masks: bool = True):
        """Detections per image at its original size: ``boxes`` (D, 4), ``labels`` (D,),
        ``scores`` (D,), ``masks`` (D, H, W) probabilities (threshold at 0.5); with
        ``paste_masks=False`` the masks stay (D, 1, M, M) maps over their boxes (see
        ``GeneralizedRCNNTransform.postprocess``). With the keypoint branch: ``keypoints``
        (D, K, 3) ``x, y, 1`` in original pixels and ``keypoints_scores`` (D, K); with
        ``KeypointConfig.flip_test`` the backbone also sees the mirrored images."""
        was_training = self.training
        self.eval()
        try:
            original_sizes = [tuple(im.shape[-2:]) for im in images]
            batch, image_sizes, _ = self.transform(images, None)
            features = self.backbone(batch)
            proposals, _, _ = self.rpn(batch.shape[-2:], image_sizes, features)
            mirrored = None  # KeypointConfig.flip_test: the maps of the mirrored images
            if self.roi_heads.keypoint_on and self.cfg.keypoint.flip_test:
                mirrored = self.backbone(mirror_batch(batch, image_sizes))
                mirrored = mirrored[: self.num_pooled_levels]
            detections = self.roi_heads(features[: self.num_pooled_levels], proposals,
                                        image_sizes, mirrored=mirrored)
            return self.transform.postprocess(detections, image_sizes, original_sizes,
                                              paste_masks)
        finally:
            self.train(was_training)
