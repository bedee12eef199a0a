"""Tests for npmaskrcnn/ablation/verdicts.py (and runs.check_init, variants.TABLES)."""

import warnings

from npmaskrcnn.ablation.runs import check_init
from npmaskrcnn.ablation.variants import TABLES
from npmaskrcnn.ablation.verdicts import predictions


def _record(seed, ap, ap50, ap75, features="c4", agnostic=False, digest="0", data="small"):
    segm = {"AP": ap, "AP50": ap50, "AP75": ap75}
    return {"seed": seed, "metrics": {"segm": segm, "bbox": dict(segm)},
            "spec": {"variant": {"features": features, "class_agnostic_mask": agnostic,
                                 "data": data}, "train": {"large_image_size": 256}},
            "init_digests": {"backbone.body": digest, "roi_heads.mask_predictor": digest}}


def _runs(values, **kw):
    return {s: _record(s, *v, **kw) for s, v in enumerate(values)}


def _records(pool, align, warp=None):
    out = {"small/c4/pool-max": _runs(pool), "small/c4/align-avg": _runs(align)}
    if warp:
        out["small/c4/warp-max"] = _runs(warp)
    return out


def _check_notes(notes):
    """Every note says whether it is computed from the runs or a hypothesis."""
    assert all(kind in ("computed", "hypothesis") and text for kind, text in notes), notes


def test_predictions_reproduce_when_the_numbers_say_so():
    pool = [(0.20, 0.50, 0.15), (0.22, 0.52, 0.16), (0.21, 0.49, 0.15)]
    align = [(0.25, 0.53, 0.24), (0.26, 0.55, 0.25), (0.26, 0.52, 0.23)]
    warp = [(0.21, 0.50, 0.16), (0.22, 0.52, 0.17), (0.22, 0.50, 0.15)]
    lines, why = predictions(_records(pool, align, warp))
    text = "\n".join(lines)
    print(text)
    assert "interval excluding 0**: reproduces" in text
    assert "AP75 than at AP50**: reproduces" in text
    assert "close to RoIPool" in text and "NOT" not in text
    assert why == []


def test_predictions_fail_plainly_when_the_numbers_do_not_support_them():
    pool = [(0.20, 0.50, 0.20), (0.30, 0.52, 0.30), (0.21, 0.49, 0.21)]
    align = [(0.26, 0.58, 0.21), (0.25, 0.57, 0.25), (0.24, 0.56, 0.22)]  # spread, AP50 gain
    lines, why = predictions(_records(pool, align))
    text = "\n".join(lines)
    print(text, why)
    assert "interval excluding 0**: does NOT reproduce" in text
    assert "AP75 than at AP50**: does NOT reproduce" in text
    _check_notes(why)
    assert any(kind == "computed" and "s_d = " in w for kind, w in why)
    assert any(kind == "hypothesis" and "1-2 px strokes" in w for kind, w in why)


def test_predictions_with_one_seed_are_not_tested():
    lines, _ = predictions(_records([(0.2, 0.5, 0.2)], [(0.3, 0.6, 0.3)]))
    assert "not tested (one seed gives no interval; the point estimate is +10.0" in lines[0]


def test_predictions_on_models_that_learned_nothing_are_not_tested():
    pool = [(0.003, 0.011, 0.0), (0.002, 0.01, 0.0)]
    align = [(0.002, 0.010, 0.001), (0.004, 0.02, 0.0)]
    lines, _ = predictions(_records(pool, align))
    print(lines)
    assert len(lines) == 2 and all("not tested (the models learned too little" in x for x in lines)


def _large(pool16, align16, pool32, align32):
    return {"large/c4/pool-max": _runs(pool16, data="large"),
            "large/c4/align-avg": _runs(align16, data="large"),
            "large/c5/pool-max": _runs(pool32, features="c5", data="large"),
            "large/c5/align-avg": _runs(align32, features="c5", data="large")}


