"""Pretrained weights: recognise other people's weight files and place them in our model.

Our ``MaskRCNN`` uses torchvision's state-dict names (``backbone.body.layer1.0.conv1.weight``,
``roi_heads.box_head.fc6.weight``, ...), so placing a torchvision file is mostly checking
it: which architecture it is (``LAYOUTS``), which entries are not weights (``skip``), how
its names become ours (``prefix``), and that every array fits the target by name and shape.

    file ─ read (weight_files: .npz | .safetensors | .pth) ─ recognise (LAYOUTS)
         ─ rename + skip ─ check against the target's names and shapes
         ├─ import_weights(src, out):       write our .npz (checkpoint layout + meta)
         └─ load_pretrained(model, file):   copy into the model's arrays, on its backend

Rules, in the order they apply:

- ``*.num_batches_tracked`` (BatchNorm's step counter) and a classifier's ``fc.*`` are
  skipped, and counted in the report;
- a file of an architecture our model cannot hold (``maskrcnn_resnet50_fpn_v2``), a key
  the target does not have, a key the target needs and the file lacks, or an array of
  another shape (both shapes named) is refused with ``WeightsError``, one line
  ``<file>: <key>: <problem>``; nothing is written and the model is left untouched;
- the class-specific layers (``Layout.class_specific``) keep their fresh initialisation
  when their shape differs (another number of classes; for the keypoint predictor, another
  number of keypoints) and are named in the report;
- a branch the file has and the model does not build (a Mask R-CNN file's mask branch for a
  keypoint-only model) is skipped and counted;
- a whole branch of the model that the file does not have (``BRANCHES``: the mask branch,
  when a Keypoint R-CNN file starts a keypoint-and-mask model; the keypoint branch, when a
  Mask R-CNN file starts a keypoint model) keeps its fresh initialisation and is named in
  the report when loading; ``import_weights`` writes the file's own architecture, so there
  nothing is missing.

Adding an architecture is one ``Layout`` entry (``weight_layouts.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..config import MaskRCNNConfig, r50_fpn
from ..model.mask_rcnn import MaskRCNN
from .weight_files import WeightsError, read_weights, write_npz_atomic
from .weight_layouts import (  # noqa: F401  (re-exported: the layouts are part of this API)
    BODY,
    BRANCHES,
    CLASS_SPECIFIC,
    KEYPOINT_PREDICTOR,
    LAYOUTS,
    NUM_BATCHES_TRACKED,
    Layout,
    infer_config,
    recognise,
    rename,
)


@dataclass
class WeightsReport:
    """What happened to every entry of a weights file; ``lines()`` / ``str()`` to print.

    ``mapped`` holds (file name, our name) pairs; ``skipped`` and ``fresh`` map a reason
    to names (file names for skipped, ours for fresh: model arrays left as initialised).
    """

    source: str
    kind: str
    container: str
    scope: str
    mapped: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    fresh: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    out: str | None = None

    def lines(self) -> list[str]:
        what = "the whole model" if self.scope == "model" else "the backbone (backbone.body.*)"
        out = [f"{self.source}: {self.kind}; {self.container}; {what}"]
        if self.mapped:
            examples = ", ".join(f"{a} -> {b}" if a != b else a for a, b in self.mapped[:2])
            out.append(f"  mapped  {len(self.mapped):4d} arrays (e.g. {examples})")
        for label, groups in (("skipped", self.skipped), ("fresh  ", self.fresh)):
            for reason, names in groups.items():
                out.append(f"  {label} {len(names):4d} {reason} ({_examples(names)})")
        out += [f"  {note}" for note in self.notes]
        if self.out:
            out.append(f"  wrote {self.out}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def as_dict(self) -> dict:
        """A JSON-able summary (counts per reason), e.g. for a checkpoint's ``meta``."""
        return {"source": self.source, "kind": self.kind, "container": self.container,
                "scope": self.scope, "mapped": len(self.mapped),
                "skipped": {r: len(v) for r, v in self.skipped.items()},
                "fresh": {r: len(v) for r, v in self.fresh.items()}}


def refuse_unsupported(path: str, layout: Layout, mapped: dict, target: dict) -> None:
    """Refuse a recognised architecture our model cannot hold, naming the keys that do not
    fit the target (rather than loading the half that does)."""
    if not layout.refuse:
        return
    misfits = [k for k, v in mapped.items()
               if k not in target or tuple(v.shape) != tuple(target[k])]
    raise WeightsError(path, misfits[0] if misfits else layout.signature[0],
                       f"{layout.refuse}; {len(misfits)} arrays do not fit ("
                       f"{_examples(misfits)}); nothing loaded")


