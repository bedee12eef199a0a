"""The RoIAlign vs RoIPool ablation: the shape of the paper's Table 2b/2c/2d, with error bars.

Models that differ only in the RoI operation (Table 2c: RoIPool, RoIWarp max/avg, RoIAlign
max/avg, plus RoIAlign ``aligned=True``; Table 2d: stride 32; FPN) or only in the mask loss
(Table 2b: per-class sigmoid vs softmax, class-specific vs class-agnostic) are trained and
scored with COCOeval on a held-out split. For seed k every variant sees the same data, the
same initial weights (``cfg.seed = k``; the poolers have no parameters, and the sha256 of the
initial weights is stored per run and checked) and the same batch order (``TrainConfig.seed =
k``). Runs live in ``OUT/<features>/<variant>/seed<k>/`` (a variant shared by two tables, e.g.
RoIAlign avg at C4 in 2b and 2c, is trained once); a run with ``metrics.json`` is finished and
skipped, an interrupted one resumes from its ``checkpoint.npz``. The report is
``OUT/report.md``, ``OUT/results.csv`` (one row per run) and ``OUT/figure.png``.

Statistics over seeds: mean ± sample standard deviation (n - 1); a contrast A − B is the
paired difference d_k = A_k − B_k with the Student-t interval d̄ ± t(0.975, n-1) s_d / √n.
With one seed there is no standard deviation and no interval (NaN, printed "n/a"), and a
prediction that needs an interval is reported as not tested.

Data (chosen once, before any run, and not tuned on the outcome): the synthetic shapes of
:func:`~npmaskrcnn.data.shapes.alignment_settings` for stride 16, the paper's Table 2c stride:
squares, rings and crosses, half of them no larger than one stride-16 cell, rings and crosses
drawn with 1-2 pixel strokes, so that a feature cell misplaced by RoIPool's rounding is a large
fraction of the object. Every table uses these same images.

Budgets (``MODES``), timed on the 2-core development machine. ``--quick`` trains Table 2c's
RoIPool and RoIAlign (avg), one seed, 600 iterations at batch 2 on 200 images: 3.4 min on the
quiet machine (mask AP 2.2 vs 4.6), 3-6x that while other jobs load it. The default trains
Table 2c's five rows, three seeds, 1500 iterations at batch 2 on 400 images, a length chosen
from pilots on this data (RoIPool / RoIAlign mask AP 0.3 / 0.2 after 300 iterations, 1.4 /
3.6 after 600, 3.6 / 7.5 after 1500, box AP 12.6 / 22.5). A C4 train step takes 0.17 s
(RoIAlign or RoIWarp avg) to 0.30 s (the max variants, RoIPool) on the quiet machine, so the
15 runs take about 1.5 h one after another. These small models keep one core busy and gain
little from a second BLAS thread, so ``--jobs 2`` (two worker processes of one thread each,
sharing the runs through lock files) nearly halves that on 2 cores. ``--full`` adds
aligned=True, stride 32, FPN and Table 2b: 12 distinct variants x 3 seeds = 36 runs, about
3.5 h one at a time; it reuses the default's run folders.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backend import asnumpy, to_backend
from ..config import PRESETS, MaskRCNNConfig
from ..data.coco import CocoDataset
from ..data.shapes import alignment_settings, make_shapes_dataset, shapes_paths
from .checkpoint import load_checkpoint, read_meta
from .evaluate import evaluate
from .trainer import TrainConfig, Trainer

METRICS = (("segm", "AP"), ("segm", "AP50"), ("segm", "AP75"),
           ("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"))
PAPER = "paper (COCO, R50)"


@dataclass(frozen=True)
class Variant:
    """One model setting; ``paper`` holds the paper's mask (+ box) AP, AP50, AP75 in %."""

    name: str
    features: str  # "c4" (stride 16) | "c5" (stride 32) | "fpn"
    pooler: str = "align"
    aggregation: str = "avg"
    aligned: bool = False
    mask_loss: str = "sigmoid"
    class_agnostic_mask: bool = False
    paper: tuple = ()

    @property
    def key(self) -> str:
        """The run folder, e.g. ``c4/align-avg``: equal settings share one run."""
        parts = [self.pooler, self.aggregation] + ["aligned"] * self.aligned
        parts += ["softmax"] * (self.mask_loss == "softmax")
        parts += ["agnostic"] * self.class_agnostic_mask
        return f"{self.features}/{'-'.join(parts)}"

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("name", "paper")}


