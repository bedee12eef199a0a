"""What to run: the modes, the data of each table, and each variant's model configuration.

The data (``DATA``; chosen once, before any run of this design, and not tuned on the
outcome), synthetic shapes (:mod:`npmaskrcnn.data.shapes`) for the mask tables and
stick figures (:mod:`npmaskrcnn.data.figures`) for the keypoint table:

- ``small`` (Table 2c, aligned, FPN): :func:`~npmaskrcnn.data.shapes.alignment_settings` for
  stride 16, the paper's Table 2c stride, on 128-px images: squares, rings and crosses, half
  of them no larger than one stride-16 cell, rings and crosses drawn with 1-2 px strokes,
  so that a feature cell misplaced by RoIPool's rounding is a large fraction of the object.
- ``large`` (Table 2d): 256-px images, so that the stride-32 map is 8x8 (at 128 px it was
  4x4 and neither op learned to detect); objects 24-160 px, half of them no larger than one
  stride-32 cell, strokes 2-4 px: the ``small`` data scaled by two with the stride.
- ``compete`` (Table 2b): the ``small`` data with six classes in three pairs that share an
  outline (square / rounded square, disc / ring, cross / holed cross), each object placed
  over an earlier object of another class with probability 0.5
  (:func:`~npmaskrcnn.data.shapes.competition_settings`), so that classes compete in a RoI.
- ``figures`` (Table 6): the stick-figure persons with COCO's 17 keypoints that
  ``npmaskrcnn train --data figures`` generates (the generator's defaults, 160-px images:
  ``engine.rundir.GENERATED["figures"]``), seen by the model at 1.5 times their size
  (240 px) as that command does. Its variants are the ``figures`` preset (Keypoint R-CNN:
  the FPN model with a keypoint branch of 4 x conv 64, no mask branch) whatever
  ``--preset`` says, with the variant's RoI op in every RoI branch (box and keypoint).

Budgets (``MODES``): ``--quick`` trains the FPN model's RoIPool and RoIAlign (avg), one seed,
1200 iterations at batch 2 on 200 images, the two runs at once: about 5 min on 2 cores of
their own (a first trial of 800 iterations measured 2.2 and 2.9 min of CPU time per run,
so 1200 fill the 5 minutes). One seed gives no interval, which its report says. The
default trains Table 2c's five rows, three seeds, 1500 iterations at batch 2 on 400
images, a length chosen from pilots on the ``small`` data before the measured runs;
``--full`` adds aligned=True, Table 2d, FPN, Table 2b and Table 6, all at the same length:
17 distinct variants x 3 seeds = 51 runs, reusing the default's run folders (``--tables 6``
trains Table 6's 2 x 3 runs alone, into the same folders). The README gives the measured
times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import PRESETS, MaskRCNNConfig
from ..data.coco import CocoDataset
from ..data.shapes import (
    alignment_settings,
    competition_settings,
    make_shapes_dataset,
    overlaps_another_class,
    shapes_paths,
    shapes_settings,
)
from ..engine.rundir import GENERATED
from .variants import KEYPOINT_DATA, TABLES, Variant

FIGURES = GENERATED["figures"]  # the stick figures as ``npmaskrcnn train --data figures``


@dataclass
class Plan:
    """What to run: tables, seeds, the training length and the data."""

    tables: tuple
    seeds: int
    iters: int
    batch_size: int
    num_train: int
    num_val: int
    image_size: int = 128  # the small and compete data
    large_image_size: int = 256  # the large data of Table 2d
    figures_image_size: int = FIGURES.image_size  # the figures data of Table 6 (160)
    lr: float = 0.02
    warmup: int = 50
    preset: str = "shapes"
    data_seed: int = 0
    quick: bool = False


MODES = {  # per-run settings are the same for default and full, so full reuses default's runs
    "quick": Plan(("fpn",), seeds=1, iters=1200, batch_size=2, num_train=200, num_val=40,
                  quick=True),
    "default": Plan(("2c",), seeds=3, iters=1500, batch_size=2, num_train=400, num_val=60),
    "full": Plan(("2c", "aligned", "2d", "fpn", "2b", "6"), seeds=3, iters=1500, batch_size=2,
                 num_train=400, num_val=60),
}

DATA = {  # name: the generator's keyword arguments (the image size is the plan's)
    "small": alignment_settings(16),
    "large": {**alignment_settings(32), "min_size": 24, "max_size": 160,
              "thin_width": (2.0, 4.0)},
    "compete": competition_settings(16),
    "figures": {},  # make_figures_dataset's defaults, as the train command
}
INPUT_SCALE = {"figures": FIGURES.scale}  # the model sees the images at scale x their size


def plan_variants(plan: Plan) -> dict:
    """{table: [variants]}; ``--quick`` keeps only RoIPool and RoIAlign (avg)."""
    out = {t: list(TABLES[t][1]) for t in plan.tables}
    if plan.quick:
        out = {t: [v for v in vs if v.key.endswith(("pool-max", "align-avg"))]
               for t, vs in out.items()}
    return out


def image_size(data: str, plan: Plan) -> int:
    """The side of the generated images of ``data``."""
    sizes = {"large": plan.large_image_size, "figures": plan.figures_image_size}
    return sizes.get(data, plan.image_size)


def input_size(data: str, plan: Plan) -> int:
    """The side at which the model sees the images of ``data``: their own for the shapes,
    1.5 times it for the figures (``int(scale * size)``, as ``npmaskrcnn train``)."""
    return int(INPUT_SCALE.get(data, 1) * image_size(data, plan))


def overlap_fraction(ann_file) -> float:
    """The share of the objects of a COCO file whose box overlaps the box of an object of
    another class (:func:`~npmaskrcnn.data.shapes.overlaps_another_class`)."""
    objects = {}
    for a in json.loads(Path(ann_file).read_text())["annotations"]:
        x, y, w, h = a["bbox"]
        objects.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], a["category_id"]))
    flags = [overlaps_another_class(*zip(*objs)) for objs in objects.values()]
    return float(np.concatenate(flags).mean()) if flags else float("nan")


def _up_to_date(ann_file: Path, n: int, size: int, seed: int, settings: dict) -> bool:
    have = shapes_settings(ann_file)
    want = json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v
                                  for k, v in settings.items()}))
    return (have is not None and have["num_images"] == n and have["seed"] == seed and
            have["image_size"] == [size, size] and
            all(have.get(k) == v for k, v in want.items()))


def keypoint_summary(ann_file) -> str:
    """How many persons a COCO person-keypoints file holds and how many of their keypoints
    are labelled (v > 0), on average."""
    anns = json.loads(Path(ann_file).read_text())["annotations"]
    labelled = [int(np.count_nonzero(np.asarray(a["keypoints"])[2::3])) for a in anns]
    mean = float(np.mean(labelled)) if labelled else float("nan")
    return f"{len(anns)} persons in the training images, {mean:.1f} of 17 keypoints labelled"


def prepare_data(args, plan: Plan, out: Path, names) -> dict:
    """{data name: (train set, val set, a one-line description)} for the data ``names``;
    generates the shapes (or stick figures) in ``out/data/<name>`` unless already there with
    the same settings. With ``--ann`` every name maps to the given COCO data."""
    if args.ann:
        if not (args.images and args.val_ann and args.val_images):
            raise SystemExit("ablate: --ann needs --images, --val-ann and --val-images")
        coco = (CocoDataset(args.ann, args.images, skip_empty=True),
                CocoDataset(args.val_ann, args.val_images),
                f"COCO subset {args.ann} (train) / {args.val_ann} (val)")
        return {name: coco for name in names}
    found = {}
    for name in names:
        if name not in DATA:
            raise SystemExit(f"ablate: unknown data {name!r}; choose from {sorted(DATA)}")
        root, size, settings = out / "data" / name, image_size(name, plan), DATA[name]
        figures = name in KEYPOINT_DATA
        make, paths = (FIGURES.make, FIGURES.paths) if figures else (make_shapes_dataset,
                                                                     shapes_paths)
        for split, n in (("train", plan.num_train), ("val", plan.num_val)):
            if not _up_to_date(paths(root, split)[0], n, size, plan.data_seed, settings):
                make(root, n, image_size=size, seed=plan.data_seed, split_name=split,
                     **settings)
        train, val = (CocoDataset(*paths(root, s)) for s in ("train", "val"))
        counts = f"{plan.num_train} train / {plan.num_val} val images of {size} px"
        if figures:
            found[name] = (train, val, f"`{name}`: synthetic stick figures (persons, COCO's 17 "
                           f"keypoints, the generator's defaults), {counts} seen at "
                           f"{input_size(name, plan)} px, data seed {plan.data_seed}; "
                           f"{keypoint_summary(paths(root, 'train')[0])} per person")
            continue
        share = overlap_fraction(paths(root, "train")[0])
        found[name] = (train, val, f"`{name}`: synthetic shapes {settings}, {counts}, data seed "
                       f"{plan.data_seed}; {100 * share:.0f}% of the training objects overlap "
                       f"an object of another class")
    return found


def model_config(variant: Variant, plan: Plan, num_classes: int, seed: int) -> MaskRCNNConfig:
    """The preset with the variant's RoI op / mask loss, at its data's input size, seed
    ``seed``. On keypoint data the preset is ``figures`` (Keypoint R-CNN, no mask branch)
    whatever ``plan.preset`` is; the RoI op reaches its box and keypoint poolers alike
    (``RoIHeads`` builds both from ``roi_heads.pooler``, ``aggregation`` and ``aligned``)."""
    preset = "figures" if variant.data in KEYPOINT_DATA else plan.preset
    cfg = PRESETS[preset](num_classes=num_classes, image_size=input_size(variant.data, plan))
    cfg.backbone = replace(cfg.backbone, features=variant.features)
    cfg.roi_heads = replace(cfg.roi_heads, pooler=variant.pooler, aligned=variant.aligned,
                            aggregation=variant.aggregation, mask_loss=variant.mask_loss,
                            class_agnostic_mask=variant.class_agnostic_mask)
    if variant.data in KEYPOINT_DATA:  # Table 6 was designed and measured (2026-12-04) with
        # the shapes tables' level rule, 56 px to P4; kept, so that its runs stay valid (the
        # figures preset itself has used torchvision's 224 since, and 448 since 2026-12-05:
        # README, Keypoints)
        cfg.roi_heads = replace(cfg.roi_heads, canonical_scale=56)
        # and its keypoint head of 4 x conv 64 (the preset's has 128 channels since),
        # torchvision's scores and no flip test (the preset ranks by box x keypoint
        # confidence and averages the mirror's heatmaps since 2026-12-05)
        cfg.keypoint = replace(cfg.keypoint, layers=(64,) * 4, score="box", flip_test=False,
                               rois_per_image=None)
        # every positive RoI trains the keypoint branch (the preset caps them at 12 per image
        # since 2026-12-05), and the RPN keeps the shapes' anchors on all five levels (the
        # preset has none on P2 and P3 since 2026-12-05)
        cfg.rpn = replace(cfg.rpn, anchor_sizes=PRESETS["shapes"]().rpn.anchor_sizes)
    cfg.seed = seed
    return cfg