def check_fit(path: str, layout: Layout, mapped: dict, target: dict, norm: str,
              backbone_only: bool = False, fresh_classes: bool = True
              ) -> tuple[dict, dict, dict]:
    """Decide where each array goes, refusing what cannot be placed; changes nothing.

    Args:
        path: the file (for messages).
        layout: the file's layout (``recognise``).
        mapped: our name -> array (``rename``).
        target: our name -> shape of every array of the model the file goes into.
        norm: the target's ``cfg.backbone.norm`` (for the message when statistics disagree).
        backbone_only: place ``backbone.body.*`` only, whatever the file holds.
        fresh_classes: leave class-specific layers of another shape, and a branch the file
            does not have, at their initialisation (False: refuse them as any other shape
            mismatch or missing key).
    Returns:
        ``(placed, skipped, fresh)``: our name -> array to copy; reason -> file keys left
        out; reason -> target keys left at their initialisation.
    Raises:
        WeightsError: an unknown key, a missing key, a shape mismatch, BatchNorm statistics
            against GroupNorm or the reverse.
    """
    def in_scope(k):
        return k.startswith(BODY) if backbone_only or layout.scope == "backbone" else True

    def refuse(name, problem):  # named as in the file, with our name when it differs
        theirs = _file_name(name, layout)
        raise WeightsError(path, theirs, problem + (f" (ours: {name})" if theirs != name else ""))

    placed, skipped, fresh = {}, {}, {}
    built = {k.split(".")[2] for k in target if k.startswith(BODY)}  # conv1, bn1, layer1..
    for name, array in mapped.items():
        shape = tuple(array.shape)
        if not in_scope(name):
            skipped.setdefault("outside the backbone (backbone only)", []).append(
                _file_name(name, layout))
        elif name not in target:
            if name.endswith((".running_mean", ".running_var")) and norm != "frozen_bn":
                refuse(name, _norm_problem(norm))
            if name.startswith(BODY) and name.split(".")[2] not in built:
                skipped.setdefault("stages the model does not build (cfg.backbone.features)",
                                   []).append(_file_name(name, layout))
                continue
            branch = next((b for b, prefixes in BRANCHES.items() if name.startswith(prefixes)
                           and not any(k.startswith(prefixes) for k in target)), None)
            if branch is not None:
                skipped.setdefault(f"the {branch} branch, which the model does not build",
                                   []).append(_file_name(name, layout))
                continue
            refuse(name, "the model has no such array (unknown key)")
        elif shape != tuple(target[name]):
            if fresh_classes and any(name.startswith(p) for p in layout.class_specific):
                fresh.setdefault(_classes_reason(mapped, target), []).append(name)
                continue
            refuse(name, f"shape mismatch: the file has {shape}, the model has "
                         f"{tuple(target[name])}")
        else:
            placed[name] = array
    fresh_names = {n for names in fresh.values() for n in names}
    has_statistics = any(k.endswith(".running_mean") for k in mapped)
    absent = {branch: prefixes for branch, prefixes in BRANCHES.items()
              if fresh_classes and not any(k.startswith(prefixes) for k in mapped)}
    for name in target:
        if name in placed or name in fresh_names:
            continue
        branch = next((b for b, prefixes in absent.items() if name.startswith(prefixes)), None)
        if not in_scope(name):
            fresh.setdefault("outside the backbone: left as initialised", []).append(name)
        elif branch is not None:
            fresh.setdefault(f"the {branch} branch, which the file does not have: left as "
                             "initialised", []).append(name)
        elif name.endswith((".running_mean", ".running_var")) and not has_statistics:
            refuse(name, "the model uses FrozenBatchNorm (cfg.backbone.norm='frozen_bn') but "
                         "the file has no BatchNorm statistics: it was trained with GroupNorm; "
                         "build the model with 'group_norm'")
        else:
            refuse(name, "missing from the file (the model needs it)")
    return placed, skipped, fresh


def _norm_problem(norm: str) -> str:
    return (f"the file holds BatchNorm statistics but the model's backbone uses {norm!r} "
            "(cfg.backbone.norm); build it with cfg.backbone.norm='frozen_bn' (the r50_fpn "
            "preset), as torchvision fine-tunes pretrained weights")


def _classes_reason(mapped: dict, target: dict) -> str:
    key = "roi_heads.box_predictor.cls_score.weight"
    if key in mapped and key in target:
        return (f"class-specific (file {mapped[key].shape[0]} classes, model "
                f"{target[key][0]}): fresh initialisation")
    return "class-specific, of another shape: fresh initialisation"


