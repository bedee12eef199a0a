"""Tests for Table 6 of the ablation (RoIPool vs RoIAlign in Keypoint R-CNN on the stick
figures): its variants, data and model configs (plan.py, variants.py), a micro run end to
end (cli, runs, report, figure), and the report of mask and keypoint tables together."""

import csv
import json

from npmaskrcnn.ablation import cli, plan, report, variants
from npmaskrcnn.ablation.runs import check_init
from npmaskrcnn.config import PRESETS
from npmaskrcnn.data.figures import figures_paths
from npmaskrcnn.data.shapes import shapes_settings
from npmaskrcnn.model.mask_rcnn import MaskRCNN

FIGURE_KEYS = ["figures/fpn/pool-max", "figures/fpn/align-avg"]


def test_table6_is_pool_vs_align_on_figures_with_keypoint_metrics():
    full = plan.MODES["full"]
    assert "6" in full.tables and "6" not in plan.MODES["default"].tables
    table = plan.plan_variants(full)["6"]
    assert [v.key for v in table] == FIGURE_KEYS  # no collision with small/fpn/...
    assert [(v.pooler, v.aggregation, v.aligned) for v in table] == [
        ("pool", "max", False), ("align", "avg", False)]
    assert [v.paper for v in table] == [(59.8, 86.2, 66.7), (64.2, 86.6, 69.7)]
    assert [(a.key, b.key) for a, b in variants.contrasts("6", table)] == [tuple(FIGURE_KEYS[::-1])]
    assert variants.metrics("6") == variants.KEYPOINT_METRICS
    assert [t for t, _ in variants.metrics("6")] == ["keypoints"] * 3 + ["bbox"] * 3
    assert all(variants.metrics(t) == variants.METRICS for t in ("2c", "aligned", "2d", "fpn",
                                                                  "2b"))
    assert variants.union_metrics(("2c",)) == variants.METRICS  # the shapes CSV as before
    assert [t for t, _ in variants.union_metrics(("2c", "6"))] == (
        ["segm"] * 3 + ["bbox"] * 3 + ["keypoints"] * 3)
    assert "6" in variants.DESIGN and "keypoint pooler" in variants.DESIGN["6"]
    assert plan.image_size("figures", full) == 160 and plan.input_size("figures", full) == 240
    assert plan.input_size("small", full) == 128 and plan.input_size("large", full) == 256


def test_figures_variants_get_the_figures_preset_with_their_pooler_in_every_branch():
    """Whatever --preset says, a figures variant is the figures preset (keypoint branch on,
    no mask branch) at 1.5x the image size, as `npmaskrcnn train --data figures`; the variant's
    RoI op reaches the box and the keypoint pooler; the two variants differ only there."""
    tiny = plan.Plan(("6",), seeds=1, iters=1, batch_size=1, num_train=1, num_val=1,
                     preset="tiny")
    configs = []
    for v in variants.TABLES["6"][1]:
        cfg = plan.model_config(v, tiny, num_classes=2, seed=3)
        assert cfg.keypoint.on and not cfg.roi_heads.mask_on and cfg.seed == 3
        assert cfg.keypoint.layers == (64,) * 4 and cfg.fpn.out_channels == 64  # not tiny's
        assert (cfg.roi_heads.pooler, cfg.roi_heads.aggregation) == (v.pooler, v.aggregation)
        heads = MaskRCNN(cfg).roi_heads
        for pooler in (heads.box_roi_pool, heads.keypoint_roi_pool):
            assert (pooler.op, pooler.aggregation, pooler.aligned) == (
                v.pooler, v.aggregation, v.aligned)
        configs.append(cfg.to_dict())
    default = PRESETS["figures"](num_classes=2)  # what the train command builds
    default.transform.min_size = default.transform.max_size = 240
    default.seed = 3
    assert default.roi_heads.canonical_scale == 448 and configs[1]["roi_heads"][
        "canonical_scale"] == 56  # Table 6's level rule, pinned as it was measured
    default.roi_heads.canonical_scale = 56
    assert default.keypoint.layers == (128,) * 4  # Table 6's head is pinned as measured, too
    default.keypoint.layers = (64,) * 4
    assert (default.keypoint.score, default.keypoint.flip_test) == ("box_x_keypoints", True)
    assert (configs[1]["keypoint"]["score"], configs[1]["keypoint"]["flip_test"]) == (
        "box", False)  # and its inference (torchvision's scores, no flip test)
    default.keypoint.score, default.keypoint.flip_test = "box", False
    assert default.keypoint.rois_per_image == 12 and configs[1]["keypoint"][
        "rois_per_image"] is None  # every positive trains its keypoint branch, as measured
    default.keypoint.rois_per_image = None
    assert default.rpn.anchor_sizes[:2] == ((), ()) and [list(s) for s in configs[1]["rpn"][
        "anchor_sizes"]] == [[8], [16], [32], [64], [128]]  # its RPN on all five levels
    default.rpn.anchor_sizes = ((8,), (16,), (32,), (64,), (128,))
    assert configs[1] == default.to_dict()  # RoIAlign avg: the train command's model
    pool, align = configs
    assert {k for k in pool if pool[k] != align[k]} == {"roi_heads"}
    assert {k for k in pool["roi_heads"] if pool["roi_heads"][k] != align["roi_heads"][k]} == {
        "pooler", "aggregation"}