def _v(name, features, pooler="align", aggregation="avg", paper=(), **kw) -> Variant:
    return Variant(name, features, pooler, aggregation, paper=paper, **kw)


POOL, ALIGN = "RoIPool", "RoIAlign"
TABLES = {  # paper numbers: Table 2 of He et al. 2017 and the text of section 4.2
    "2c": ("Table 2c: the RoI operation at stride 16 (C4)", [
        _v(POOL, "c4", "pool", "max", (26.9, 48.8, 26.4)),
        _v("RoIWarp", "c4", "warp", "max", (27.2, 49.2, 27.1)),
        _v("RoIWarp", "c4", "warp", "avg", (27.1, 48.9, 27.1)),
        _v(ALIGN, "c4", "align", "max", (30.2, 51.0, 31.8)),
        _v(ALIGN, "c4", "align", "avg", (30.3, 51.2, 31.5))]),
    "aligned": ("RoIAlign aligned=False (the paper's) vs True (half-pixel shift), stride 16", [
        _v(ALIGN, "c4", "align", "avg", (30.3, 51.2, 31.5)),
        _v("RoIAlign aligned=True", "c4", "align", "avg", aligned=True)]),
    "2d": ("Table 2d: the RoI operation at stride 32 (C5)", [
        _v(POOL, "c5", "pool", "max", (23.6, 46.5, 21.6, 28.2, 52.7, 26.9)),
        _v(ALIGN, "c5", "align", "avg", (30.9, 51.8, 32.1, 34.0, 55.3, 36.4))]),
    "fpn": ("FPN (section 4.2: RoIAlign +1.5 mask AP, +0.5 box AP)", [
        _v(POOL, "fpn", "pool", "max"), _v(ALIGN, "fpn", "align", "avg")]),
    "2b": ("Table 2b: mask loss at stride 16 (C4, RoIAlign avg)", [
        _v("sigmoid, class-specific", "c4", paper=(30.3, 51.2, 31.5)),
        _v("softmax, class-specific", "c4", mask_loss="softmax", paper=(24.8, 44.1, 25.1)),
        _v("sigmoid, class-agnostic", "c4", class_agnostic_mask=True, paper=(29.7,))]),
}


def contrasts(table: str, variants) -> list:
    """The paired differences (A, B) a table reports: each RoI op − RoIPool, RoIAlign
    aligned=True − False; for 2b the paper's choice (sigmoid, class-specific) − the others."""
    by_key = {v.key: v for v in variants}
    if table == "2b":
        return [(variants[0], v) for v in variants[1:]]
    pool = [v for v in variants if v.pooler == "pool"]
    pairs = [(v, pool[0]) for v in variants if pool and v is not pool[0]]
    plain = by_key.get(f"{variants[0].features}/align-avg")
    pairs += [(v, plain) for v in variants if v.aligned and plain is not None]
    return pairs