def test_stride_32_at_the_floor_is_not_tested_even_when_stride_16_learned():
    """A C5 pair that learned nothing must not count as 'gain not larger at stride 32'."""
    floor = [(0.005, 0.015, 0.002)] * 3
    records = _large([(0.04, 0.09, 0.03)] * 3, [(0.08, 0.14, 0.08)] * 3, floor, floor)
    lines, why = predictions(records)
    stride32 = [x for x in lines if "stride 32" in x]
    print(stride32, why)
    assert len(stride32) == 1 and "not tested (the models learned too little" in stride32[0]
    _check_notes(why)
    assert ("computed", "At 256 px the stride-32 map is 8x8 cells.") in why
    assert any(kind == "hypothesis" and "too coarse" in w for kind, w in why)


def test_stride_32_gain_is_judged_on_paired_differences_of_gains():
    # gains per seed: stride 16 +4, +5, +4.5; stride 32 +8, +10, +9: larger in every seed
    records = _large([(0.20, 0.4, 0.2)] * 3, [(0.24, .4, .2), (0.25, .4, .2), (0.245, .4, .2)],
                     [(0.10, 0.3, 0.1)] * 3, [(0.18, .3, .1), (0.20, .3, .1), (0.19, .3, .1)])
    lines, why = predictions(records)
    text = "\n".join(lines)
    print(text)
    assert "larger at stride 32 than at stride 16 (Table 2d data)**: reproduces (+9.0 mask AP " \
        "at stride 32 vs +4.5 at stride 16; 95% interval of the difference [" in text
    assert why == []
    # the other way round, in every seed: does NOT reproduce, with the baselines computed
    swapped = {k.replace("c4", "tmp").replace("c5", "c4").replace("tmp", "c5"): v
               for k, v in records.items()}
    lines, why = predictions(swapped)
    assert any("stride 32" in x and "does NOT reproduce" in x for x in lines)
    _check_notes(why)
    assert any(kind == "computed" and "RoIPool's mask AP on the Table 2d data" in w
               for kind, w in why)


def test_fpn_gain_in_points_and_relative_terms():
    records = _records([(0.04, 0.09, 0.03)] * 3, [(0.08, 0.14, 0.08)] * 3)
    records["small/fpn/pool-max"] = _runs([(0.20, 0.35, 0.19), (0.21, .35, .19),
                                           (0.19, .35, .19)], features="fpn")
    records["small/fpn/align-avg"] = _runs([(0.26, 0.44, 0.29), (0.27, .44, .29),
                                            (0.25, .44, .29)], features="fpn")
    lines, why = predictions(records)
    print(lines, why)
    assert any("RoIAlign > RoIPool with FPN" in x and ": reproduces (+6.0 mask AP" in x
               for x in lines)
    assert any("smaller with FPN" in x and "does NOT reproduce" in x for x in lines)
    _check_notes(why)
    assert any(kind == "computed" and "gain is 30% with FPN vs 100% at stride 16" in w
               for kind, w in why), why
    assert any(kind == "hypothesis" and "not comparable" in w for kind, w in why)


def test_sigmoid_vs_softmax_is_judged_by_its_interval():
    sig = [(0.20, 0.4, 0.2), (0.22, 0.4, 0.2), (0.21, 0.4, 0.2)]
    records = {"compete/c4/align-avg": _runs(sig, data="compete"),
               "compete/c4/align-avg-softmax": _runs([(0.21, .4, .2), (0.20, .4, .2),
                                                      (0.22, .4, .2)], data="compete")}
    lines, why = predictions(records)
    print(lines, why)
    assert len(lines) == 1 and "per-class sigmoid beats softmax" in lines[0]
    assert ": not shown (+0.0 mask AP; 95% interval of the difference [" in lines[0]
    _check_notes(why)
    assert why[-1][0] == "computed" and "sigmoid − softmax, means over seeds" in why[-1][1]
    records["compete/c4/align-avg-softmax"] = _runs([(0.15, .4, .2), (0.16, .4, .2),
                                                     (0.16, .4, .2)], data="compete")
    lines, why = predictions(records)
    assert ": reproduces (+5.3 mask AP" in lines[0] and why == []


