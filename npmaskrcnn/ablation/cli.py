"""``npmaskrcnn ablate``: plan, train (resumably, optionally in workers), report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .plan import MODES, plan_variants, prepare_data
from .report import write_report
from .variants import TABLES
from .workers import run_workers, train_runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npmaskrcnn ablate", description="The RoIAlign vs RoIPool ablation (paper Tables "
        "2 and 6): train variants that differ only in the RoI op or mask loss, COCOeval each, "
        "report.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed, FPN, RoIPool vs "
                      "RoIAlign, two runs at once (minutes; no interval: the report says what "
                      "it cannot decide)")
    mode.add_argument("--full", action="store_true", help="all tables: 2c, aligned, 2d, FPN, "
                      "2b and 6 (hours on a CPU; the README has measured times)")
    p.add_argument("--tables", nargs="+", choices=sorted(TABLES), help="override the tables: "
                   "2c, aligned, 2d, fpn, 2b (masks, on shapes) and 6 (keypoints: RoIPool vs "
                   "RoIAlign in Keypoint R-CNN, on stick figures)")
    p.add_argument("--out", default=None, help="default runs/ablation[-quick]")
    p.add_argument("--preset", choices=("shapes", "tiny"), default=None, help="the model of "
                   "the mask tables (default: shapes); Table 6 always trains the figures preset")
    for name, kind in (("seeds", int), ("iters", int), ("batch-size", int), ("num-train", int),
                       ("num-val", int), ("image-size", int), ("large-image-size", int),
                       ("figures-image-size", int), ("lr", float), ("warmup", int),
                       ("data-seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="override the mode's value")
    p.add_argument("--ann", help="COCO train annotations (instead of generated shapes)")
    p.add_argument("--images")
    p.add_argument("--val-ann")
    p.add_argument("--val-images")
    p.add_argument("--report-only", action="store_true", help="rebuild the report, train nothing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--backend", choices=("numpy", "cupy", "cpupy"), default=None,
                   help="array backend (default: $NPMASKRCNN_BACKEND or numpy)")
    p.add_argument("--jobs", type=int, default=None, help="train this many runs at once in "
                   "worker processes (each with cpu_count / jobs BLAS threads); the small models "
                   "use one core well, so --jobs 2 on 2 cores nearly halves the time (default: "
                   "1; --quick: 2 where there are 2 cores or more)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # train, no report
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    overrides = {k: getattr(args, k) for k in ("seeds", "iters", "batch_size", "num_train",
                 "num_val", "image_size", "large_image_size", "figures_image_size", "lr",
                 "warmup", "preset", "data_seed")}
    plan = replace(MODES[mode], **{k: v for k, v in overrides.items() if v is not None})
    if args.tables:
        plan = replace(plan, tables=tuple(args.tables))
    out = Path(args.out or ("runs/ablation-quick" if args.quick else "runs/ablation"))
    out.mkdir(parents=True, exist_ok=True)
    if args.backend:
        from ..backend import set_backend
        set_backend(args.backend)
    start = time.perf_counter()
    tables = plan_variants(plan)
    unique = list({v.key: v for vs in tables.values() for v in vs}.values())
    data = prepare_data(args, plan, out, list(dict.fromkeys(v.data for v in unique)))
    jobs = [(v, s) for s in range(plan.seeds) for v in unique]  # seed-major: early seeds first
    progress = not args.no_progress
    argv = list(argv if argv is not None else sys.argv[1:])
    workers = args.jobs
    if workers is None:  # --quick: its two runs at once where there are two cores
        workers = min(2, os.cpu_count() or 1) if plan.quick else 1
    if workers < 1:
        raise SystemExit(f"ablate: --jobs must be at least 1, got {args.jobs}")
    if not args.report_only:
        if workers > 1 and not args.worker:
            run_workers(workers, argv, jobs, out, progress)
        else:
            train_runs(jobs, plan, data, out, args.backend, progress)
    if args.worker:
        return 0
    command = " ".join(["npmaskrcnn ablate", *argv])
    text = write_report(out, tables, plan, data, time.perf_counter() - start, args.backend,
                        command, workers)
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'figure.png'}")
    return 0
