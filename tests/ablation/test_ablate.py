"""Tests for the ablation end to end (npmaskrcnn/ablation/cli.py, plan, runs, locks, workers,
report): a micro run that reports and resumes, workers sharing runs, locks."""

import csv
import json
import os

import pytest

from npmaskrcnn.ablation import cli, locks, plan, runs, variants
from npmaskrcnn.ablation.variants import PAPER
from npmaskrcnn.data.shapes import COMPETING_CLASSES
from npmaskrcnn.engine.trainer import Trainer


class Interrupted(Exception):
    pass


def test_micro_run_reports_and_resumes(tmp_path, monkeypatch):
    """Two variants x one seed on a tiny model: report, CSV, figure; a killed run resumes
    from its checkpoint and finished runs are skipped."""
    events, crash = [], {"in": "align-avg"}

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

    monkeypatch.setattr(runs, "Trainer", Spy)
    out = tmp_path / "abl"
    argv = ["--quick", "--tables", "2c", "--preset", "tiny", "--iters", "4", "--batch-size",
            "2", "--num-train", "4", "--num-val", "3", "--image-size", "64", "--warmup", "1",
            "--out", str(out), "--no-progress", "--jobs", "1"]
    with pytest.raises(Interrupted):
        cli.main(argv)
    pool, align = (out / "small" / "c4" / k / "seed0" for k in ("pool-max", "align-avg"))
    assert (pool / "metrics.json").exists() and not (align / "metrics.json").exists()
    assert (align / "checkpoint.npz").exists()

    events.clear()
    crash["in"] = None
    assert cli.main(argv) == 0
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
    assert [r["key"] for r in rows] == ["small/c4/pool-max", "small/c4/align-avg"]
    assert all(0 <= float(r["segm_AP"]) <= 1 for r in rows)
    assert all(float(r["cpu_seconds"]) > 0 for r in rows)
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert records[0]["rois_per_level"] is None  # single-level
    assert records[0]["spec"]["model"]["backbone"]["features"] == "c4"
    assert "What a quick run can and cannot decide" in report and "Design: " in report

    events.clear()  # a third invocation trains nothing
    monkeypatch.setattr(Spy, "__init__", lambda *a, **k: pytest.fail("retrained a run"))
    assert cli.main(argv) == 0 and events == []

    with pytest.raises(SystemExit, match="other settings"):  # never mix settings in a folder
        cli.main(argv[:6] + ["5"] + argv[7:])


def test_coco_arguments_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--images"):
        cli.main(["--ann", "x.json", "--out", str(tmp_path), "--no-progress"])


def test_quick_mode_is_one_seed_fpn_pool_vs_align_in_two_workers():
    quick = plan.MODES["quick"]
    tables = plan.plan_variants(quick)
    assert quick.seeds == 1 and list(tables) == ["fpn"]
    assert [v.key for v in tables["fpn"]] == ["small/fpn/pool-max", "small/fpn/align-avg"]
    args = cli.build_parser().parse_args(["--quick"])
    assert args.jobs is None  # main() then uses min(2, cpu_count) workers for --quick


def test_every_table_trains_on_its_own_data():
    """2c, aligned and FPN on the align data; 2d on 256-px images with objects 24-160 px,
    both strides; 2b on the competing classes; FPN with the scaled canonical size."""
    full = plan.MODES["full"]
    tables = plan.plan_variants(full)
    assert {v.data for t in ("2c", "aligned", "fpn") for v in tables[t]} == {"small"}
    assert {v.data for v in tables["2b"]} == {"compete"}
    assert [(v.features, v.pooler) for v in tables["2d"]] == [
        ("c4", "pool"), ("c4", "align"), ("c5", "pool"), ("c5", "align")]
    assert {v.data for v in tables["2d"]} == {"large"}
    large = plan.DATA["large"]
    assert (large["min_size"], large["max_size"]) == (24, 160)
    assert plan.image_size("large", full) == 256 and plan.image_size("small", full) == 128
    assert plan.DATA["compete"]["classes"] == COMPETING_CLASSES
    cfg = plan.model_config(tables["2d"][3], full, 4, seed=2)
    assert cfg.transform.min_size == 256 and cfg.backbone.features == "c5" and cfg.seed == 2
    fpn = plan.model_config(tables["fpn"][0], full, 4, seed=0)
    assert fpn.roi_heads.canonical_scale == 56 and fpn.roi_heads.pooler == "pool"
    softmax = plan.model_config(tables["2b"][1], full, 7, seed=0)
    assert softmax.roi_heads.mask_loss == "softmax" and softmax.num_classes == 7
    pairs = [(a.key, b.key) for a, b in variants.contrasts("2d", tables["2d"])]
    assert pairs == [("large/c4/align-avg", "large/c4/pool-max"),
                     ("large/c5/align-avg", "large/c5/pool-max")]


