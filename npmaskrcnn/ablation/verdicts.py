"""The paper's predictions checked against our numbers.

Every verdict is computed from the finished runs, from the paired differences over seeds
and their Student-t 95% interval: "reproduces" (the interval lies on the paper's side of 0),
"does NOT reproduce" (on the other side; for the main claim, whose statement includes
"interval excluding 0", also when the interval includes 0), "not shown" (the interval
includes 0), or "not tested" (missing runs, one seed, or models that learned too little).

The notes on a claim that fails or goes untested are of two kinds, and each says which:
``computed`` (numbers read from the runs) or ``hypothesis`` (a possible reason, which these
runs do not test).
"""

from __future__ import annotations

import math

import numpy as np

from .runs import mean_over_seeds, value
from .stats import mean_std, paired_interval
from .variants import KEYPOINT_DATA, KEYPOINT_METRICS, METRICS

MIN_AP = 0.01  # below 1 point of mask (keypoint) AP a model has learned too little to compare
EPS = 1e-9  # differences of AP smaller than this are rounding, not a sign
AP, AP50, AP75 = METRICS[:3]
BOX_AP = METRICS[3]
KP_AP, KP_AP50, KP_AP75 = KEYPOINT_METRICS[:3]

# the runs each claim reads, <data>/<features>/<variant> (variants.Variant.key)
POOL16, ALIGN16, WARP16 = "small/c4/pool-max", "small/c4/align-avg", "small/c4/warp-max"
FPN = ("small/fpn/align-avg", "small/fpn/pool-max")
LARGE16 = ("large/c4/align-avg", "large/c4/pool-max")
LARGE32 = ("large/c5/align-avg", "large/c5/pool-max")
SIGMOID, SOFTMAX = "compete/c4/align-avg", "compete/c4/align-avg-softmax"
FIGURES = ("figures/fpn/align-avg", "figures/fpn/pool-max")  # Table 6: keypoint AP


def pct(x) -> str:
    return f"{100 * x:+.1f}"


def common_seeds(records: dict, *keys) -> list:
    """The seeds that every run in ``keys`` finished, in order."""
    return sorted(set.intersection(*(set(records.get(k, {})) for k in keys)))


def gains(records: dict, a: str, b: str, metric=AP, seeds=None) -> np.ndarray:
    """a − b per seed, over ``seeds`` (default: the seeds both runs finished)."""
    seeds = common_seeds(records, a, b) if seeds is None else seeds
    return np.array([value(records[a][s], metric) - value(records[b][s], metric)
                     for s in seeds])


def interval(d) -> tuple[float, float, float]:
    """(mean, low, high) of per-seed differences ``d``, a paired Student-t 95% interval."""
    return paired_interval(d, np.zeros(len(d)))