def test_table6_micro_run_reports_keypoint_ap(tmp_path):
    """``ablate --tables 6`` on a few tiny images, 2 iterations, 1 seed: figures data, runs
    that record keypoint AP and no mask AP, from the same initial weights, and a report
    with keypoint columns and the RoIAlign − RoIPool row."""
    out = tmp_path / "abl"
    argv = ["--tables", "6", "--seeds", "1", "--iters", "2", "--batch-size", "1",
            "--num-train", "2", "--num-val", "2", "--figures-image-size", "64", "--warmup", "1",
            "--out", str(out), "--no-progress", "--jobs", "1"]
    assert cli.main(argv) == 0
    ann = figures_paths(out / "data" / "figures", "train")[0]
    have = shapes_settings(ann)
    assert have["classes"] == ["person"] and have["num_images"] == 2
    assert have["image_size"] == [64, 64]
    assert all(len(a["keypoints"]) == 51 for a in json.loads(ann.read_text())["annotations"])

    records = [json.loads((out / k / "seed0" / "metrics.json").read_text())
               for k in FIGURE_KEYS]
    for r in records:
        assert set(r["metrics"]) == {"keypoints", "bbox"}  # no mask branch, no segm
        assert all(0 <= r["metrics"]["keypoints"][k] <= 1 for k in ("AP", "AP50", "AP75"))
        model = r["spec"]["model"]
        assert model["keypoint"]["on"] and not model["roi_heads"]["mask_on"]
        assert model["transform"]["min_size"] == 96  # 1.5 x 64
        assert len(r["rois_per_level"]) == 4
    assert records[0]["init_digests"] == records[1]["init_digests"]
    assert "roi_heads.keypoint_head" in records[0]["init_digests"]
    assert check_init({k: {0: r} for k, r in zip(FIGURE_KEYS, records)}) == (1, [])

    text = (out / "report.md").read_text()
    assert "### Table 6: RoIPool vs RoIAlign" in text
    assert ("| keypoint AP | AP50 | AP75 | box AP | AP50 | AP75 | seeds | " in text)
    assert "| RoIAlign (avg) − RoIPool | " in text and "Δ keypoint |" in text
    assert "+4.4 / +0.4 / +3.0" in text  # the paper's differences
    assert "mask AP" not in text and "segm" not in text and "-100.0" not in text
    assert "Model: the `figures` preset" in text and "seen at 96 px" in text
    assert "**RoIAlign > RoIPool for keypoints (Table 6: +4.4 keypoint AP)**: not tested" in text
    assert "all identical" in text
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == FIGURE_KEYS
    assert not any(c.startswith("segm") for c in rows[0])
    assert all(0 <= float(r[f"keypoints_{k}"]) <= 1 for r in rows for k in ("AP", "AP50", "AP75"))
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    stamp = ann.stat().st_mtime_ns
    assert cli.main(argv) == 0 and ann.stat().st_mtime_ns == stamp  # data and runs reused


def _fake_run(out, key, metrics, data):
    run = out / key / "seed0"
    run.mkdir(parents=True)
    spec = {"variant": {"features": key.split("/")[1], "data": data,
                        "class_agnostic_mask": False},
            "model": {"roi_heads": {"canonical_scale": 56}}}
    run.joinpath("metrics.json").write_text(json.dumps({
        "spec": spec, "seed": 0, "resumed": False, "init_digests": {},
        "metrics": {t: {"AP": ap, "AP50": ap, "AP75": ap} for t, ap in metrics.items()},
        "train_seconds": 1.0, "eval_seconds": 1.0, "cpu_seconds": 2.0, "rois_per_level": None}))


def test_report_of_mask_and_keypoint_tables_shows_each_its_own_metrics(tmp_path):
    """A mask table beside Table 6: one CSV whose cells are empty where a run's model has no
    such branch (never -1), each table with its own columns."""
    both = plan.Plan(("fpn", "6"), seeds=1, iters=1, batch_size=1, num_train=1, num_val=1)
    tables = plan.plan_variants(both)
    for v in tables["fpn"]:
        _fake_run(tmp_path, v.key, {"segm": 0.3, "bbox": 0.4}, "small")
    for v in tables["6"]:
        _fake_run(tmp_path, v.key, {"keypoints": 0.5, "bbox": 0.6}, "figures")
    text = report.write_report(tmp_path, tables, both, {}, 1.0)
    with open(tmp_path / "results.csv") as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    assert rows["small/fpn/pool-max"]["segm_AP"] == "0.3000"
    assert rows["small/fpn/pool-max"]["keypoints_AP"] == ""
    assert rows["figures/fpn/align-avg"]["keypoints_AP75"] == "0.5000"
    assert rows["figures/fpn/align-avg"]["segm_AP"] == ""
    fpn, six = text.split("### FPN")[1].split("### Table 6")
    assert "| mask AP |" in fpn and "keypoint" not in fpn.split("## Which")[0]
    six = six.split("## Which")[0]
    assert "| keypoint AP |" in six and "mask AP" not in six and "| 50.0 |" in six
    assert "the `shapes` preset (mask tables) and the `figures` preset" in text
    assert "| RoIPool [figures/fpn/pool-max] | 0 | – | – | – | 60.0 |" in text
    assert "-100.0" not in text