def _examples(names: list, n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _prepare(path, backbone_only: bool):
    wf = read_weights(path)
    layout = recognise(wf)
    mapped, skipped = rename(wf, layout)
    scope = "backbone" if backbone_only or layout.scope == "backbone" else "model"
    report = WeightsReport(str(path), layout.name, wf.container, scope)
    return wf, layout, mapped, skipped, report


def _merge(a: dict, b: dict) -> dict:
    out = {k: list(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, []).extend(v)
    return out


# ----------------------------------------------------------------------------- entry points


def import_weights(src, out, cfg: MaskRCNNConfig | None = None) -> WeightsReport:
    """Convert a weights file into ours: ``out`` (.npz) in the checkpoint layout.

    ``out`` holds ``model/<name>`` for every placed array and a ``meta`` JSON with
    ``weights`` (source, kind, container, scope) and, for a whole model, ``model_config``
    (so ``engine.checkpoint.load_checkpoint`` / ``read_meta`` read it as a checkpoint).
    Written atomically; on any refusal nothing is written and an existing ``out`` stays.

    Args:
        src: ``.pth``/``.pt`` (torch needed), ``.safetensors`` or ``.npz``.
        out: the ``.npz`` to write.
        cfg: the architecture to check against; default: the file's own ``model_config``
            (our checkpoints), else torchvision's ``r50_fpn`` with the file's ResNet depth
            and number of classes.
    Returns:
        a ``WeightsReport`` (``print(report)``).
    Raises:
        WeightsError: one line ``<file>: <key>: <problem>``.
    """
    src, out = str(src), str(out)
    if not out.endswith(".npz"):
        raise WeightsError(out, None, "the output must be an .npz file")
    wf, layout, mapped, skipped, report = _prepare(src, backbone_only=False)
    if cfg is None and "model_config" in wf.meta:
        cfg = MaskRCNNConfig.from_dict(wf.meta["model_config"])
    if cfg is None and layout.refuse:
        cfg = r50_fpn()  # only to name the keys that do not fit before refusing
    if cfg is None:
        try:
            cfg = infer_config(layout, mapped)
        except ValueError as err:
            raise WeightsError(src, BODY.rstrip("."), str(err)) from err
    target = {k: tuple(v.shape) for k, v in MaskRCNN(cfg).state_dict().items()}
    refuse_unsupported(src, layout, mapped, target)
    placed, more_skipped, _ = check_fit(src, layout, mapped, target, cfg.backbone.norm,
                                        fresh_classes=False)  # written as they are, or not
    report.mapped = [(_file_name(k, layout), k) for k in placed]
    report.skipped = _merge(skipped, more_skipped)
    meta = {"weights": {"source": os.path.basename(src), "kind": layout.name,
                        "container": wf.container, "scope": report.scope}}
    if report.scope == "model":
        meta["model_config"] = cfg.to_dict()
        # one of our checkpoints keeps its classes (its labels are not COCO category ids)
        meta.update({k: wf.meta[k] for k in ("class_names", "contiguous_to_cat_id")
                     if k in wf.meta})
    else:
        report.notes.append(f"a ResNet-{cfg.backbone.depth} backbone: load it with "
                            "load_pretrained into a model whose cfg.backbone.norm is "
                            "'frozen_bn' (FrozenBatchNorm, as torchvision fine-tunes)")
    arrays = {f"model/{k}": v for k, v in placed.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    report.out = write_npz_atomic(out, arrays)
    return report


def load_pretrained(model, weights, backbone_only: bool = False) -> WeightsReport:
    """Initialise ``model`` (a ``MaskRCNN``) from a weights file, in place.

    The whole model, or only ``backbone.body.*`` (an ImageNet ResNet, or ``backbone_only``);
    class-specific layers of another number of classes keep their initialisation. Every
    check runs before the first copy, so a refusal leaves the model as it was. Arrays are
    copied into the model's own (``Module.load_state_dict``): they land on its backend
    and in its dtype.

    Args:
        model: the ``MaskRCNN`` to initialise (any backend).
        weights: a file ``import_weights`` reads (ours, torchvision's ``.pth``, ...).
        backbone_only: take only the ResNet body from the file, whatever else it holds.
    Returns:
        a ``WeightsReport`` naming what was placed, skipped and left fresh.
    Raises:
        WeightsError: one line ``<file>: <key>: <problem>``.
    """
    wf, layout, mapped, skipped, report = _prepare(weights, backbone_only)
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    norm = model.cfg.backbone.norm
    refuse_unsupported(report.source, layout, mapped, target)
    placed, more_skipped, fresh = check_fit(report.source, layout, mapped, target, norm,
                                            backbone_only)
    model.load_state_dict(placed, strict=False)
    report.mapped = [(_file_name(k, layout), k) for k in placed]
    report.skipped, report.fresh = _merge(skipped, more_skipped), fresh
    b = model.cfg.backbone
    report.notes.append(f"model backbone: {b.norm}, {_frozen(b.frozen_stages)} "
                        f"(frozen_stages={b.frozen_stages})")
    return report


def _frozen(k: int) -> str:
    stages = ["stem"] + [f"layer{i}" for i in range(1, 5)]
    return f"{' + '.join(stages[:k])} frozen" if k else "nothing frozen"


def _file_name(ours: str, layout: Layout) -> str:
    return ours[len(layout.prefix):] if layout.prefix else ours
