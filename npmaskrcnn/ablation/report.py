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
from .runs import check_init, collect, paired, value
from .stats import mean_std, paired_interval
from .variants import METRICS, PAPER, TABLES, Variant, contrasts, label
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
