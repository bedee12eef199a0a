"""``report.md`` and ``results.csv``: the tables laid out as the paper's, with intervals."""

from __future__ import annotations

import csv
import math
import os
import platform
from datetime import datetime
from pathlib import Path

import numpy as np

from .figure import make_figure
from .plan import Plan
from .runs import check_init, collect, has, paired, value
from .stats import mean_std, paired_interval
from .variants import (
    DESIGN,
    KEYPOINT_DATA,
    PAPER,
    TABLES,
    TASK,
    Variant,
    contrasts,
    label,
    metrics,
    union_metrics,
)
from .verdicts import predictions


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


def _column(metric) -> str:
    """A metric's column: "mask AP", "keypoint AP", "box AP" for AP, else "AP50", "AP75"."""
    return f"{TASK[metric[0]]} AP" if metric[1] == "AP" else metric[1]


def table_markdown(table: str, variants, records: dict) -> list[str]:
    """The table laid out as the paper's, ours (mean ± std over seeds, %) beside the paper's,
    then the paired differences with their 95% intervals; mask and box AP, or keypoint and
    box AP for a keypoint table (:func:`~npmaskrcnn.ablation.variants.metrics`)."""
    roi = table != "2b"
    head = ["RoI op", "align?", "bilinear?", "agg."] if roi else ["mask loss"]
    ms = metrics(table)
    cols = [_column(m) for m in ms] + ["seeds", PAPER]
    lines = [f"### {TABLES[table][0]}", "", "| " + " | ".join(head + cols) + " |",
             "|" + "---|" * (len(head) + len(cols))]
    for v in variants:
        runs = records.get(v.key, {})
        cells = ([v.name, "✓" if v.pooler == "align" else "–",
                  "✓" if v.pooler != "pool" else "–", v.aggregation] if roi else [v.name])
        cells += [_ms([value(r, m) for r in runs.values()]) for m in ms]
        lines.append("| " + " | ".join(cells + [str(len(runs)), _paper(v.paper)]) + " |")
    lines += ["", "| paired difference, 95% interval | " + " | ".join(cols[:6]) +
              f" | {PAPER} Δ {TASK[ms[0][0]]} |", "|---|" + "---|" * 7]
    for a, b in contrasts(table, variants):
        cells = [_diff(*paired(records, a.key, b.key, m)) for m in ms]
        n = min(len(a.paper), len(b.paper), 3)
        ref = " / ".join(f"{x - y:+.1f}" for x, y in zip(a.paper[:n], b.paper[:n])) or "–"
        lines.append(f"| {label(a)} − {label(b)} | " + " | ".join(cells) + f" | {ref} |")
    return lines + [""]


def _cost(records: dict, seconds: float, workers: int) -> str:
    """What the runs cost: wall and CPU time per run, their sums, this invocation's time."""
    fresh = [r for rs in records.values() for r in rs.values() if not r["resumed"]]
    wall = [r["train_seconds"] + r["eval_seconds"] for r in fresh]
    cpu = [r["cpu_seconds"] for r in fresh if "cpu_seconds" in r]
    text = (f"Wall time of this invocation {seconds / 60:.1f} min with {workers} worker "
            f"process(es) (finished runs are read, not retrained). ")
    if wall:
        text += (f"One run (train + eval): {np.median(wall) / 60:.1f} min wall time (median of "
                 f"the {len(wall)} runs not resumed; {sum(wall) / 3600:.2f} h in all)")
        text += (f", {np.median(cpu) / 60:.1f} min CPU time (median; about the wall time of a "
                 "one-thread run on a core of its own)." if cpu else ".")
    return text


def _levels(variants, records: dict) -> list[str]:
    """For multi-level (FPN) variants: how many RoIs the level rule sends to each level."""
    out = []
    for v in variants:
        run = next(iter(records.get(v.key, {}).values()), None)
        if run and run.get("rois_per_level"):
            counts = run["rois_per_level"]
            scale = run["spec"]["model"]["roi_heads"]["canonical_scale"]
            out.append(f"RoIs per level of {label(v)} (the training set's ground-truth boxes "
                       f"under the model's level rule, canonical size {scale:g} px): " +
                       ", ".join(f"P{k + 2} {c}" for k, c in enumerate(counts)) + ".")
            break  # the same data and level rule for every variant of the table
    return out + [""] if out else []


def _models(plan: Plan, variants) -> str:
    """The presets the runs train: ``plan.preset`` for mask data, ``figures`` for keypoints."""
    keypoints = {v.data in KEYPOINT_DATA for v in variants}
    mask = f"the `{plan.preset}` preset"
    figures = "the `figures` preset (Keypoint R-CNN: a keypoint branch, no mask branch)"
    if keypoints == {True}:
        return figures
    return mask if keypoints == {False} else f"{mask} (mask tables) and {figures} (Table 6)"


