"""Tests for the ablation end to end (npmaskrcnn/ablation/cli.py, plan, runs, locks, workers,
report): a micro run that reports and resumes, workers sharing runs, locks."""

import csv
import json
import os

import pytest

from npmaskrcnn.ablation import cli, locks, plan, runs
from npmaskrcnn.ablation.variants import PAPER
from npmaskrcnn.engine.trainer import Trainer


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

    monkeypatch.setattr(runs, "Trainer", Spy)
    out = tmp_path / "abl"
    argv = ["--quick", "--preset", "tiny", "--iters", "4", "--batch-size", "2", "--num-train",
            "4", "--num-val", "3", "--image-size", "64", "--warmup", "1", "--out", str(out),
            "--no-progress"]
    with pytest.raises(Interrupted):
        cli.main(argv)
    pool, align = out / "c4" / "pool-max" / "seed0", out / "c4" / "align-avg" / "seed0"
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
    assert [r["key"] for r in rows] == ["c4/pool-max", "c4/align-avg"]
    assert all(0 <= float(r["segm_AP"]) <= 1 for r in rows)
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"

    events.clear()  # a third invocation trains nothing
    monkeypatch.setattr(Spy, "__init__", lambda *a, **k: pytest.fail("retrained a run"))
    assert cli.main(argv) == 0 and events == []

    with pytest.raises(SystemExit, match="other settings"):  # never mix settings in a folder
        cli.main(argv[:4] + ["5"] + argv[5:])


def test_coco_arguments_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--images"):
        cli.main(["--ann", "x.json", "--out", str(tmp_path), "--no-progress"])


def test_quick_mode_is_one_seed_pool_vs_align():
    tables = plan.plan_variants(plan.MODES["quick"])
    assert plan.MODES["quick"].seeds == 1
    assert [v.key for v in tables["2c"]] == ["c4/pool-max", "c4/align-avg"]
    assert all(v.features == "c4" for v in tables["2c"])


def test_claim_locks_a_run_and_takes_over_stale_locks(tmp_path, monkeypatch):
    run_dir = tmp_path / "c4" / "pool-max" / "seed0"
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
        run_dir = out / "c4" / key / "seed0"
        assert (run_dir / "metrics.json").exists() and not (run_dir / "running.lock").exists()
        assert not json.loads((run_dir / "metrics.json").read_text())["resumed"]
    assert "RoIAlign (avg) − RoIPool" in (out / "report.md").read_text()
    with pytest.raises(SystemExit, match="--jobs"):
        cli.main(argv[:-1] + ["0"])
