"""The subset tool: a small COCO annotation file of chosen categories and at most N images.

``npmaskrcnn coco-subset`` runs :func:`make_coco_subset`, e.g. to turn the official
``instances_val2017.json`` (or ``person_keypoints_val2017.json``) into a file a CPU can train
on. Host-only code; no gradient flows here.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .coco import DatasetError, _index_records, load_coco_json, resolve_categories


def make_coco_subset(ann_file, out_file, categories=None, max_images=None, seed=0,
                     keep_empty=False, overwrite=False) -> dict:
    """Write a COCO JSON with only some categories and at most ``max_images`` images.

    Candidate images are those with at least one annotation of the chosen categories (all
    images when ``keep_empty``); ``max_images`` of them are drawn without replacement by
    ``np.random.default_rng(seed)``. The output keeps every top-level key of the input
    (``info``, ``licenses``, ...), the chosen categories' records (keypoint names and skeleton
    included), the chosen images and their annotations of those categories, sorted by id. Image
    files are not copied: the subset refers to the same image folder.

    Args:
        ann_file: input COCO JSON (never modified).
        out_file: output path; must differ from ``ann_file``; replaced only if ``overwrite``.
        categories: names and/or ids to keep (None: all).
        max_images: most images to keep (None: all candidates).
        seed: seed of the image draw.
        keep_empty: also draw from images without any annotation of the chosen categories.
        overwrite: allow replacing an existing ``out_file``.
    Returns:
        Stats: ``images``, ``annotations``, ``crowd``, ``categories`` counts and
        ``per_category`` {name: annotation count}.
    """
    ann_file, out_file = Path(ann_file), Path(out_file)
    if out_file.resolve() == ann_file.resolve() or (
        out_file.exists() and ann_file.exists() and os.path.samefile(out_file, ann_file)
    ):
        raise DatasetError(f"{out_file}: refusing to write the subset over its input file")
    if out_file.exists() and not overwrite:
        raise DatasetError(f"{out_file}: already exists; not replaced (overwrite=True, or "
                           "--overwrite on the command line, replaces it)")
    data = load_coco_json(ann_file)
    images, by_id = _index_records(data, ann_file)
    keep_cats = set(resolve_categories(categories, by_id, ann_file))
    annotations = [a for a in data["annotations"] if a["category_id"] in keep_cats]
    with_anns = {a["image_id"] for a in annotations}
    candidates = sorted(i for i in images if keep_empty or i in with_anns)
    if max_images is not None and max_images < len(candidates):
        picked = np.random.default_rng(seed).choice(len(candidates), max_images, replace=False)
        candidates = sorted(candidates[int(k)] for k in picked)
    if not candidates:
        names = sorted(by_id[c]["name"] for c in keep_cats)
        raise DatasetError(f"{ann_file}: no image has an annotation of the chosen categories "
                           f"({', '.join(names[:10])}{' ...' if len(names) > 10 else ''}; "
                           f"{len(data['annotations'])} annotations in the file); nothing written")
    chosen = set(candidates)

    subset = {k: v for k, v in data.items()}  # same keys in the same order as the input
    subset["images"] = [images[i] for i in candidates]
    subset["annotations"] = sorted((a for a in annotations if a["image_id"] in chosen),
                                   key=lambda a: a["id"])
    subset["categories"] = [by_id[c] for c in sorted(keep_cats)]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text(json.dumps(subset, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, out_file)  # atomic: a reader never sees half a file

    per_category = Counter(by_id[a["category_id"]]["name"] for a in subset["annotations"])
    return {
        "images": len(subset["images"]),
        "annotations": len(subset["annotations"]),
        "crowd": sum(1 for a in subset["annotations"] if a.get("iscrowd", 0)),
        "categories": len(subset["categories"]),
        "per_category": dict(per_category),
    }