def predictions(records: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """The paper's predictions checked against ``records`` ({run key: {seed: metrics.json}}).

    Returns (verdict lines, notes); a note is ("computed" | "hypothesis", text). A prediction
    whose runs are missing is left out; one whose models all stay below ``MIN_AP`` mask AP
    (keypoint AP for Table 6), or that needs an interval from one seed, is reported as not
    tested.
    """
    lines, notes = [], []

    def testable(claim, keys, metric=AP, unit="mask AP"):
        if not set(keys) <= set(records):
            return False
        best = max(mean_over_seeds(records, k, metric) for k in keys)
        if best < MIN_AP:
            lines.append(f"- **{claim}**: not tested (the models learned too little: best mean "
                         f"{unit} {100 * best:.1f} < {100 * MIN_AP:.0f}).")
        return best >= MIN_AP

    def one_seed(claim, d, unit="mask AP"):
        if len(d) >= 2:
            return False
        lines.append(f"- **{claim}**: not tested (one seed gives no interval; the point "
                     f"estimate is {pct(np.mean(d)) if len(d) else 'n/a'} {unit}).")
        return True

    def judge(claim, d, detail) -> str:
        """Three-way verdict on "the mean of the per-seed differences d is > 0"."""
        m, lo, hi = interval(d)
        verdict = "reproduces" if lo > EPS else "does NOT reproduce" if hi < -EPS else \
            "not shown"
        lines.append(f"- **{claim}**: {verdict} ({detail}; 95% interval of the difference "
                     f"[{pct(lo)}, {pct(hi)}], {len(d)} seeds).")
        return verdict

    claim = "RoIAlign > RoIPool at stride 16, interval excluding 0"
    if testable(claim, (ALIGN16, POOL16)):
        d = gains(records, ALIGN16, POOL16)
        if not one_seed(claim, d):
            m, lo, hi = interval(d)
            ok = lo > EPS
            lines.append(f"- **{claim}**: {'reproduces' if ok else 'does NOT reproduce'} "
                         f"({pct(m)} mask AP, 95% interval [{pct(lo)}, {pct(hi)}], "
                         f"{len(d)} seeds).")
            if lo <= 0 < m:
                notes.append(("computed", f"The direction holds ({pct(m)}) but the interval's "
                              f"half-width ({100 * (hi - m):.1f}) exceeds the gain: the "
                              f"difference varies from seed to seed with s_d = "
                              f"{100 * mean_std(d)[1]:.1f}. The half-width shrinks about as "
                              f"1/√n with more seeds (--seeds)."))
    claim = "the gain is larger at AP75 than at AP50"
    if testable(claim, (ALIGN16, POOL16)):
        g75, g50 = (gains(records, ALIGN16, POOL16, m) for m in (AP75, AP50))
        detail = f"{pct(np.mean(g75))} at AP75 vs {pct(np.mean(g50))} at AP50"
        if len(g75) < 2:
            lines.append(f"- **{claim}**: not tested (one seed gives no interval; {detail}).")
        elif judge(claim, g75 - g50, detail) != "reproduces":
            low = max(mean_over_seeds(records, POOL16, AP75), 0)
            notes.append(("computed", f"RoIPool's mask AP75 is {100 * low:.1f} (mean over "
                          "seeds)."))
            notes.append(("hypothesis", "Near 0, AP75 leaves RoIPool little room to lose, so "
                          "alignment has little to gain there." if low < 0.02 else
                          "With 1-2 px strokes a shift of a fraction of a cell already costs "
                          "the match at IoU 0.5, so misalignment shows at AP50 as much as at "
                          "AP75."))
    claim = "RoIWarp lands close to RoIPool (|warp − pool| < half of align − pool)"
    if testable(claim, (WARP16, POOL16, ALIGN16)):
        g_align = float(np.mean(gains(records, ALIGN16, POOL16)))
        g_warp = float(np.mean(gains(records, WARP16, POOL16)))
        ok = g_align > 0 and abs(g_warp) < g_align / 2
        lines.append(f"- **{claim}**: {'reproduces' if ok else 'does NOT reproduce'} (warp − "
                     f"pool {pct(g_warp)}, align − pool {pct(g_align)} mask AP, means over "
                     "seeds).")
        if not ok and g_align > 0:
            notes.append(("hypothesis", "RoIWarp's bilinear sampling recovers part of the gain "
                          "here; on objects a few pixels wide, interpolating the quantised RoI "
                          "smooths the rounding."))
    claim = "the gain is larger at stride 32 than at stride 16 (Table 2d data)"
    # judged only once the stride-32 pair learned: two models at the floor have no gain
    if set(LARGE16) <= set(records) and testable(claim, LARGE32):
        seeds = common_seeds(records, *LARGE32, *LARGE16)
        g32, g16 = gains(records, *LARGE32, seeds=seeds), gains(records, *LARGE16, seeds=seeds)
        detail = f"{pct(np.mean(g32))} mask AP at stride 32 vs {pct(np.mean(g16))} at stride 16"
        if not one_seed(claim, g32 - g16) and judge(claim, g32 - g16, detail) != "reproduces":
            bases = [100 * mean_over_seeds(records, k, AP) for k in (LARGE32[1], LARGE16[1])]
            notes.append(("computed", f"RoIPool's mask AP on the Table 2d data: {bases[0]:.1f} "
                          f"at stride 32, {bases[1]:.1f} at stride 16."))
    elif set(LARGE16) | set(LARGE32) <= set(records):  # testable() said so: C5 at the floor
        size = next(iter(records[LARGE32[0]].values()))["spec"]["train"]["large_image_size"]
        notes.append(("computed", f"At {size} px the stride-32 map is {size // 32}x"
                      f"{size // 32} cells."))
        notes.append(("hypothesis", "That map is too coarse for either RoI op to learn to "
                      "detect at this training length; the paper's 800-px images give 25x34. "
                      "A test needs larger images (--large-image-size) or longer training."))
    claim = "RoIAlign > RoIPool with FPN (paper: +1.5 mask AP)"
    if testable(claim, FPN):
        d = gains(records, *FPN)
        if not one_seed(claim, d):
            judge(claim, d, f"{pct(np.mean(d))} mask AP")
    claim = "the gain is smaller with FPN than at stride 16"
    if testable(claim, (*FPN, ALIGN16, POOL16)):
        seeds = common_seeds(records, *FPN, ALIGN16, POOL16)
        gf = gains(records, *FPN, seeds=seeds)
        g16 = gains(records, ALIGN16, POOL16, seeds=seeds)
        detail = f"{pct(np.mean(gf))} mask AP with FPN vs {pct(np.mean(g16))} at stride 16"
        if not one_seed(claim, g16 - gf) and judge(claim, g16 - gf, detail) != "reproduces":
            base_f, base_16 = (mean_over_seeds(records, k, AP) for k in (FPN[1], POOL16))
            if base_f > 0 and base_16 > 0:
                notes.append(("computed", f"RoIPool's mask AP is {100 * base_f:.1f} with FPN "
                              f"vs {100 * base_16:.1f} at stride 16; relative to RoIPool the "
                              f"gain is {100 * np.mean(gf) / base_f:.0f}% with FPN vs "
                              f"{100 * np.mean(g16) / base_16:.0f}% at stride 16."))
            if base_f > base_16:
                notes.append(("hypothesis", "FPN's finer levels make its RoIPool baseline much "
                              "stronger on these small objects, so gains in points are not "
                              "comparable across the two models."))
    claim = "per-class sigmoid beats softmax (same soft targets, competing classes)"
    if testable(claim, (SIGMOID, SOFTMAX)):
        d = gains(records, SIGMOID, SOFTMAX)
        if not one_seed(claim, d) and \
                judge(claim, d, f"{pct(np.mean(d))} mask AP") != "reproduces":
            at = {name: pct(np.mean(gains(records, SIGMOID, SOFTMAX, m)))
                  for name, m in (("AP50", AP50), ("AP75", AP75), ("box AP", BOX_AP))}
            notes.append(("computed", "sigmoid − softmax, means over seeds: " + ", ".join(
                f"{v} {k}" for k, v in at.items()) + "."))
    claim = "RoIAlign > RoIPool for keypoints (Table 6: +4.4 keypoint AP)"
    if testable(claim, FIGURES, KP_AP, "keypoint AP"):
        d = gains(records, *FIGURES, KP_AP)
        if not one_seed(claim, d, "keypoint AP"):
            judge(claim, d, f"{pct(np.mean(d))} keypoint AP")
    claim = "the keypoint gain is larger at AP75 than at AP50 (Table 6: +3.0 vs +0.4)"
    if testable(claim, FIGURES, KP_AP, "keypoint AP"):
        g75, g50 = (gains(records, *FIGURES, m) for m in (KP_AP75, KP_AP50))
        detail = f"{pct(np.mean(g75))} at AP75 vs {pct(np.mean(g50))} at AP50"
        if len(g75) < 2:
            lines.append(f"- **{claim}**: not tested (one seed gives no interval; {detail}).")
        elif judge(claim, g75 - g50, detail) != "reproduces":
            low = max(mean_over_seeds(records, FIGURES[1], KP_AP75), 0)
            notes.append(("computed", f"RoIPool's keypoint AP75 is {100 * low:.1f} (mean over "
                          "seeds)."))
    masks = [k for k in records if k.split("/")[0] not in KEYPOINT_DATA]
    best = max((mean_over_seeds(records, k, AP) for k in masks), default=math.nan)
    if notes and best < 0.1:
        notes[:0] = [("computed", f"The best model's mean mask AP is {100 * best:.1f}."),
                     ("hypothesis", "At this training length every model is weak and the "
                      "differences are near the noise of training.")]
    return lines, notes
