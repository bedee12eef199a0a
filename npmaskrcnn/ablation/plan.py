"""What to run: the modes, the data, and each variant's model configuration.

Data (chosen once, before any run, and not tuned on the outcome): the synthetic shapes of
:func:`~npmaskrcnn.data.shapes.alignment_settings` for stride 16, the paper's Table 2c stride:
squares, rings and crosses, half of them no larger than one stride-16 cell, rings and crosses
drawn with 1-2 pixel strokes, so that a feature cell misplaced by RoIPool's rounding is a large
fraction of the object. Every table uses these same images.

Budgets (``MODES``): ``--quick`` trains Table 2c's RoIPool and RoIAlign (avg), one seed, 600
iterations at batch 2 on 200 images; the default trains Table 2c's five rows, three seeds,
1500 iterations at batch 2 on 400 images, a length chosen from pilots on this data before
the measured runs; ``--full`` adds aligned=True, stride 32, FPN and Table 2b: 12 distinct
variants x 3 seeds = 36 runs, reusing the default's run folders. The README gives the
measured times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import PRESETS, MaskRCNNConfig
from ..data.coco import CocoDataset
from ..data.shapes import alignment_settings, make_shapes_dataset, shapes_paths
from .variants import TABLES, Variant


@dataclass
class Plan:
    """What to run: tables, seeds, the training length and the data."""

    tables: tuple
    seeds: int
    iters: int
    batch_size: int
    num_train: int
    num_val: int
    image_size: int = 128
    lr: float = 0.02
    warmup: int = 50
    preset: str = "shapes"
    data_seed: int = 0
    quick: bool = False


MODES = {  # per-run settings are the same for default and full, so full reuses default's runs
    "quick": Plan(("2c",), seeds=1, iters=600, batch_size=2, num_train=200, num_val=40,
                  quick=True),
    "default": Plan(("2c",), seeds=3, iters=1500, batch_size=2, num_train=400, num_val=60),
    "full": Plan(("2c", "aligned", "2d", "fpn", "2b"), seeds=3, iters=1500, batch_size=2,
                 num_train=400, num_val=60),
}


def plan_variants(plan: Plan) -> dict:
    """{table: [variants]}; ``--quick`` keeps only RoIPool and RoIAlign (avg) of Table 2c."""
    out = {t: list(TABLES[t][1]) for t in plan.tables}
    if plan.quick:
        out = {t: [v for v in vs if v.key.endswith(("pool-max", "align-avg"))]
               for t, vs in out.items()}
    return out


def prepare_data(args, plan: Plan, out: Path):
    """(train set, val set, a one-line description); generates the shapes data if needed."""
    if args.ann:
        if not (args.images and args.val_ann and args.val_images):
            raise SystemExit("ablate: --ann needs --images, --val-ann and --val-images")
        return (CocoDataset(args.ann, args.images, skip_empty=True),
                CocoDataset(args.val_ann, args.val_images),
                f"COCO subset {args.ann} (train) / {args.val_ann} (val)")
    settings = alignment_settings(16)
    root = out / "data"
    for split, n in (("train", plan.num_train), ("val", plan.num_val)):
        ann_file, _ = shapes_paths(root, split)
        have = json.loads(ann_file.read_text()) if ann_file.exists() else None
        if have is None or len(have["images"]) != n or have["info"]["generator"]["seed"] != \
                plan.data_seed or have["images"][0]["width"] != plan.image_size:
            make_shapes_dataset(root, n, image_size=plan.image_size, seed=plan.data_seed,
                                split_name=split, **settings)
    train, val = (CocoDataset(*shapes_paths(root, s)) for s in ("train", "val"))
    return train, val, (f"synthetic shapes, alignment_settings(16) = {settings}, "
                        f"{plan.num_train} train / {plan.num_val} val images of "
                        f"{plan.image_size} px, data seed {plan.data_seed}")


def model_config(variant: Variant, plan: Plan, num_classes: int, seed: int) -> MaskRCNNConfig:
    """The preset with the variant's RoI op / mask loss, at ``plan.image_size``, seed ``seed``."""
    cfg = PRESETS[plan.preset](num_classes=num_classes, image_size=plan.image_size)
    cfg.backbone = replace(cfg.backbone, features=variant.features)
    cfg.roi_heads = replace(cfg.roi_heads, pooler=variant.pooler, aligned=variant.aligned,
                            aggregation=variant.aggregation, mask_loss=variant.mask_loss,
                            class_agnostic_mask=variant.class_agnostic_mask)
    cfg.seed = seed
    return cfg