def quick_limits(plan: Plan, tables: dict) -> list[str]:
    """What a quick run can show and what it cannot decide (fixed text, not outcomes)."""
    pair = " and ".join(label(v) for vs in tables.values() for v in vs)
    return ["## What a quick run can and cannot decide", "",
            f"A quick run trains one seed of one pair ({pair}, the FPN model) for {plan.iters} "
            "iterations. It shows the sign and size of their difference in this one seed and, "
            "in the figure, the masks that each op predicts on the same RoIs. It cannot decide "
            "whether the difference exceeds the seed-to-seed spread: one seed gives no "
            "interval (the default run's three seeds do). Nor does it test any other claim of "
            "Table 2 (stride 16, AP75 vs AP50, RoIWarp, stride 32, FPN vs stride 16, the mask "
            "loss): for those run `npmaskrcnn ablate --jobs 2` (Table 2c) or `npmaskrcnn "
            "ablate --full --jobs 2`.", ""]


def write_report(out: Path, tables: dict, plan: Plan, data: dict, seconds: float,
                 backend=None, command: str = "npmaskrcnn ablate", workers: int = 1) -> str:
    """``report.md``, ``results.csv`` and ``figure.png`` in ``out``; ``data`` maps each data
    name to (train set, val set, description)."""
    variants = {v.key: v for vs in tables.values() for v in vs}
    records = collect(out, variants.values(), plan.seeds)
    columns = union_metrics(tables)  # a run's cell is empty where its model has no branch
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "key", *Variant("", "").settings(), "seed",
                    *(f"{t}_{k}" for t, k in columns), "train_seconds", "eval_seconds",
                    "cpu_seconds"])
        for key, by_seed in records.items():
            for s, r in sorted(by_seed.items()):
                w.writerow([label(variants[key]), key, *variants[key].settings().values(), s,
                            *(f"{value(r, m):.4f}" if has(r, m) else "" for m in columns),
                            f"{r['train_seconds']:.1f}", f"{r['eval_seconds']:.1f}",
                            f"{r.get('cpu_seconds', math.nan):.1f}"])
    checked, problems = check_init(records)
    used = dict.fromkeys(v.data for v in variants.values())
    lines = [f"# RoIAlign vs RoIPool ablation ({datetime.now():%Y-%m-%d %H:%M})", "",
             f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPU threads, "
             f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
             f"backend {backend or os.environ.get('NPMASKRCNN_BACKEND', 'numpy')}. "
             + _cost(records, seconds, workers), "",
             f"Model: {_models(plan, variants.values())}; {plan.iters} iterations of batch "
             f"{plan.batch_size}, lr {plan.lr} (warm-up {plan.warmup}, ×0.1 at 80%), "
             f"{plan.seeds} seed(s). Numbers are COCO AP in %, mean ± std over seeds; "
             f"{PAPER} is the paper's, on COCO, for reference only. The data and the design "
             "were fixed before any run and were not tuned on the outcome. Data:", ""]
    lines += [f"- {data[name][2]}" for name in used if name in data] + [""]
    if plan.quick:
        lines += quick_limits(plan, tables)
    for t, vs in tables.items():
        table = table_markdown(t, vs, records)  # the heading, a blank line, the tables
        lines += table[:2] + [f"Design: {DESIGN[t]}", ""] + table[2:] + _levels(vs, records)
    verdicts, notes = predictions(records)
    lines += ["## Which of the paper's predictions reproduce", ""] + (
        verdicts or ["- (no prediction could be tested with the finished runs)"]) + [""]
    if notes:
        lines += ["Notes on the predictions that fail or went untested: *computed* ones state "
                  "numbers from the runs; *hypotheses* are possible reasons that these runs "
                  "do not test.", ""]
        lines += [f"- *{kind}*: {text}" for kind, text in notes] + [""]
    lines.append(f"Initial weights: {checked} pairs of runs with the same seed, backbone and "
                 f"data compared (sha256 of the parameters); " + (
                     "all identical." if not problems else "DIFFERENT: " + "; ".join(problems)))
    lines += ["", "<details><summary>Per-seed numbers</summary>", "",
              "| variant | seed | " + " | ".join(f"{t} {k}" for t, k in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    lines += [f"| {label(variants[k])} [{k}] | {s} | " + " | ".join(
        f"{100 * value(r, m):.1f}" if has(r, m) else "–" for m in columns) + " |"
        for k, rs in records.items() for s, r in sorted(rs.items())]
    lines += ["", "</details>", "", "![ablation](figure.png)", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text, encoding="utf-8")
    first = next(iter(tables.values()))[0].data
    if records and first in data:
        make_figure(out / "figure.png", tables, records, out, data[first][1], backend)
    return text
