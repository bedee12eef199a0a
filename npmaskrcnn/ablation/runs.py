"""One run of the ablation (train + COCOeval, resumable), and the finished runs read back.

For seed k every variant of one data set sees the same data, the same initial weights
(``cfg.seed = k``; the poolers have no parameters, and the sha256 of the initial weights is
stored per run and checked) and the same batch order (``TrainConfig.seed = k``). Runs live
in ``OUT/<data>/<features>/<variant>/seed<k>/`` (a variant shared by two tables is trained
once); a run with ``metrics.json`` is finished and skipped, an interrupted one resumes from
its ``checkpoint.npz``. ``spec.json`` records the variant, the data, the schedule and the
whole model configuration: a folder made with any other setting is refused. A run records
the COCO AP, AP50, AP75 of each branch its model has: mask (``segm``) or keypoints (OKS),
and boxes (``bbox``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..backend import asnumpy
from ..engine.evaluate import evaluate
from ..engine.trainer import TrainConfig, Trainer
from ..files import atomic_write
from ..model.resize import resize_boxes, resized_image_size
from .plan import Plan, model_config
from .variants import Variant

STATS = ("AP", "AP50", "AP75")  # the COCO numbers a run records, per iou type


def weight_digests(model) -> dict:
    """sha256 (16 hex digits) of the parameters of each submodule (``backbone.body``,
    ``rpn.head``, ``roi_heads.mask_predictor``, ...): to prove identical initial weights."""
    groups = {}
    for name, value in sorted(model.state_dict().items()):
        h = groups.setdefault(".".join(name.split(".")[:2]), hashlib.sha256())
        h.update(name.encode())
        h.update(np.ascontiguousarray(asnumpy(value)).tobytes())
    return {k: h.hexdigest()[:16] for k, h in groups.items()}


def rois_per_level(model, dataset) -> list | None:
    """How many ground-truth boxes of ``dataset`` the model's FPN level rule sends to each
    level it pools from (P2, P3, ...), in the model's resized image coordinates; None for a
    single-level model. The positive RoIs the heads train on are these boxes and proposals
    overlapping them by IoU >= 0.5, so of about their size. The box pooler's rule, which
    every RoI branch shares (a keypoint model has no mask pooler). No gradient."""
    pooler = model.roi_heads.box_roi_pool
    if len(pooler.scales) == 1:
        return None
    t = model.cfg.transform
    min_size = t.min_size[-1] if isinstance(t.min_size, (tuple, list)) else t.min_size
    counts = np.zeros(len(pooler.scales), np.int64)
    for i in range(len(dataset)):
        target = dataset.load_target(i)
        if len(target["boxes"]) == 0:
            continue
        size = tuple(target["masks"].shape[-2:])
        boxes = resize_boxes(target["boxes"], size, resized_image_size(*size, min_size,
                                                                       t.max_size))
        rois = np.concatenate([np.zeros((len(boxes), 1), boxes.dtype), boxes], axis=1)
        counts += np.bincount(pooler.levels(rois), minlength=len(pooler.scales))
    return counts.tolist()


def _write_json(path: Path, data) -> None:
    with atomic_write(path, "w") as f:  # a reader never sees half a file
        f.write(json.dumps(data, indent=1))


def run_one(variant: Variant, seed: int, plan: Plan, data, out: Path, backend=None,
            progress: bool = True) -> dict:
    """Train (or resume) and evaluate one variant for one seed; returns its ``metrics.json``.

    A finished run (``metrics.json`` present) is read, not retrained. Settings are recorded in
    ``spec.json``; a run folder holding other settings is an error, never silently mixed.
    """
    from ..model.mask_rcnn import MaskRCNN

    train_set, val_set, description = data
    run_dir = out / variant.key / f"seed{seed}"
    cfg = model_config(variant, plan, train_set.num_classes, seed)
    # the figures' image size only where it matters, so that runs made before Table 6 keep
    # their spec (and are still found finished, not refused as other settings)
    skip = ("tables", "seeds", "quick") + ("figures_image_size",) * (variant.data != "figures")
    spec = json.loads(json.dumps({
        "variant": variant.settings(), "seed": seed, "data": description,
        "train": {k: v for k, v in asdict(plan).items() if k not in skip},
        "model": cfg.to_dict()}))
    for path in (run_dir / "spec.json", run_dir / "metrics.json"):
        found = json.loads(path.read_text()) if path.exists() else spec
        if found.get("spec", found) != spec:
            raise SystemExit(f"ablate: {run_dir} was run with other settings; choose another --out")
    if (run_dir / "metrics.json").exists():
        return json.loads((run_dir / "metrics.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "spec.json", spec)
    model = MaskRCNN(cfg, backend=backend)
    digests = weight_digests(model)  # the initial weights, before any step or resume
    tcfg = TrainConfig(iters=plan.iters, batch_size=plan.batch_size, lr=plan.lr,
                       warmup_iters=plan.warmup, steps=(int(0.8 * plan.iters),), seed=seed,
                       checkpoint_every=max(plan.iters // 4, 1), clip_grad_norm=10.0)
    trainer = Trainer(model, train_set, tcfg, str(run_dir), backend=backend, progress=progress,
                      extra_meta={"class_names": train_set.class_names})
    resume = os.path.exists(trainer.checkpoint_path)
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer.train(resume=resume)
    t1 = time.perf_counter()
    metrics = evaluate(model, val_set, out_dir=run_dir / "eval", progress=False)
    # the iou types of the model's branches; -1 (COCO's undefined) where COCOeval had none
    types = ["segm"] * cfg.roi_heads.mask_on + ["keypoints"] * cfg.keypoint.on + ["bbox"]
    record = {"spec": spec, "name": variant.name, "seed": seed, "resumed": resume,
              "metrics": {t: {k: metrics.get(t, {}).get(k, -1.0) for k in STATS}
                          for t in types},
              "init_digests": digests, "train_seconds": t1 - t0,
              "eval_seconds": time.perf_counter() - t1,
              # CPU time of this process (all its threads): with one thread, about the wall
              # time the run would take on a core of its own (the machine may be shared)
              "cpu_seconds": time.process_time() - cpu0,
              "rois_per_level": rois_per_level(model, train_set)}
    _write_json(run_dir / "metrics.json", record)
    return record


def collect(out: Path, variants, seeds: int) -> dict:
    """{variant key: {seed: metrics.json record}} of the finished runs."""
    found = {}
    for v in variants:
        for s in range(seeds):
            path = out / v.key / f"seed{s}" / "metrics.json"
            if path.exists():
                found.setdefault(v.key, {})[s] = json.loads(path.read_text())
    return found


def value(record: dict, metric) -> float:
    """A metric of a run as a fraction; NaN where COCO wrote -1 (undefined) or the run's
    model has no such branch (``has``)."""
    x = record["metrics"].get(metric[0], {}).get(metric[1], -1.0)
    return math.nan if x < 0 else x


def has(record: dict, metric) -> bool:
    """Whether a run records ``metric``: its model has the branch (keypoint AP of a mask
    model is not 0 nor undefined, it is not there)."""
    return metric[1] in record["metrics"].get(metric[0], {})


def mean_over_seeds(records: dict, key: str, metric) -> float:
    """Mean of a metric over the finished seeds of one variant (NaN-ignoring)."""
    return float(np.nanmean([value(r, metric) for r in records[key].values()]))


def paired(records: dict, a: str, b: str, metric) -> tuple[list, list]:
    """Values of variants ``a`` and ``b`` over the seeds both finished, in seed order."""
    ra, rb = records.get(a, {}), records.get(b, {})
    seeds = sorted(set(ra) & set(rb))
    return [value(ra[s], metric) for s in seeds], [value(rb[s], metric) for s in seeds]


def check_init(records: dict) -> tuple[int, list]:
    """Compare initial-weight digests across variants of a seed, backbone and data (the
    mask predictor only between equal class-agnostic settings). Returns (pairs checked,
    problems)."""
    runs = [(r["seed"], r["spec"]["variant"], r["init_digests"], key)
            for key, by_seed in records.items() for r in by_seed.values()]
    checked, problems = 0, []
    for i, (s1, v1, d1, k1) in enumerate(runs):
        for s2, v2, d2, k2 in runs[i + 1:]:
            if s1 != s2 or v1["features"] != v2["features"] or v1.get("data") != v2.get("data"):
                continue
            checked += 1
            same_mask = v1["class_agnostic_mask"] == v2["class_agnostic_mask"]
            bad = [g for g in d1 if (same_mask or "mask_predictor" not in g) and d1[g] != d2.get(g)]
            if bad:
                problems.append(f"seed {s1}: {k1} and {k2} differ in {', '.join(bad)}")
    return checked, problems
