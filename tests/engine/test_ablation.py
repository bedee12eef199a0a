import csv
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.engine import ablation
from npmaskrcnn.engine.ablation import (
    PAPER,
    TABLES,
    check_init,
    mean_std,
    paired_interval,
    predictions,
    t_quantile,
)
from npmaskrcnn.engine.trainer import Trainer

# ----------------------------------------------------------------------------- statistics


def test_mean_std_hand_computed():
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5)
    # sample std: sum of squares 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    assert s == pytest.approx(math.sqrt(5 / 3))


def test_mean_std_one_seed_has_no_std():
    m, s = mean_std([0.3])
    assert m == pytest.approx(0.3) and math.isnan(s)
    assert all(math.isnan(x) for x in mean_std([]))


@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(p):
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    got1, got2 = t_quantile(p, 1), t_quantile(p, 2)
    print(f"p={p}: t1 {got1:.8f}, t2 {got2:.8f}")
    assert got1 == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7)
    assert got2 == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7)


def test_t_quantile_tends_to_the_normal():
    # printed tables: t(0.975, 30) = 2.0423, t(0.975, 1000) = 1.9623; normal 1.95996
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.floats(0.6, 0.995))
def test_t_quantile_decreases_with_dof(df, p):
    assert t_quantile(p, df + 1) < t_quantile(p, df)


def test_paired_interval_hand_computed():
    # d = [2, 3, 4]: mean 3, s_d = 1, half-width t(0.975, 2) / sqrt(3)
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    m, lo, hi = paired_interval([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    print(f"paired interval {m} [{lo}, {hi}]")
    assert m == pytest.approx(3.0)
    assert lo == pytest.approx(3.0 - t2 / math.sqrt(3), rel=1e-7)
    assert hi == pytest.approx(3.0 + t2 / math.sqrt(3), rel=1e-7)


def test_paired_interval_one_seed_has_no_interval():
    m, lo, hi = paired_interval([0.30], [0.25])
    assert m == pytest.approx(0.05) and math.isnan(lo) and math.isnan(hi)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=6))
def test_paired_interval_properties(pairs):
    a, b = (list(x) for x in zip(*pairs))
    m, lo, hi = paired_interval(a, b)
    assert lo - 1e-12 <= m <= hi + 1e-12
    assert hi - m == pytest.approx(m - lo, abs=1e-9)
    m2, lo2, hi2 = paired_interval(b, a)  # swapping the arms negates the interval
    assert (m2, lo2, hi2) == pytest.approx((-m, -hi, -lo), abs=1e-9)


# ----------------------------------------------------------------------------- verdicts


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


# ----------------------------------------------------------------------------- micro run


class Interrupted(Exception):
    pass


def test_micro_run_reports_and_resumes(tmp_path, monkeypatch):
    """Two variants x one seed on a tiny model: report, CSV, figure; a killed run resumes
    from its checkpoint and finished runs are skipped."""
    events, crash = [], {"in": "align"}

    class Spy(Trainer):
        def resume(self):
            it = super().resume()
            events.append(("resume", self.out_dir, it))
            return it

        def train(self, resume=False, stop_at=None):
            events.append(("train", self.out_dir, resume))
            if crash["in"] and crash["in"] in self.out_dir:
                super().train(resume, stop_at=2)  # checkpoint at iteration 2, then killed
                raise Interrupted
            return super().train(resume, stop_at)

    monkeypatch.setattr(ablation, "Trainer", Spy)
    out = tmp_path / "abl"
    argv = ["--quick", "--preset", "tiny", "--iters", "4", "--batch-size", "2", "--num-train",
            "4", "--num-val", "3", "--image-size", "64", "--warmup", "1", "--out", str(out),
            "--no-progress"]
    with pytest.raises(Interrupted):
        ablation.main(argv)
    pool, align = out / "c4" / "pool-max" / "seed0", out / "c4" / "align-avg" / "seed0"
    assert (pool / "metrics.json").exists() and not (align / "metrics.json").exists()
    assert (align / "checkpoint.npz").exists()

    events.clear()
    crash["in"] = None
    assert ablation.main(argv) == 0
    assert events == [("train", str(align), True), ("resume", str(align), 2)]

    records = [json.loads((d / "metrics.json").read_text()) for d in (pool, align)]
    assert records[0]["init_digests"] == records[1]["init_digests"]  # same initial weights
    assert records[1]["resumed"] and not records[0]["resumed"]
    report = (out / "report.md").read_text()
    assert PAPER in report and "RoIAlign (avg) − RoIPool" in report
    assert "**RoIAlign > RoIPool at stride 16, interval excluding 0**: not tested (" in report
    assert "all identical" in report
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == ["c4/pool-max", "c4/align-avg"]
    assert all(0 <= float(r["segm_AP"]) <= 1 for r in rows)
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"

    events.clear()  # a third invocation trains nothing
    monkeypatch.setattr(Spy, "__init__", lambda *a, **k: pytest.fail("retrained a run"))
    assert ablation.main(argv) == 0 and events == []

    with pytest.raises(SystemExit, match="other settings"):  # never mix settings in a folder
        ablation.main(argv[:4] + ["5"] + argv[5:])


def test_coco_arguments_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--images"):
        ablation.main(["--ann", "x.json", "--out", str(tmp_path), "--no-progress"])


def test_quick_mode_is_one_seed_pool_vs_align():
    tables = ablation.plan_variants(ablation.MODES["quick"])
    assert ablation.MODES["quick"].seeds == 1
    assert [v.key for v in tables["2c"]] == ["c4/pool-max", "c4/align-avg"]
    assert np.all([v.features == "c4" for v in tables["2c"]])


def test_claim_locks_a_run_and_takes_over_stale_locks(tmp_path, monkeypatch):
    run_dir = tmp_path / "c4" / "pool-max" / "seed0"
    with ablation.claim(run_dir) as mine:
        assert mine and (run_dir / "running.lock").exists()
        with ablation.claim(run_dir) as again:  # held by a live process (this one)
            assert not again
    assert not (run_dir / "running.lock").exists()  # released
    host = ablation.socket.gethostname()
    (run_dir / "running.lock").write_text(f"{host} 999999999")  # a process that is gone
    with ablation.claim(run_dir) as mine:
        assert mine
    (run_dir / "running.lock").write_text(f"elsewhere.example {os.getpid()}")
    with ablation.claim(run_dir) as mine:  # another host's lock cannot be checked: respected
        assert not mine


def test_parallel_workers_share_the_runs(tmp_path):
    """--jobs 2: worker processes train the runs (none left locked, none resumed, which a
    run trained by two workers at once would be); the parent writes the report."""
    out = tmp_path / "abl"
    argv = ["--quick", "--preset", "tiny", "--iters", "2", "--batch-size", "1", "--num-train",
            "2", "--num-val", "2", "--image-size", "64", "--warmup", "1", "--out", str(out),
            "--no-progress", "--jobs", "2"]
    assert ablation.main(argv) == 0
    for key in ("pool-max", "align-avg"):
        run_dir = out / "c4" / key / "seed0"
        assert (run_dir / "metrics.json").exists() and not (run_dir / "running.lock").exists()
        assert not json.loads((run_dir / "metrics.json").read_text())["resumed"]
    assert "RoIAlign (avg) − RoIPool" in (out / "report.md").read_text()
    with pytest.raises(SystemExit, match="--jobs"):
        ablation.main(argv[:-1] + ["0"])


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
