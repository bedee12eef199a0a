"""``npmaskrcnn make-shapes``, ``make-figures`` and ``coco-subset``: data files, never written
over unless asked (``--overwrite``)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import CommandError, plural, refuse_file


def _output_split(a, paths):
    """The split's ``(annotation file, image folder)`` in OUT_DIR; a split already there is
    an error unless --overwrite."""
    ann_file, image_dir = paths(refuse_file(a.out_dir, "OUT_DIR"), a.split)
    if ann_file.exists() and not a.overwrite:
        raise CommandError(f"{ann_file}: a '{a.split}' split is already there; not replaced",
                           hint="add --overwrite to generate it again, or choose another "
                           "OUT_DIR or --split")
    return ann_file, image_dir


def make_shapes(a):
    """Generate a split of shapes data; an existing split is replaced only with --overwrite."""
    from ..data.shapes import make_shapes_dataset, shapes_paths

    ann_file, image_dir = _output_split(a, shapes_paths)
    make_shapes_dataset(a.out_dir, a.num_images, image_size=a.image_size, seed=a.seed,
                        split_name=a.split, classes=a.classes)
    print(f"wrote {plural(a.num_images, 'image')} of {', '.join(a.classes)} to {image_dir} "
          f"and their annotations to {ann_file}")


def make_figures(a):
    """Generate a split of stick figures; an existing split is replaced only with --overwrite."""
    from ..data.figures import figures_paths, make_figures_dataset

    ann_file, image_dir = _output_split(a, figures_paths)
    make_figures_dataset(a.out_dir, a.num_images, image_size=a.image_size, seed=a.seed,
                         split_name=a.split)
    with open(ann_file, encoding="utf-8") as f:
        people = len(json.load(f)["annotations"])
    print(f"wrote {plural(a.num_images, 'image')} of stick figures ({people} persons) to "
          f"{image_dir} and their annotations to {ann_file}")


def coco_subset(a):
    """Write a COCO subset; an existing OUT is replaced only with --overwrite."""
    from ..data.coco_subset import make_coco_subset

    out = Path(a.out_file)
    if out.is_dir():
        raise CommandError(f"{out}: is a folder, but OUT must be a JSON file name")
    if out.exists() and not a.overwrite and out.resolve() != Path(a.ann_file).resolve():
        raise CommandError(f"{out}: already exists; not replaced",
                           hint="add --overwrite to replace it, or choose another OUT")
    stats = make_coco_subset(a.ann_file, out, categories=a.categories, max_images=a.max_images,
                             seed=a.seed, keep_empty=a.keep_empty, overwrite=a.overwrite)
    print(f"wrote {out}: {plural(stats['images'], 'image')}, "
          f"{plural(stats['annotations'], 'annotation')} ({stats['crowd']} crowd) of "
          f"{plural(stats['categories'], 'category')}")
    per = ", ".join(f"{name} {n}" for name, n in sorted(stats["per_category"].items()))
    print(f"annotations per category: {per or 'none'}")
