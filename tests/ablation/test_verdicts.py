"""Tests for npmaskrcnn/ablation/verdicts.py (and runs.check_init, variants.TABLES)."""


from npmaskrcnn.ablation.runs import check_init
from npmaskrcnn.ablation.variants import TABLES
from npmaskrcnn.ablation.verdicts import predictions


def _record(seed, ap, ap50, ap75, features="c4", agnostic=False, digest="0"):
    segm = {"AP": ap, "AP50": ap50, "AP75": ap75}
    return {"seed": seed, "metrics": {"segm": segm, "bbox": dict(segm)},
            "spec": {"variant": {"features": features, "class_agnostic_mask": agnostic}},
            "init_digests": {"backbone.body": digest, "roi_heads.mask_predictor": digest}}


def _records(pool, align, warp=None):
    out = {"c4/pool-max": {s: _record(s, *v) for s, v in enumerate(pool)},
           "c4/align-avg": {s: _record(s, *v) for s, v in enumerate(align)}}
    if warp:
        out["c4/warp-max"] = {s: _record(s, *v) for s, v in enumerate(warp)}
    return out


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
    assert any("spread" in w for w in why)


def test_predictions_with_one_seed_are_not_tested():
    lines, _ = predictions(_records([(0.2, 0.5, 0.2)], [(0.3, 0.6, 0.3)]))
    assert "not tested (one seed gives no interval; the point estimate is +10.0" in lines[0]


def test_predictions_on_models_that_learned_nothing_are_not_tested():
    pool = [(0.003, 0.011, 0.0), (0.002, 0.01, 0.0)]
    align = [(0.002, 0.010, 0.001), (0.004, 0.02, 0.0)]
    lines, _ = predictions(_records(pool, align))
    print(lines)
    assert len(lines) == 2 and all("not tested (the models learned too little" in x for x in lines)


def test_stride_32_at_the_floor_is_not_tested_even_when_stride_16_learned():
    """A C5 pair that learned nothing must not count as 'gain not larger at stride 32'."""
    records = _records([(0.04, 0.09, 0.03)] * 2 + [(0.05, 0.1, 0.04)],
                       [(0.08, 0.14, 0.08)] * 2 + [(0.09, 0.15, 0.09)])
    for key in ("c5/pool-max", "c5/align-avg"):
        records[key] = {s: _record(s, 0.005, 0.015, 0.002, features="c5") for s in range(3)}
        for r in records[key].values():
            r["spec"]["train"] = {"image_size": 128}
    lines, why = predictions(records)
    stride32 = [x for x in lines if "stride 32" in x]
    print(stride32, why)
    assert len(stride32) == 1 and "not tested (the models learned too little" in stride32[0]
    assert any("4x4 C5 map" in w for w in why)
    # once the C5 models learn, the same claim gets a verdict
    records["c5/align-avg"] = {s: _record(s, 0.06, 0.1, 0.05, features="c5") for s in range(3)}
    lines, _ = predictions(records)
    assert any("stride 32" in x and "reproduces" in x for x in lines)


def test_fpn_gain_in_points_and_relative_terms():
    records = _records([(0.04, 0.09, 0.03)] * 3, [(0.08, 0.14, 0.08)] * 3)
    records["fpn/pool-max"] = {s: _record(s, 0.20, 0.35, 0.19, features="fpn") for s in range(3)}
    records["fpn/align-avg"] = {s: _record(s, 0.26, 0.44, 0.29, features="fpn") for s in range(3)}
    lines, why = predictions(records)
    assert any("smaller with FPN" in x and "does NOT reproduce" in x for x in lines)
    assert any("gain is 30% with FPN vs 100% at stride 16" in w for w in why), why


def test_check_init_finds_different_initial_weights():
    records = {"c4/pool-max": {0: _record(0, .1, .1, .1)},
               "c4/align-avg": {0: _record(0, .1, .1, .1)},
               "c4/align-avg-agnostic": {0: _record(0, .1, .1, .1, agnostic=True, digest="0")},
               "c5/pool-max": {0: _record(0, .1, .1, .1, "c5", digest="9")}}
    assert check_init(records) == (3, [])  # c5 is not compared with c4
    records["c4/align-avg"][0]["init_digests"]["backbone.body"] = "1"
    checked, problems = check_init(records)
    assert checked == 3 and len(problems) == 2 and "backbone.body" in problems[0]


def test_tables_share_runs_and_keys_are_distinct():
    shared = {TABLES["2b"][1][0].key, TABLES["2c"][1][4].key, TABLES["aligned"][1][0].key}
    assert shared == {"c4/align-avg"}  # one run serves three tables
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
    assert "AP75 than at AP50**: not shown (+5.7 at AP75 vs +5.0 at AP50; their difference " \
        "+0.7, 95% interval [" in text and "] includes 0)" in text