def test_prepared_data_are_generated_once_per_setting(tmp_path):
    small = plan.Plan(("2b",), seeds=1, iters=1, batch_size=1, num_train=6, num_val=2,
                      image_size=64, large_image_size=96)
    args = cli.build_parser().parse_args([])
    data = plan.prepare_data(args, small, tmp_path, ["compete", "large"])
    assert data["compete"][0].class_names[1:] == list(COMPETING_CLASSES)
    assert data["large"][0].load_image(0).shape == (3, 96, 96)
    assert "overlap an object of another class" in data["compete"][2]
    ann = tmp_path / "data" / "compete" / "annotations" / "instances_train.json"
    stamp = ann.stat().st_mtime_ns
    plan.prepare_data(args, small, tmp_path, ["compete"])
    assert ann.stat().st_mtime_ns == stamp  # up to date: not regenerated
    with pytest.raises(SystemExit, match="unknown data"):
        plan.prepare_data(args, small, tmp_path, ["nope"])


def test_claim_locks_a_run_and_takes_over_stale_locks(tmp_path, monkeypatch):
    run_dir = tmp_path / "small" / "c4" / "pool-max" / "seed0"
    with locks.claim(run_dir) as mine:
        assert mine and (run_dir / "running.lock").exists()
        with locks.claim(run_dir) as again:  # held by a live process (this one)
            assert not again
    assert not (run_dir / "running.lock").exists()  # released
    host = locks.socket.gethostname()
    (run_dir / "running.lock").write_text(f"{host} 999999999")  # a process that is gone
    with locks.claim(run_dir) as mine:
        assert mine
    (run_dir / "running.lock").write_text(f"elsewhere.example {os.getpid()}")
    with locks.claim(run_dir) as mine:  # another host's lock cannot be checked: respected
        assert not mine


def test_parallel_workers_share_the_runs(tmp_path):
    """--jobs 2: worker processes train the runs (none left locked, none resumed, which a
    run trained by two workers at once would be); the parent writes the report."""
    out = tmp_path / "abl"
    argv = ["--quick", "--preset", "tiny", "--iters", "2", "--batch-size", "1", "--num-train",
            "2", "--num-val", "2", "--image-size", "64", "--warmup", "1", "--out", str(out),
            "--no-progress", "--jobs", "2"]
    assert cli.main(argv) == 0
    for key in ("pool-max", "align-avg"):
        run_dir = out / "small" / "fpn" / key / "seed0"
        assert (run_dir / "metrics.json").exists() and not (run_dir / "running.lock").exists()
        record = json.loads((run_dir / "metrics.json").read_text())
        assert not record["resumed"]
        assert len(record["rois_per_level"]) == 4 and sum(record["rois_per_level"]) > 0
    report = (out / "report.md").read_text()
    assert "RoIAlign (avg) − RoIPool" in report and "2 worker process(es)" in report
    assert "RoIs per level of RoIPool" in report and "canonical size 56 px" in report
    assert "What a quick run can and cannot decide" in report
    with pytest.raises(SystemExit, match="--jobs"):
        cli.main(argv[:-1] + ["0"])
