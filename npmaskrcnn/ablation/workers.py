"""The runs, one after another in this process or in worker processes (``--jobs``).

These small models keep one core busy and gain little from a second BLAS thread, so
``--jobs 2`` (two worker processes of one thread each, sharing the runs through lock files)
nearly halves the time on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..engine.progress import Progress
from .locks import claim
from .plan import Plan
from .runs import run_one


def train_runs(jobs, plan: Plan, data: dict, out: Path, backend=None,
               progress: bool = True) -> None:
    """Train and evaluate each (variant, seed) not finished yet and not held by another
    process, in order; ``data`` maps each variant's data name to (train, val, description)."""
    bar = Progress(len(jobs), "ablation runs", unit="run", enabled=progress, every=1)
    for v, s in jobs:
        with claim(out / v.key / f"seed{s}") as mine:
            if mine:
                run_one(v, s, plan, data[v.data], out, backend, progress)
        bar.update(1, {"last": f"{v.key} seed{s}"})
    bar.close()


def run_workers(num: int, argv: list, jobs, out: Path, progress: bool = True) -> None:
    """Train the runs in ``num`` worker processes at once (``--jobs``), each with
    ``cpu_count // num`` BLAS threads unless the environment already sets them; show one
    progress bar of finished runs. On an error or Ctrl-C the workers are stopped; finished
    runs and checkpoints stay, and the same command resumes."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // num))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    cmd = [sys.executable, "-m", "npmaskrcnn.ablation", *argv, "--worker", "--jobs", "1",
           "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(num)]
    def finished():
        return sum((out / v.key / f"seed{s}" / "metrics.json").exists() for v, s in jobs)

    # runs finished before this command start the bar, so its rate and ETA are this run's
    bar = Progress(len(jobs), f"ablation runs ({num} workers)", initial=finished(), unit="run",
                   enabled=progress, every=1)
    try:
        while any(p.poll() is None for p in procs):
            done = finished()
            if done > bar.n:
                bar.update(done - bar.n)
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
