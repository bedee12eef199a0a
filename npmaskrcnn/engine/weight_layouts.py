"""Other people's weight files, by architecture: how to recognise one (``LAYOUTS``), how
its names become ours (``rename``) and which model configuration holds it
(``infer_config``). ``weights.py`` checks the arrays against a model and places them.

Adding an architecture is one ``Layout`` entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..config import MaskRCNNConfig, keypoint_r50_fpn, r50_fpn
from ..model.backbone import ARCHS
from .weight_files import WeightsError, WeightsFile

BODY = "backbone.body."
CLASS_SPECIFIC = ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
                  "roi_heads.mask_predictor.mask_fcn_logits.")
KEYPOINT_PREDICTOR = "roi_heads.keypoint_predictor."
# the optional branches of the RoI heads: our-name prefixes of each
BRANCHES = {"mask": ("roi_heads.mask_head.", "roi_heads.mask_predictor."),
            "keypoint": ("roi_heads.keypoint_head.", KEYPOINT_PREDICTOR)}
NUM_BATCHES_TRACKED = "num_batches_tracked: BatchNorm's step counter, not a weight"


@dataclass(frozen=True)
class Layout:
    """One architecture's naming: how to recognise it and how its names become ours.

    Attributes:
        name: what the report calls it.
        signature: keys (file names) that all must be present for the file to be this.
        prefix: file name -> our name is ``prefix + name``.
        scope: ``"model"`` (the whole ``MaskRCNN``) or ``"backbone"`` (``backbone.body.*``).
        skip: (file-name prefix, reason) pairs left out on purpose.
        class_specific: our-name prefixes kept fresh when their shape differs.
        refuse: non-empty when our model cannot hold this architecture: why.
    """

    name: str
    signature: tuple
    prefix: str = ""
    scope: str = "model"
    skip: tuple = ()
    class_specific: tuple = CLASS_SPECIFIC
    refuse: str = ""


# First match wins: v2 and the keypoint model share most keys with v1, so they come first
# (a keypoint file with a mask branch too, e.g. our keypoint_mask_r50_fpn, is the keypoint
# layout: infer_config sees its mask branch).
LAYOUTS = (
    Layout("torchvision maskrcnn_resnet50_fpn_v2",
           ("rpn.head.conv.1.0.weight", "roi_heads.box_head.0.0.weight"),
           refuse="torchvision's maskrcnn_resnet50_fpn_v2, another architecture (box head "
                  "of 4 conv + BatchNorm and 1 fc, two-conv RPN head, BatchNorm in the FPN "
                  "and mask head) than our MaskRCNN (maskrcnn_resnet50_fpn, v1)"),
    Layout("Keypoint R-CNN (torchvision keypointrcnn_resnet50_fpn names)",
           ("roi_heads.box_head.fc6.weight", KEYPOINT_PREDICTOR + "kps_score_lowres.weight"),
           class_specific=CLASS_SPECIFIC + (KEYPOINT_PREDICTOR,)),
    Layout("Mask R-CNN (torchvision maskrcnn_resnet50_fpn names)",
           ("roi_heads.box_head.fc6.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight")),
    Layout("ResNet classifier (torchvision resnet names, e.g. ImageNet resnet50)",
           ("conv1.weight", "layer1.0.conv1.weight"), prefix=BODY, scope="backbone",
           skip=(("fc.", "fc.*: the ImageNet classifier, not part of a detector"),)),
    Layout("ResNet backbone (backbone.body.* names)", (BODY + "conv1.weight",),
           scope="backbone"),
)


def recognise(wf: WeightsFile) -> Layout:
    """The first ``LAYOUTS`` entry whose signature keys are all in the file.

    Raises:
        WeightsError: no layout fits (the file's first keys are named).
    """
    for layout in LAYOUTS:
        if all(k in wf.arrays for k in layout.signature):
            return layout
    first = ", ".join(list(wf.arrays)[:3]) or "(no arrays)"
    known = "; ".join(lay.name for lay in LAYOUTS if not lay.refuse)
    raise WeightsError(wf.path, list(wf.arrays)[0] if wf.arrays else None,
                       f"not a layout npmaskrcnn knows ({known}); the file begins {first}")


def rename(wf: WeightsFile, layout: Layout) -> tuple[dict, dict]:
    """``(arrays under our names, {reason: skipped file names})`` (container drops included)."""
    mapped, skipped = {}, {reason: list(names) for reason, names in wf.dropped.items()}
    for name, array in wf.arrays.items():
        reason = _skip_reason(name, layout)
        if reason:
            skipped.setdefault(reason, []).append(name)
        else:
            mapped[layout.prefix + name] = array
    return mapped, skipped


def _skip_reason(name: str, layout: Layout) -> str | None:
    if name.endswith(".num_batches_tracked"):
        return NUM_BATCHES_TRACKED
    return next((reason for prefix, reason in layout.skip if name.startswith(prefix)), None)


def infer_config(layout: Layout, mapped: dict) -> MaskRCNNConfig:
    """torchvision's ``r50_fpn`` with the file's ResNet depth and number of classes; for a
    Keypoint R-CNN file ``keypoint_r50_fpn``, with the file's keypoint head and, when it
    has one, the mask branch."""
    counts = tuple(len({m.group(1) for k in mapped
                        if (m := re.match(rf"{re.escape(BODY)}layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    kind = "bottleneck" if f"{BODY}layer1.0.conv3.weight" in mapped else "basic"
    depth = next((d for d, arch in ARCHS.items() if arch == (kind, counts)), None)
    if depth is None:
        raise ValueError(f"a ResNet with {kind} blocks {counts} per stage; npmaskrcnn builds "
                         f"depths {sorted(ARCHS)}")
    cls = mapped.get("roi_heads.box_predictor.cls_score.weight")
    kps = mapped.get(KEYPOINT_PREDICTOR + "kps_score_lowres.weight")
    if kps is None:
        cfg = r50_fpn(num_classes=int(cls.shape[0])) if cls is not None else r50_fpn()
    else:  # conv i of the head is Sequential entry 2i (a ReLU after each)
        layers = tuple(int(mapped[f"roi_heads.keypoint_head.{2 * i}.weight"].shape[0])
                       for i in range(sum(bool(re.fullmatch(r"roi_heads\.keypoint_head\.\d+"
                                                            r"\.weight", k)) for k in mapped)))
        cfg = keypoint_r50_fpn(num_classes=int(cls.shape[0]),
                               masks=BRANCHES["mask"][1] + "mask_fcn_logits.weight" in mapped)
        cfg.keypoint = replace(cfg.keypoint, num_keypoints=int(kps.shape[1]), layers=layers)
    cfg.backbone.depth = depth
    return cfg
