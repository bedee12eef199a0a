"""The RoIAlign vs RoIPool ablation: the shape of the paper's Tables 2b/2c/2d and 6, with
error bars.

Models that differ only in the RoI operation (Table 2c: RoIPool, RoIWarp max/avg, RoIAlign
max/avg, plus RoIAlign ``aligned=True``; Table 2d: stride 16 and 32; FPN; Table 6: RoIPool
vs RoIAlign in Keypoint R-CNN) or only in the mask loss (Table 2b: per-class sigmoid vs
softmax on the same soft targets, class-specific vs class-agnostic) are trained from the
same initial weights on the same data (each table its own: synthetic shapes for the mask
tables, stick-figure persons with 17 keypoints for Table 6) in the same order, and scored
with COCOeval (mask and box AP; keypoint and box AP for Table 6) on a held-out split, over
several seeds. The report (``OUT/report.md``, ``OUT/results.csv``,
``OUT/figure.png``) lays the tables out as the paper's, with paired 95% intervals, and checks
the paper's predictions against the numbers.

One concept per file:

    variants.py   what is compared: the variants of each table, its metrics, the paper's
                  numbers
    stats.py      mean ± std over seeds, the paired Student-t interval
    plan.py       the modes (quick, default, full), each table's data, each model config
    runs.py       one run (train + COCOeval, resumable), and the finished runs read back
    locks.py      per-run lock files, so that several processes share the runs
    workers.py    the runs one after another, or in worker processes (--jobs)
    verdicts.py   the paper's predictions checked against our numbers
    report.py     report.md and results.csv
    figure.py     the bars, and the masks (keypoints) of every variant on the same RoIs
    cli.py        ``npmaskrcnn ablate``
"""

from .cli import main

__all__ = ["main"]