def test_quick_fpn_pair_with_one_seed_is_not_tested():
    records = {"small/fpn/pool-max": _runs([(0.2, 0.3, 0.2)], features="fpn"),
               "small/fpn/align-avg": _runs([(0.25, 0.4, 0.3)], features="fpn")}
    lines, why = predictions(records)
    assert lines == ["- **RoIAlign > RoIPool with FPN (paper: +1.5 mask AP)**: not tested (one "
                     "seed gives no interval; the point estimate is +5.0 mask AP)."]
    assert why == []


def test_check_init_finds_different_initial_weights():
    records = {"small/c4/pool-max": {0: _record(0, .1, .1, .1)},
               "small/c4/align-avg": {0: _record(0, .1, .1, .1)},
               "small/c4/align-avg-agnostic": {0: _record(0, .1, .1, .1, agnostic=True)},
               "small/c5/pool-max": {0: _record(0, .1, .1, .1, "c5", digest="9")},
               "compete/c4/pool-max": {0: _record(0, .1, .1, .1, digest="8", data="compete")}}
    assert check_init(records) == (3, [])  # c5 is not compared with c4, nor other data
    records["small/c4/align-avg"][0]["init_digests"]["backbone.body"] = "1"
    checked, problems = check_init(records)
    assert checked == 3 and len(problems) == 2 and "backbone.body" in problems[0]


def test_tables_share_runs_and_keys_are_distinct():
    shared = {TABLES["2c"][1][4].key, TABLES["aligned"][1][0].key}
    assert shared == {"small/c4/align-avg"}  # one run serves two tables
    assert TABLES["2b"][1][0].key == "compete/c4/align-avg"  # the same model, other data
    for _, variants in TABLES.values():
        assert len({v.key for v in variants}) == len(variants)


def test_ap75_vs_ap50_gain_needs_an_interval_excluding_zero():
    # gains (AP50, AP75) per seed: (+.05, +.08), (+.06, +.03), (+.04, +.06): the AP75 gain
    # is larger on average, but their difference changes sign across seeds
    pool = [(0.20, 0.50, 0.20), (0.21, 0.50, 0.20), (0.20, 0.50, 0.20)]
    align = [(0.26, 0.55, 0.28), (0.27, 0.56, 0.23), (0.25, 0.54, 0.26)]
    lines, _ = predictions(_records(pool, align))
    text = "\n".join(lines)
    print(text)
    assert "AP75 than at AP50**: not shown (+5.7 at AP75 vs +5.0 at AP50; 95% interval of " \
        "the difference [-7.3, +8.7], 3 seeds)" in text


def _keypoint_runs(values):
    """Runs of a Keypoint R-CNN: keypoint and box AP, no mask AP."""
    return {s: {"seed": s, "metrics": {"keypoints": dict(zip(("AP", "AP50", "AP75"), v)),
                                       "bbox": {"AP": 0.5, "AP50": 0.8, "AP75": 0.5}}}
            for s, v in enumerate(values)}


def test_table6_claims_read_keypoint_ap():
    pool = [(0.40, 0.80, 0.40), (0.42, 0.81, 0.42), (0.41, 0.80, 0.41)]
    align = [(0.45, 0.81, 0.47), (0.46, 0.82, 0.48), (0.46, 0.80, 0.47)]
    records = {"figures/fpn/pool-max": _keypoint_runs(pool),
               "figures/fpn/align-avg": _keypoint_runs(align)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean over the missing mask AP of these runs
        lines, why = predictions(records)
    print("\n".join(lines))
    assert len(lines) == 2 and why == []
    assert lines[0].startswith("- **RoIAlign > RoIPool for keypoints (Table 6: +4.4 keypoint "
                               "AP)**: reproduces (+4.7 keypoint AP;")
    assert lines[1].startswith("- **the keypoint gain is larger at AP75 than at AP50 (Table 6: "
                               "+3.0 vs +0.4)**: reproduces (+6.3 at AP75 vs +0.7 at AP50;")
    records = {k: {0: r[0]} for k, r in records.items()}
    lines, _ = predictions(records)
    assert lines[0].endswith("not tested (one seed gives no interval; the point estimate is "
                             "+5.0 keypoint AP).")
    assert "not tested (one seed gives no interval; +7.0 at AP75 vs +1.0 at AP50)" in lines[1]
