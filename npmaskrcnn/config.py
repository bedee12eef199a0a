"""``MaskRCNNConfig``: every hyperparameter of the model, grouped by stage.

Each default says where it comes from: "paper" is He et al. 2017 (arXiv:1703.06870v3),
"tv" is torchvision's ``maskrcnn_resnet50_fpn``. Presets are plain functions returning
configs:

- ``tiny()``: a few thousand parameters, 64x64 images — for tests and gradient checks;
- ``shapes()``: a small GroupNorm model trained from scratch on the synthetic shapes
  data on a CPU in minutes;
- ``r50_fpn()``: torchvision's ``maskrcnn_resnet50_fpn`` (FrozenBN, 91 COCO classes),
  whose state dict maps one-to-one onto ours;
- ``keypoint_r50_fpn()``: torchvision's ``keypointrcnn_resnet50_fpn`` (persons, the keypoint
  branch instead of the mask branch), and ``keypoint_mask_r50_fpn()`` with both branches
  (the paper's "keypoint & mask" model, Tables 4 and 5);
- ``figures()``: a keypoint model for the synthetic stick figures, trained from scratch on a
  CPU (``figures_mask()`` with masks too).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass
class TransformConfig:
    min_size: int = 800  # paper 3.1: shorter edge 800 px
    max_size: int = 1333  # tv: longer edge at most 1333
    image_mean: tuple = (0.485, 0.456, 0.406)  # tv: ImageNet statistics, inputs in [0, 1]
    image_std: tuple = (0.229, 0.224, 0.225)
    size_divisible: int = 32  # tv: C5 has stride 32, so padded sizes divide by 32


@dataclass
class BackboneConfig:
    depth: int = 50  # paper Table 2a: ResNet-50 for the ablations
    width: int = 64  # base channels of layer1 (64 in ResNet); smaller for CPU models
    norm: str = "frozen_bn"  # tv: FrozenBN for imported weights; "group_norm" from scratch
    gn_groups: int = 32  # Wu & He 2018 GroupNorm default
    frozen_stages: int = 2  # tv trainable_backbone_layers=3: stem and layer1 frozen
    # "fpn" uses C2..C5 with an FPN; "c4" / "c5" are single-level models that pool from
    # the stride-16 / stride-32 map (for the Table 2c / 2d ablations). Unlike the paper's
    # R50-C4 they have no res5 head: the RoI heads are the FPN model's, on one level.
    features: str = "fpn"


@dataclass
class FPNConfig:
    out_channels: int = 256  # FPN paper: d = 256


@dataclass
class RPNConfig:
    # FPN paper 4.1: one size per level, P2..P6. A level given no sizes, ``()``, is one the
    # RPN does not look at: no anchors, no head there (the RoI heads still pool from it)
    anchor_sizes: tuple = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: tuple = (0.5, 1.0, 2.0)  # paper 3.1 / FPN: 3 ratios
    fg_iou_thresh: float = 0.7  # Faster R-CNN 3.1.2 (the RPN Mask R-CNN uses)
    bg_iou_thresh: float = 0.3  # Faster R-CNN 3.1.2
    batch_size_per_image: int = 256  # tv
    positive_fraction: float = 0.5  # tv
    pre_nms_top_n_train: int = 2000  # tv, per level
    pre_nms_top_n_test: int = 1000  # tv, per level
    post_nms_top_n_train: int = 2000  # tv, per image
    post_nms_top_n_test: int = 1000  # paper 3.1: 1000 proposals for FPN at test
    nms_thresh: float = 0.7  # tv
    min_size: float = 1e-3  # tv: drop degenerate proposals
    score_thresh: float = 0.0  # tv
    smooth_l1_beta: float = 1.0 / 9  # tv


@dataclass
class RoIHeadsConfig:
    pooler: str = "align"  # paper: RoIAlign; "pool" / "warp" for Table 2c
    aligned: bool = False  # tv MultiScaleRoIAlign uses aligned=False
    sampling_ratio: int = 2  # tv MultiScaleRoIAlign: 2x2 samples per bin
    aggregation: str = "avg"  # paper 4.2: average after the ablation ("max" for Table 2c)
    # FPN Eq. 1: a RoI of side sqrt(wh) = canonical_scale is pooled from P4 (the ImageNet
    # size 224, tv LevelMapper), half of it from P3; scale it with the anchors (see shapes())
    canonical_scale: float = 224
    box_pool_size: int = 7  # paper Fig. 4
    mask_pool_size: int = 14  # paper Fig. 4
    representation_size: int = 1024  # paper Fig. 4: 2 x fc 1024
    mask_layers: tuple = (256, 256, 256, 256)  # paper Fig. 4: 4 x conv3x3 256
    fg_iou_thresh: float = 0.5  # paper 3.1
    bg_iou_thresh: float = 0.5  # tv
    batch_size_per_image: int = 512  # paper 3.1: 512 RoIs for FPN
    positive_fraction: float = 0.25  # paper 3.1: 1:3
    bbox_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)  # tv
    smooth_l1_beta: float = 1.0 / 9  # tv
    score_thresh: float = 0.05  # tv
    nms_thresh: float = 0.5  # paper App. B / tv
    detections_per_img: int = 100  # paper 3.1: mask branch on the top 100
    mask_loss: str = "sigmoid"  # paper Table 2b: per-class sigmoid; "softmax" for the ablation
    class_agnostic_mask: bool = False  # paper 4.2: class-specific (29.7 vs 30.3 AP)
    mask_on: bool = True  # the mask branch; tv keypointrcnn_resnet50_fpn has none


@dataclass
class KeypointConfig:
    """The keypoint branch (paper section 5; tv ``keypointrcnn_resnet50_fpn``): on the
    positive RoIs, like the mask branch, with the RoI op of ``RoIHeadsConfig.pooler``."""

    on: bool = False  # off: Mask R-CNN; on: Keypoint R-CNN (paper 5)
    num_keypoints: int = 17  # tv: COCO's 17 person keypoints (the paper writes K)
    pool_size: int = 14  # tv keypoint_roi_pool: 14x14, so 56x56 heatmaps (paper 5: m = 56)
    sampling_ratio: int = 2  # tv keypoint_roi_pool: 2x2 samples per bin
    layers: tuple = (512,) * 8  # paper 5 / tv: 8 x conv3x3 512; fewer and narrower on a CPU
    # the branch's RoIs are the boxes scaled about their centres by this, in training (the
    # positive proposals: pooling and heatmap targets) and at inference (the detections:
    # pooling and heatmaps_to_keypoints). 1.0: tv and the paper. Larger leaves room for
    # the wrists and ankles at the edge of a box that came out a few pixels too small
    roi_scale: float = 1.0
    # training: at most this many of each image's positive RoIs (a random subset: the
    # sampler orders them by random key) train the branch; None: all of them (tv). Each
    # positive costs the whole head, but fewer of them lost keypoint AP in the stick-figure
    # trials even with the iterations that the time saved bought (README, Keypoints)
    rois_per_image: int | None = None
    # a detection's score (what COCOeval ranks by): "box", the box classifier's probability
    # (tv); "box_x_keypoints", that times the mean over the K keypoints of the probability
    # mass each heatmap puts within 2 bins of its maximum (keypoint_inference.
    # keypoint_confidence): a person whose joints the branch is unsure of ranks lower.
    # Not tv's; +4 to +5 keypoint AP for every stick-figure model tried (README, Keypoints)
    score: str = "box"
    # inference: run the branch on the mirrored image too (one more backbone pass) and
    # average each detection's heatmap logits with the mirror's, flipped back and with left
    # and right swapped (data.transforms.COCO_KEYPOINT_FLIP, so 17 COCO keypoints):
    # Detectron's TEST.KPS_AUG.H_FLIP. False: tv. +2.7 keypoint AP on the stick figures
    flip_test: bool = False
    # training targets: 0, the one-hot cell of each keypoint (the paper, tv); > 0, a Gaussian
    # of this many cells (standard deviation) around the keypoint's exact position, which
    # also says where within its cell it lies (keypoint_head.gaussian_heatmap_targets);
    # the loss is the cross-entropy with that distribution. Not tv's
    target_sigma: float = 0.0


@dataclass
class MaskRCNNConfig:
    num_classes: int = 91  # tv: COCO category ids incl. background
    transform: TransformConfig = field(default_factory=TransformConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    keypoint: KeypointConfig = field(default_factory=KeypointConfig)
    # L = L_cls + L_box + L_mask (paper 3) (+ L_keypoint, paper 5) plus the two RPN terms;
    # all weights 1 as tv
    loss_weights: dict = field(default_factory=lambda: dict(LOSS_WEIGHTS))
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MaskRCNNConfig:
        """Rebuild a config written by ``to_dict`` (e.g. from a checkpoint's JSON)."""
        groups = {"transform": TransformConfig, "backbone": BackboneConfig, "fpn": FPNConfig,
                  "rpn": RPNConfig, "roi_heads": RoIHeadsConfig, "keypoint": KeypointConfig}
        kwargs = {}
        for k, v in d.items():
            if k in groups:
                sub = {kk: tuple(map(_tuplify, vv)) if isinstance(vv, list) else vv
                       for kk, vv in v.items() if (k, kk) not in REMOVED_FIELDS}
                kwargs[k] = groups[k](**sub)
            elif k == "loss_weights":  # an older config has no weight for a newer loss
                kwargs[k] = {**LOSS_WEIGHTS, **v}
            else:
                kwargs[k] = v
        return cls(**kwargs)

    @property
    def feature_strides(self) -> tuple:
        """Strides of the feature maps that the RoI heads pool from."""
        return {"fpn": (4, 8, 16, 32), "c4": (16,), "c5": (32,)}[self.backbone.features]


LOSS_WEIGHTS = {"loss_objectness": 1.0, "loss_rpn_box_reg": 1.0, "loss_classifier": 1.0,
                "loss_box_reg": 1.0, "loss_mask": 1.0, "loss_keypoint": 1.0}

# Fields older checkpoints still carry, ignored when they are read: (group, name).
REMOVED_FIELDS = {("roi_heads", "mask_dilation")}  # never used by the model


def _tuplify(v):
    return tuple(v) if isinstance(v, list) else v


def r50_fpn(num_classes: int = 91) -> MaskRCNNConfig:
    """torchvision's ``maskrcnn_resnet50_fpn``: FrozenBN ResNet-50, stem+layer1 frozen."""
    return MaskRCNNConfig(num_classes=num_classes)


def shapes(num_classes: int = 6, image_size: int = 128) -> MaskRCNNConfig:
    """A CPU-sized model for the synthetic shapes data, trained from scratch.

    GroupNorm instead of FrozenBN because there are no pretrained statistics
    (He et al., "Rethinking ImageNet Pre-training", 2018). Anchors, the FPN level rule's
    canonical size and RoI counts are scaled down with the images; everything else keeps
    the paper's structure.
    """
    cfg = MaskRCNNConfig(num_classes=num_classes)
    cfg.transform = replace(cfg.transform, min_size=image_size, max_size=image_size)
    cfg.backbone = replace(cfg.backbone, depth=18, width=16, norm="group_norm", gn_groups=8,
                           frozen_stages=0)
    cfg.fpn = FPNConfig(out_channels=64)
    cfg.rpn = replace(cfg.rpn, anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
                      batch_size_per_image=128, pre_nms_top_n_train=600,
                      pre_nms_top_n_test=300, post_nms_top_n_train=300,
                      post_nms_top_n_test=200)
    # the anchors are tv's 32-512 scaled by 1/4, so the level rule is scaled likewise:
    # 224 / 4 = 56 px to P4, under 28 px to P2. With 224 every RoI under 112 px, i.e.
    # nearly every shapes object, would be pooled from P2 and P3-P5 would get no RoI.
    cfg.roi_heads = replace(cfg.roi_heads, representation_size=256,
                            mask_layers=(64, 64, 64, 64), batch_size_per_image=128,
                            canonical_scale=56)
    return cfg


def tiny(num_classes: int = 3, image_size: int = 64) -> MaskRCNNConfig:
    """The smallest sensible model: for unit tests and float64 gradient checks."""
    cfg = MaskRCNNConfig(num_classes=num_classes)
    cfg.transform = replace(cfg.transform, min_size=image_size, max_size=image_size)
    cfg.backbone = replace(cfg.backbone, depth=18, width=4, norm="group_norm", gn_groups=2,
                           frozen_stages=0)
    cfg.fpn = FPNConfig(out_channels=8)
    cfg.rpn = replace(cfg.rpn, anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
                      batch_size_per_image=64, pre_nms_top_n_train=200,
                      pre_nms_top_n_test=100, post_nms_top_n_train=100,
                      post_nms_top_n_test=50)
    cfg.roi_heads = replace(cfg.roi_heads, representation_size=32, mask_layers=(8, 8),
                            batch_size_per_image=32, detections_per_img=20,
                            canonical_scale=56)  # the anchors of shapes(): scaled as there
    return cfg


def keypoint_r50_fpn(num_classes: int = 2, masks: bool = False) -> MaskRCNNConfig:
    """torchvision's ``keypointrcnn_resnet50_fpn``: ``r50_fpn`` for persons (2 classes) with
    the keypoint branch and no mask branch; its state dict has torchvision's keys and shapes.

    Training images are resized to a short side drawn from 640..800 (paper 5: "sampled from
    [640, 800]"; tv's ``min_size``), testing at 800. ``masks=True``: the mask branch too, the
    paper's "keypoint & mask" model (Tables 4 and 5).
    """
    cfg = r50_fpn(num_classes)
    cfg.transform = replace(cfg.transform, min_size=(640, 672, 704, 736, 768, 800))
    cfg.roi_heads = replace(cfg.roi_heads, mask_on=masks)
    cfg.keypoint = KeypointConfig(on=True)
    return cfg


def keypoint_mask_r50_fpn(num_classes: int = 2) -> MaskRCNNConfig:
    """The paper's "keypoint & mask" model: ``keypoint_r50_fpn`` with the mask branch."""
    return keypoint_r50_fpn(num_classes, masks=True)


def figures(num_classes: int = 2, image_size: int = 192, masks: bool = False) -> MaskRCNNConfig:
    """A CPU-sized Keypoint R-CNN for the synthetic stick figures, trained from scratch.

    The ``shapes()`` model (GroupNorm ResNet-18 of width 16, FPN of 64 channels) with the
    keypoint branch narrowed from 8 x conv 512 to 4 x conv 128 (trained on at most 12
    positive RoIs per image), no mask branch
    (``masks=True``, or the ``figures_mask`` preset, keeps it) and an RPN that looks at
    P4-P6 only (anchors of 32-128 px, the figures' sizes), whose detections rank by
    box score x keypoint confidence (``KeypointConfig.score``) and whose keypoints average
    the heatmaps of the image and its mirror (``KeypointConfig.flip_test``).
    """
    cfg = shapes(num_classes, image_size)
    # the FPN level rule at twice torchvision's canonical size (448 px to P4, so under 224
    # px to P2): every figure (84-204 px tall as the model sees them, sqrt(wh) under 224)
    # is pooled from P2, cells of 4 px. With the shapes' scaled 56 they went to P4/P5,
    # cells of 16-32 px, too coarse to place a keypoint within OKS's few pixels; with
    # torchvision's 224 to P2/P3 (keypoint AP 17.0 with 56, 35.3 with 224, and at today's
    # head, data and schedule 47.9 with 224, 51.6 with 448, on a validation split of data
    # seed 1, README)
    cfg.roi_heads = replace(cfg.roi_heads, mask_on=masks, canonical_scale=448)
    # 128 channels rather than the FPN's 64: keypoint AP 35.3 -> 38.0 at 1500 iterations, and
    # with five times the images 47.9 at 2000 (validation split of data seed 1, README); an
    # iteration costs about 10% more on the 2-core machine (0.52 s against 0.47 s)
    # at most 12 positive RoIs per image train the keypoint branch: trained with AdamW, the
    # RPN finds more of them (60 a batch late in training against SGD's 44), and the branch's
    # cost grows with them; with the cap a step costs 16% less (one-thread trials) for
    # keypoint AP 60.7 against 62.4 after 1800 iterations (seed-1 split, one run each,
    # within a run's spread of about 3)
    cfg.keypoint = KeypointConfig(on=True, layers=(128,) * 4, score="box_x_keypoints",
                                  flip_test=True, rois_per_image=12)
    # no anchors on P2 and P3 (sizes 8 and 16 px): no figure is that small, yet those two
    # levels held 94% of the anchors, so most of the RPN's time and almost all its sampled
    # negatives were spent on boxes that never match. Without them: a late training step
    # about 4% faster (the RPN 95 -> 18 ms, partly spent on the ~10% more positive RoIs
    # its proposals give), box AP 47.5 against 45.9 and keypoint AP 59.2 against 60.5
    # (one run each at 2400 iterations, validation split of data seed 1: within a run's
    # spread of about 3). The RoI heads still pool from P2 (the level rule above)
    cfg.rpn = replace(cfg.rpn, anchor_sizes=((), (), (32,), (64,), (128,)))
    return cfg


def figures_mask(num_classes: int = 2, image_size: int = 192) -> MaskRCNNConfig:
    """``figures()`` with the mask branch: keypoints and masks of the stick figures."""
    return figures(num_classes, image_size, masks=True)


PRESETS = {"tiny": tiny, "shapes": shapes, "r50_fpn": r50_fpn,
           "keypoint_r50_fpn": keypoint_r50_fpn, "keypoint_mask_r50_fpn": keypoint_mask_r50_fpn,
           "figures": figures, "figures_mask": figures_mask}
