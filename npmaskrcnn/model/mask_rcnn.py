"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017), all of it on one page.

``forward`` reads top-down like the paper's figure, one line per stage; ``backward``
reads the same stages bottom-up. There is no autograd: every stage's ``backward``
is written by hand and gradient-checked.

    images ─ transform ─ backbone (ResNet C2..C5) ─ FPN (P2..P6)
        ├─ RPN → proposals (constants) + RPN losses
        └─ RoI heads (P2..P5) → box + mask losses | detections
"""

from __future__ import annotations

import warnings

import numpy as np

from ..backend import Generator, get_xp
from ..config import MaskRCNNConfig
from ..layers.module import Module
from .backbone import ResNet
from .fpn import FeaturePyramidNetwork
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork
from .transform import GeneralizedRCNNTransform

RPN_LOSSES = ("loss_objectness", "loss_rpn_box_reg")
ROI_LOSSES = ("loss_classifier", "loss_box_reg", "loss_mask")


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

    def backward(self, dfeatures):
        return self.body.backward(self.fpn.backward(dfeatures))


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
        rng = Generator(cfg.seed, backend=backend)
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
                                  scales, rng, dtype)
        self.num_pooled_levels = len(scales)

    # ------------------------------------------------------------------ training
    def forward(self, images, targets=None):
        """Training: images N x (3, H, W) in [0, 1], targets N dicts -> dict of losses."""
        batch, image_sizes, targets = self.transform(images, targets)  # (N, 3, Hp, Wp)
        return self.forward_batch(batch, image_sizes, targets)

    def forward_batch(self, batch, image_sizes, targets):
        """The differentiable part, from the normalised, padded batch to the losses."""
        targets = [drop_degenerate_boxes(t, i) for i, t in enumerate(targets)]
        features = self.backbone(batch)                      # L x (N, 256, H/s, W/s)
        proposals, rpn_losses = self.rpn(batch.shape[-2:], image_sizes, features, targets)
        pooled = features[: self.num_pooled_levels]          # P2..P5 (P6 is RPN-only)
        _, roi_losses = self.roi_heads(pooled, proposals, image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def backward(self):
        """Gradients of sum_k w_k * loss_k for every parameter (and the batch, returned)."""
        w = self.cfg.loss_weights
        dpooled = self.roi_heads.backward(*(w[k] for k in ROI_LOSSES))  # P2..P5
        dfeatures = self.rpn.backward(*(w[k] for k in RPN_LOSSES))      # P2..P6
        for i, d in enumerate(dpooled):
            dfeatures[i] = dfeatures[i] + d
        return self.backbone.backward(dfeatures)                        # (N, 3, Hp, Wp)

    def total_loss(self, losses: dict) -> float:
        """sum_k w_k * loss_k, as a Python float."""
        return float(sum(self.cfg.loss_weights[k] * float(v) for k, v in losses.items()))

    def hold_sampling(self, hold: bool = True) -> None:
        """Reuse the last proposals and sampled anchors/RoIs (for gradient checks)."""
        self.rpn.hold_sampling = hold
        self.roi_heads.hold_sampling = hold

    # ------------------------------------------------------------------ inference
    def predict(self, images, paste_masks: bool = True):
        """Detections per image at its original size: ``boxes`` (D, 4), ``labels`` (D,),
        ``scores`` (D,), ``masks`` (D, H, W) probabilities (threshold at 0.5); with
        ``paste_masks=False`` the masks stay (D, 1, M, M) maps over their boxes (see
        ``GeneralizedRCNNTransform.postprocess``)."""
        was_training = self.training
        self.eval()
        try:
            original_sizes = [tuple(im.shape[-2:]) for im in images]
            batch, image_sizes, _ = self.transform(images, None)
            features = self.backbone(batch)
            proposals, _ = self.rpn(batch.shape[-2:], image_sizes, features, None)
            detections, _ = self.roi_heads(features[: self.num_pooled_levels], proposals,
                                           image_sizes)
            return self.transform.postprocess(detections, image_sizes, original_sizes,
                                              paste_masks)
        finally:
            self.train(was_training)


def drop_degenerate_boxes(target: dict, index: int) -> dict:
    """Remove crowd regions and boxes of zero width or height (with a warning).

    A zero-width box has no valid regression target (log 0) and would put a NaN into
    the loss; crowd regions are never positives. Both are dropped before matching.
    """
    boxes = target["boxes"]
    xp = get_xp(boxes)
    wh = boxes[:, 2:] - boxes[:, :2]
    ok = (wh > 0).all(axis=1)
    bad = int((~ok).sum())
    if bad:
        warnings.warn(f"image {index}: dropped {bad} ground-truth box(es) of zero width or "
                      "height", stacklevel=3)
    if "iscrowd" in target:
        ok &= xp.asarray(target["iscrowd"]) == 0
    if bool(ok.all()):
        return target
    keep = xp.nonzero(ok)[0]
    out = dict(target)
    for k in ("boxes", "labels", "masks", "iscrowd", "area", "keypoints"):
        if k in out and out[k] is not None and len(out[k]) == len(ok):
            out[k] = out[k][keep]
    return out