# ---------------------------------------------------------------------------- statistics
def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor n − 1); the std is NaN for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    F(t) = 1/2 + ∫_0^t f, f(u) = Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) (1 + u²/ν)^(-(ν+1)/2), by
    Simpson's rule on 4000 intervals, inverted by bisection (``scipy.stats.t.ppf``).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t):
        u = np.linspace(0.0, t, 4001)
        f = c * (1 + u * u / df) ** (-(df + 1) / 2)
        return 0.5 + (u[1] - u[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def paired_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of d = a − b over paired seeds, a Student-t interval with n − 1
    degrees of freedom; low and high are NaN for one pair."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, sd = mean_std(d)
    if d.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, d.size - 1) * sd / math.sqrt(d.size)
    return mean, mean - half, mean + half


# ---------------------------------------------------------------------------- runs
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


def weight_digests(model) -> dict:
    """sha256 (16 hex digits) of the parameters of each submodule (``backbone.body``,
    ``rpn.head``, ``roi_heads.mask_predictor``, ...): to prove identical initial weights."""
    groups = {}
    for name, value in sorted(model.state_dict().items()):
        h = groups.setdefault(".".join(name.split(".")[:2]), hashlib.sha256())
        h.update(name.encode())
        h.update(np.ascontiguousarray(asnumpy(value)).tobytes())
    return {k: h.hexdigest()[:16] for k, h in groups.items()}


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


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


def run_one(variant: Variant, seed: int, plan: Plan, data, out: Path, backend=None,
            progress: bool = True) -> dict:
    """Train (or resume) and evaluate one variant for one seed; returns its ``metrics.json``.

    A finished run (``metrics.json`` present) is read, not retrained. Settings are recorded in
    ``spec.json``; a run folder holding other settings is an error, never silently mixed.
    """
    from ..model.mask_rcnn import MaskRCNN

    train_set, val_set, description = data
    run_dir = out / variant.key / f"seed{seed}"
    spec = json.loads(json.dumps({
        "variant": variant.settings(), "seed": seed, "data": description,
        "train": {k: v for k, v in asdict(plan).items() if k not in ("tables", "seeds", "quick")}}))
    for path in (run_dir / "spec.json", run_dir / "metrics.json"):
        found = json.loads(path.read_text()) if path.exists() else spec
        if found.get("spec", found) != spec:
            raise SystemExit(f"ablate: {run_dir} was run with other settings; choose another --out")
    if (run_dir / "metrics.json").exists():
        return json.loads((run_dir / "metrics.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "spec.json", spec)
    model = MaskRCNN(model_config(variant, plan, train_set.num_classes, seed), backend=backend)
    digests = weight_digests(model)  # the initial weights, before any step or resume
    tcfg = TrainConfig(iters=plan.iters, batch_size=plan.batch_size, lr=plan.lr,
                       warmup_iters=plan.warmup, steps=(int(0.8 * plan.iters),), seed=seed,
                       checkpoint_every=max(plan.iters // 4, 1), clip_grad_norm=10.0)
    trainer = Trainer(model, train_set, tcfg, str(run_dir), backend=backend, progress=progress,
                      extra_meta={"class_names": train_set.class_names})
    resume = os.path.exists(trainer.checkpoint_path)
    t0 = time.perf_counter()
    trainer.train(resume=resume)
    t1 = time.perf_counter()
    metrics = evaluate(model, val_set, out_dir=run_dir / "eval", progress=False)
    record = {"spec": spec, "name": variant.name, "seed": seed, "resumed": resume,
              "metrics": {t: {k: metrics.get(t, {}).get(k, -1.0) for _, k in METRICS}
                          for t in ("segm", "bbox")},
              "init_digests": digests, "train_seconds": t1 - t0,
              "eval_seconds": time.perf_counter() - t1}
    _write_json(run_dir / "metrics.json", record)
    return record


@contextmanager
def claim(run_dir: Path):
    """Hold ``run_dir/running.lock`` while a run trains, so that several ``ablate`` processes
    (``--jobs``, or the same command started twice) share the runs without training one twice.

    Yields True when this process holds the lock, False when another live process does. A
    lock left behind by a process that died (a crash, a kill) is taken over.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / "running.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_holder_alive(lock):
                yield False
                return
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False  # lost a race for the lock twice: leave the run to the winner


def _lock_holder_alive(lock: Path) -> bool:
    """Whether the process named in a lock file ("host pid") is still running. A lock from
    another host counts as alive (it cannot be checked); an empty one (its writer is between
    open and write) as alive for its first 10 seconds."""
    try:
        text, age = lock.read_text().split(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if len(text) != 2 or not text[1].isdigit():
        return age < 10
    if text[0] != socket.gethostname():
        return True
    try:
        os.kill(int(text[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def train_runs(jobs, plan: Plan, data, out: Path, backend=None, progress: bool = True) -> None:
    """Train and evaluate each (variant, seed) not finished yet and not held by another
    process, in order."""
    bar = tqdm(jobs, desc="ablation runs", unit="run", disable=not progress)
    for v, s in bar:
        bar.set_postfix_str(f"{v.key} seed{s}")
        with claim(out / v.key / f"seed{s}") as mine:
            if mine:
                run_one(v, s, plan, data, out, backend, progress)


def run_workers(num: int, argv: list, jobs, out: Path, progress: bool = True) -> None:
    """Train the runs in ``num`` worker processes at once (``--jobs``), each with
    ``cpu_count // num`` BLAS threads unless the environment already sets them; show one
    progress bar of finished runs. On an error or Ctrl-C the workers are stopped; finished
    runs and checkpoints stay, and the same command resumes."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // num))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    cmd = [sys.executable, "-m", "npmaskrcnn.engine.ablation", *argv, "--worker", "--jobs", "1",
           "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(num)]
    def finished():
        return sum((out / v.key / f"seed{s}" / "metrics.json").exists() for v, s in jobs)

    # runs finished before this command start the bar, so its rate and ETA are this run's
    bar = tqdm(total=len(jobs), initial=finished(), desc=f"ablation runs ({num} workers)",
               unit="run", disable=not progress)
    try:
        while any(p.poll() is None for p in procs):
            bar.update(finished() - bar.n)
            time.sleep(2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        bar.close()
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise SystemExit(f"ablate: {len(failed)} of {num} workers failed (exit codes {failed}); "
                         "finished runs are kept: run the same command again to resume")


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
    """A metric of a run as a fraction; NaN where COCO wrote -1 (undefined)."""
    x = record["metrics"][metric[0]][metric[1]]
    return math.nan if x < 0 else x


def mean_over_seeds(records: dict, key: str, metric) -> float:
    """Mean of a metric over the finished seeds of one variant (NaN-ignoring)."""
    return float(np.nanmean([value(r, metric) for r in records[key].values()]))


def paired(records: dict, a: str, b: str, metric) -> tuple[list, list]:
    """Values of variants ``a`` and ``b`` over the seeds both finished, in seed order."""
    ra, rb = records.get(a, {}), records.get(b, {})
    seeds = sorted(set(ra) & set(rb))
    return [value(ra[s], metric) for s in seeds], [value(rb[s], metric) for s in seeds]


def check_init(records: dict) -> tuple[int, list]:
    """Compare initial-weight digests across variants of a seed and backbone (the mask
    predictor only between equal class-agnostic settings). Returns (pairs checked, problems)."""
    runs = [(r["seed"], r["spec"]["variant"], r["init_digests"], key)
            for key, by_seed in records.items() for r in by_seed.values()]
    checked, problems = 0, []
    for i, (s1, v1, d1, k1) in enumerate(runs):
        for s2, v2, d2, k2 in runs[i + 1:]:
            if s1 != s2 or v1["features"] != v2["features"]:
                continue
            checked += 1
            same_mask = v1["class_agnostic_mask"] == v2["class_agnostic_mask"]
            bad = [g for g in d1 if (same_mask or "mask_predictor" not in g) and d1[g] != d2.get(g)]
            if bad:
                problems.append(f"seed {s1}: {k1} and {k2} differ in {', '.join(bad)}")
    return checked, problems


# ---------------------------------------------------------------------------- report
def label(v: Variant) -> str:
    if v.aligned or v.pooler == "pool" or "," in v.name:
        return v.name
    return f"{v.name} ({v.aggregation})"


def _ms(values) -> str:
    m, s = mean_std([x for x in values if not math.isnan(x)])
    if math.isnan(m):
        return "–"
    return f"{100 * m:.1f}" + ("" if math.isnan(s) else f" ± {100 * s:.1f}")


def _diff(a, b) -> str:
    m, lo, hi = paired_interval(a, b)
    if math.isnan(m):
        return "–"
    interval = "[n/a]" if math.isnan(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * m:+.1f} {interval}"


def _paper(nums) -> str:
    if not nums:
        return "–"
    text = " / ".join(f"{x:.1f}" for x in nums[:3])
    return text + (" · box " + " / ".join(f"{x:.1f}" for x in nums[3:]) if len(nums) > 3 else "")


def table_markdown(table: str, variants, records: dict) -> list[str]:
    """The table laid out as the paper's, ours (mean ± std over seeds, %) beside the paper's,
    then the paired differences with their 95% intervals."""
    roi = table != "2b"
    head = ["RoI op", "align?", "bilinear?", "agg."] if roi else ["mask loss"]
    cols = ["mask AP", "AP50", "AP75", "box AP", "AP50", "AP75", "seeds", PAPER]
    lines = [f"### {TABLES[table][0]}", "", "| " + " | ".join(head + cols) + " |",
             "|" + "---|" * (len(head) + len(cols))]
    for v in variants:
        runs = records.get(v.key, {})
        cells = ([v.name, "✓" if v.pooler == "align" else "–",
                  "✓" if v.pooler != "pool" else "–", v.aggregation] if roi else [v.name])
        cells += [_ms([value(r, m) for r in runs.values()]) for m in METRICS]
        lines.append("| " + " | ".join(cells + [str(len(runs)), _paper(v.paper)]) + " |")
    lines += ["", "| paired difference, 95% interval | " + " | ".join(cols[:6]) +
              f" | {PAPER} Δ mask |", "|---|" + "---|" * 7]
    for a, b in contrasts(table, variants):
        cells = [_diff(*paired(records, a.key, b.key, m)) for m in METRICS]
        n = min(len(a.paper), len(b.paper), 3)
        ref = " / ".join(f"{x - y:+.1f}" for x, y in zip(a.paper[:n], b.paper[:n])) or "–"
        lines.append(f"| {label(a)} − {label(b)} | " + " | ".join(cells) + f" | {ref} |")
    return lines + [""]


MIN_AP = 0.01  # below 1 point of mask AP a model has learned too little to compare


def predictions(records: dict) -> tuple[list[str], list[str]]:
    """The paper's predictions checked against our numbers: (verdict lines, reasons for the
    ones that do not reproduce). Every statement is computed from ``records``; a prediction
    whose runs are missing is left out, and one whose models all stay below ``MIN_AP`` mask
    AP, or that needs an interval from one seed, is reported as not tested."""
    AP, AP50, AP75 = METRICS[:3]
    lines, why = [], []
    c4, warp, pool = "c4/align-avg", "c4/warp-max", "c4/pool-max"
    c5, fpn = ("c5/align-avg", "c5/pool-max"), ("fpn/align-avg", "fpn/pool-max")

    def gain(a, b, metric=AP):
        return paired_interval(*paired(records, a, b, metric))

    def pct(x):
        return f"{100 * x:+.1f}"

    def testable(claim, keys):
        if not set(keys) <= set(records):
            return False
        best = max(mean_over_seeds(records, k, AP) for k in keys)
        if best < MIN_AP:
            lines.append(f"- **{claim}**: not tested (the models learned too little: best mean "
                         f"mask AP {100 * best:.1f} < {100 * MIN_AP:.0f}).")
        return best >= MIN_AP

    def say(claim, ok, detail):
        lines.append(f"- **{claim}**: {'reproduces' if ok else 'does NOT reproduce'} ({detail}).")

    claim = "RoIAlign > RoIPool at stride 16, interval excluding 0"
    if testable(claim, (c4, pool)):
        m, lo, hi = gain(c4, pool)
        n = len(paired(records, c4, pool, AP)[0])
        if n < 2:
            lines.append(f"- **{claim}**: not tested (one seed gives no interval; the point "
                         f"estimate is {pct(m)} mask AP).")
        else:
            say(claim, lo > 0, f"{pct(m)} mask AP, 95% interval [{pct(lo)}, {pct(hi)}], {n} seeds")
            if lo <= 0 < m:
                sd = mean_std(np.subtract(*paired(records, c4, pool, AP)))[1]
                why.append(f"The direction holds but the seed-to-seed spread of the difference "
                           f"(s_d = {100 * sd:.1f}) is as large as the gain; the interval narrows "
                           f"as 1/√n with more seeds (--seeds).")
    claim = "the gain is larger at AP75 than at AP50"
    if testable(claim, (c4, pool)):
        # per seed: the gains at AP75 and AP50, and the paired interval of their difference
        g75, g50 = (np.subtract(*paired(records, c4, pool, m)) for m in (AP75, AP50))
        d75, d50 = float(np.mean(g75)), float(np.mean(g50))
        m, lo, hi = paired_interval(g75, g50)
        detail = f"{pct(d75)} at AP75 vs {pct(d50)} at AP50"
        if math.isnan(lo):
            say(claim, d75 > d50, f"{detail}; one seed, no interval")
        elif lo <= 0 <= hi:
            lines.append(f"- **{claim}**: not shown ({detail}; their difference {pct(m)}, 95% "
                         f"interval [{pct(lo)}, {pct(hi)}] includes 0).")
        else:
            say(claim, lo > 0, f"{detail}; their difference {pct(m)}, 95% interval "
                f"[{pct(lo)}, {pct(hi)}]")
        low = max(np.nanmean(paired(records, c4, pool, AP75)[1]), 0)
        if d75 <= d50:
            why.append(f"AP75 of RoIPool is {100 * low:.1f}: near the floor, alignment has little "
                       "to gain there." if low < 0.02 else "A likely reason: with 1-2 px strokes "
                       "a shift of a fraction of a cell already costs the match at IoU 0.5, so "
                       "misalignment shows at AP50 as much as at AP75.")
    claim = "RoIWarp lands close to RoIPool (|warp − pool| < half of align − pool)"
    if testable(claim, (warp, pool, c4)):
        g_align, g_warp = gain(c4, pool)[0], gain(warp, pool)[0]
        ok = g_align > 0 and abs(g_warp) < g_align / 2
        say(claim, ok, f"warp − pool {pct(g_warp)}, align − pool {pct(g_align)} mask AP")
        if not ok and g_align > 0:
            why.append("RoIWarp's bilinear sampling recovers part of the gain here; on objects a "
                       "few pixels wide, interpolating the quantised RoI smooths the rounding.")
    claim = "the gain is larger at stride 32 than at stride 16"
    # judged on the stride-32 pair alone: two models at the floor have no gain to compare
    if {c4, pool} <= set(records) and testable(claim, c5):
        g32, g16 = gain(*c5)[0], gain(c4, pool)[0]
        say(claim, g32 > g16, f"{pct(g32)} at stride 32 vs {pct(g16)} at stride 16 mask AP")
        if g32 <= g16:
            why.append("At stride 32 our 8-16 px objects lie inside one feature cell: both ops "
                       "see almost the same single cell, which leaves alignment little to fix.")
    elif {c4, pool, *c5} <= set(records):  # testable() said so: C5 learned too little
        size = next(iter(records[c5[0]].values()))["spec"]["train"]["image_size"]
        why.append(f"Stride 32 is untested, not refuted: a {size}-px image gives a "
                   f"{size // 32}x{size // 32} C5 map, too coarse for either RoI op to learn "
                   f"to detect at this length; the paper's 800-px COCO images give 25x34. A "
                   f"test needs larger images (--image-size), at the square of the cost.")
    claim = "the gain is smaller with FPN than at stride 16"
    if testable(claim, (*fpn, c4, pool)):
        gf, g16 = gain(*fpn)[0], gain(c4, pool)[0]
        say(claim, gf < g16, f"{pct(gf)} with FPN vs {pct(g16)} at stride 16 mask AP")
        if gf >= g16:
            base_f, base_16 = (mean_over_seeds(records, k, AP) for k in (fpn[1], pool))
            why.append(f"FPN models are much stronger here (RoIPool {100 * base_f:.1f} vs "
                       f"{100 * base_16:.1f} mask AP), so points are not comparable: relative to "
                       f"RoIPool the gain is {100 * gf / base_f:.0f}% with FPN vs "
                       f"{100 * g16 / base_16:.0f}% at stride 16."
                       if base_f > 0 and base_16 > 0 else "FPN's gain is the larger one here.")
    claim = "per-class sigmoid beats softmax"
    if testable(claim, (c4, "c4/align-avg-softmax")):
        m, lo, hi = gain(c4, "c4/align-avg-softmax")
        detail = "" if math.isnan(lo) else f", 95% interval [{pct(lo)}, {pct(hi)}]"
        say(claim, m > 0, f"{pct(m)} mask AP{detail}")
        if m <= 0:
            why.append("With few classes that seldom overlap, the competition between classes "
                       "that a softmax adds costs little here.")
    best = max((mean_over_seeds(records, k, AP) for k in records), default=math.nan)
    if why and best < 0.1:
        why.insert(0, f"Every model is weak (best mean mask AP {100 * best:.1f}): at this "
                   "training length the differences are near the noise of training.")
    return lines, why


# ---------------------------------------------------------------------------- figure
def masks_on_rois(model, image, boxes, labels):
    """The mask branch of ``model`` on given boxes (the same RoIs for every variant):
    (D, H, W) mask probabilities pasted into the (3, H, W) image. No gradient."""
    from ..model.postprocess import mask_probabilities
    from ..model.roi_heads import boxes_to_rois
    from ..model.transform import resize_boxes

    model.eval()
    image, boxes, labels = (to_backend(a) for a in (image, boxes, labels))
    batch, sizes, _ = model.transform([image], None)
    features = model.backbone(batch)[: model.num_pooled_levels]
    scaled = resize_boxes(boxes, tuple(image.shape[-2:]), sizes[0])
    heads = model.roi_heads
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(
        features, boxes_to_rois([scaled]))))  # (D, K, M, M)
    probs = mask_probabilities(logits, labels, heads.cfg.mask_loss)  # (D, 1, M, M)
    det = [{"boxes": scaled, "labels": labels, "masks": probs}]
    return asnumpy(model.transform.postprocess(det, sizes, [tuple(image.shape[-2:])])[0]["masks"])


def make_figure(path: Path, tables: dict, records: dict, out: Path, val_set, backend=None,
                rois: int = 3):
    """Bars (mask AP/AP50/AP75, mean ± std over seeds) per table; below, the masks that each
    variant of the first table (seed 0) predicts on the same RoIs: the ``rois`` largest
    ground-truth boxes of one validation image, one row per RoI, zoomed in."""
    from matplotlib.figure import Figure

    from ..model.mask_rcnn import MaskRCNN
    from ..visualize import draw_instances

    first = next(iter(tables.values()))
    fig = Figure(figsize=(max(4.5 * len(tables), 1.9 * (len(first) + 1)), 4.5 + 1.9 * rois))
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.0, 1.9 * rois])
    for ax, (t, variants) in zip(top.subplots(1, len(tables), squeeze=False)[0], tables.items()):
        x = np.arange(len(variants))
        for j, metric in enumerate(METRICS[:3]):
            stats = [mean_std([value(r, metric) for r in records.get(v.key, {}).values()])
                     for v in variants]
            means, stds = (100 * np.array(a) for a in zip(*stats))
            ax.bar(x + (j - 1) * 0.27, np.nan_to_num(means), 0.27, label=f"mask {metric[1]}",
                   yerr=np.nan_to_num(stds) if np.isfinite(stds).any() else None, capsize=2)
        ax.set_xticks(x, [label(v) for v in variants], rotation=20, ha="right", fontsize=7)
        ax.set_title(TABLES[t][0], fontsize=8)
        ax.set_ylabel("% (mean ± std over seeds)", fontsize=7)
        ax.legend(fontsize=6)
    # the validation image with the most instances among the first 20, its largest boxes
    index = max(range(min(20, len(val_set))), key=lambda i: len(val_set.load_target(i)["boxes"]))
    image, target = val_set[index]
    boxes = target["boxes"]
    pick = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                      kind="stable")[:rois]
    boxes, labels, gt = boxes[pick], target["labels"][pick], target["masks"][pick] > 0
    columns = [("ground truth", gt.astype(np.float32))]
    for v in first:
        ckpt = out / v.key / "seed0" / "checkpoint.npz"
        if v.key in records and ckpt.exists() and len(boxes):
            model = MaskRCNN(MaskRCNNConfig.from_dict(read_meta(str(ckpt))["model_config"]),
                             backend=backend)
            load_checkpoint(str(ckpt), model)
            masks = masks_on_rois(model, image, boxes, labels)  # (D, H, W)
            iou = ((masks > 0.5) & gt).sum((1, 2)) / np.maximum(((masks > 0.5) | gt).sum((1, 2)), 1)
            columns.append((f"{label(v)}\nmask IoU " + " ".join(f"{x:.2f}" for x in iou), masks))
    if len(boxes):
        axes = bottom.subplots(len(boxes), len(columns), squeeze=False)
        for c, (title, masks) in enumerate(columns):
            for r, box in enumerate(boxes):
                ax = axes[r, c]
                draw_instances(ax, image, box[None], labels[r:r + 1], None, masks[r:r + 1],
                               val_set.class_names)
                pad = 0.3 * max(box[2] - box[0], box[3] - box[1]) + 2
                ax.set_xlim(box[0] - pad, box[2] + pad)
                ax.set_ylim(box[3] + pad, box[1] - pad)
            axes[0, c].set_title(title, fontsize=7)
        bottom.suptitle(f"masks on the same RoIs: the ground-truth boxes of val image "
                        f"{target['image_id']} (seed-0 models)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return fig


def write_report(out: Path, tables: dict, plan: Plan, description: str, seconds: float,
                 backend=None, val_set=None, command: str = "npmaskrcnn ablate") -> str:
    """``report.md``, ``results.csv`` and (with ``val_set``) ``figure.png`` in ``out``."""
    variants = {v.key: v for vs in tables.values() for v in vs}
    records = collect(out, variants.values(), plan.seeds)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "key", *Variant("", "").settings(), "seed",
                    *(f"{t}_{k}" for t, k in METRICS), "train_seconds", "eval_seconds"])
        for key, by_seed in records.items():
            for s, r in sorted(by_seed.items()):
                w.writerow([label(variants[key]), key, *variants[key].settings().values(), s,
                            *(f"{value(r, m):.4f}" for m in METRICS),
                            f"{r['train_seconds']:.1f}", f"{r['eval_seconds']:.1f}"])
    checked, problems = check_init(records)
    times = [r["train_seconds"] + r["eval_seconds"] for rs in records.values() for r in rs.values()
             if not r["resumed"]]
    lines = [f"# RoIAlign vs RoIPool ablation ({datetime.now():%Y-%m-%d %H:%M})", "",
             f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPU threads, "
             f"{platform.system()} {platform.release()}, Python {platform.python_version()}. "
             f"Wall time of this invocation {seconds / 60:.1f} min (finished runs are read, "
             f"not retrained); one run (train + eval) "
             f"{np.median(times) / 60 if times else math.nan:.1f} min (median of the "
             f"{len(times)} runs not resumed).", "",
             f"Model: the `{plan.preset}` preset; {plan.iters} iterations of batch "
             f"{plan.batch_size}, lr {plan.lr} (warm-up {plan.warmup}, ×0.1 at 80%), "
             f"{plan.seeds} seed(s). Data: {description}. Numbers are COCO AP in %, "
             f"mean ± std over seeds; {PAPER} is the paper's, on COCO, for reference only. "
             "The data were fixed before any run (objects small against the stride, 1-2 px "
             "strokes, so that alignment matters) and were not tuned on the outcome.", ""]
    for t, vs in tables.items():
        lines += table_markdown(t, vs, records)
    verdicts, why = predictions(records)
    lines += ["## Which of the paper's predictions reproduce", ""] + (
        verdicts or ["- (no prediction could be tested with the finished runs)"]) + [""]
    if why:
        lines += ["Why we think the others do not reproduce, or could not be tested:", ""]
        lines += [f"- {w}" for w in why] + [""]
    lines.append(f"Initial weights: {checked} pairs of runs with the same seed and backbone "
                 f"compared (sha256 of the parameters); " + (
                     "all identical." if not problems else "DIFFERENT: " + "; ".join(problems)))
    lines += ["", "<details><summary>Per-seed numbers</summary>", "",
              "| variant | seed | " + " | ".join(f"{t} {k}" for t, k in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    lines += [f"| {label(variants[k])} [{k}] | {s} | " + " | ".join(
        f"{100 * value(r, m):.1f}" for m in METRICS) + " |"
        for k, rs in records.items() for s, r in sorted(rs.items())]
    lines += ["", "</details>", "", "![ablation](figure.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text, encoding="utf-8")
    if val_set is not None and records:
        make_figure(out / "figure.png", tables, records, out, val_set, backend)
    return text


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npmaskrcnn ablate", description="The RoIAlign vs RoIPool ablation (paper Table "
        "2): train variants that differ only in the RoI op or mask loss, COCOeval each, report.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed, stride 16, RoIPool vs "
                      "RoIAlign, 600 iterations (3-4 min on 2 idle CPU cores)")
    mode.add_argument("--full", action="store_true", help="all tables: 2c, aligned, 2d, FPN, "
                      "2b (about 3.5 h)")
    p.add_argument("--tables", nargs="+", choices=sorted(TABLES), help="override the tables")
    p.add_argument("--out", default=None, help="default runs/ablation[-quick]")
    p.add_argument("--preset", choices=("shapes", "tiny"), default=None)
    for name, kind in (("seeds", int), ("iters", int), ("batch-size", int), ("num-train", int),
                       ("num-val", int), ("image-size", int), ("lr", float), ("warmup", int),
                       ("data-seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the mode's value")
    p.add_argument("--ann", help="COCO train annotations (instead of generated shapes)")
    p.add_argument("--images")
    p.add_argument("--val-ann")
    p.add_argument("--val-images")
    p.add_argument("--report-only", action="store_true", help="rebuild the report, train nothing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None)
    p.add_argument("--jobs", type=int, default=1, help="train this many runs at once in worker "
                   "processes (each with cpu_count / jobs BLAS threads); the small models use "
                   "one core well, so --jobs 2 on 2 cores nearly halves the time")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # train, no report
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    overrides = {k: getattr(args, k) for k in ("seeds", "iters", "batch_size", "num_train",
                 "num_val", "image_size", "lr", "warmup", "preset", "data_seed")}
    plan = replace(MODES[mode], **{k: v for k, v in overrides.items() if v is not None})
    if args.tables:
        plan = replace(plan, tables=tuple(args.tables))
    out = Path(args.out or ("runs/ablation-quick" if args.quick else "runs/ablation"))
    out.mkdir(parents=True, exist_ok=True)
    if args.backend:
        from ..backend import set_backend
        set_backend(args.backend)
    start = time.perf_counter()
    train_set, val_set, description = prepare_data(args, plan, out)
    tables = plan_variants(plan)
    unique = list({v.key: v for vs in tables.values() for v in vs}.values())
    jobs = [(v, s) for s in range(plan.seeds) for v in unique]  # seed-major: early seeds first
    progress = not args.no_progress
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.jobs < 1:
        raise SystemExit(f"ablate: --jobs must be at least 1, got {args.jobs}")
    if not args.report_only:
        if args.jobs > 1:
            run_workers(args.jobs, argv, jobs, out, progress)
        else:
            train_runs(jobs, plan, (train_set, val_set, description), out, args.backend,
                       progress)
    if args.worker:
        return 0
    command = " ".join(["npmaskrcnn ablate", *argv])
    text = write_report(out, tables, plan, description, time.perf_counter() - start,
                        args.backend, val_set, command)
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'figure.png'}")
    return 0


if __name__ == "__main__":  # the workers of --jobs
    raise SystemExit(main())
