"""The command line, end to end on tiny data (a few iterations of the tiny preset); its
failures are in ``test_cli_errors.py``."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from npmaskrcnn.cli import build_parser, main
from npmaskrcnn.engine.checkpoint import read_meta

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = ("make-shapes", "coco-subset", "train", "eval", "predict", "import-weights")
TINY = ["--preset", "tiny", "--image-size", "64", "--warmup", "1"]


def _main(*argv) -> int:
    return main([str(a) for a in argv])


def test_help_explains_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in (*COMMANDS, "ablate"):
        assert cmd in out
    assert "``" not in out  # no reStructuredText markup in a terminal
    for cmd in COMMANDS:
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "usage: npmaskrcnn " + cmd in capsys.readouterr().out


def _options(command):
    """(option strings, help, default) of every argument of a subcommand but --help."""
    sub = build_parser().command_parsers[command]
    return [(a.option_strings or [a.dest], a.help, a.default) for a in sub._actions
            if a.dest != "help"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_has_help_and_shows_its_default(command, capsys):
    for names, help_text, _ in _options(command):
        assert help_text, f"{command} {names} has no help text"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for names, _, default in _options(command):
        if isinstance(default, int) and not isinstance(default, bool):
            assert re.search(rf"{re.escape(names[-1])} .*default: {default}\b", text), names


def _readme_synopsis(command) -> str:
    """The README's synopsis of a command: in the code block of "## The command line", the
    lines from ``npmaskrcnn COMMAND`` to the next ``npmaskrcnn``."""
    section = README.read_text().split("## The command line")[1].split("\n## ")[0]
    block = section.split("```")[1]
    starts = [m.start() for m in re.finditer(r"^npmaskrcnn ", block, flags=re.M)]
    for a, b in zip(starts, starts[1:] + [len(block)]):
        if block[a:b].split()[1] == command:
            return block[a:b]
    raise AssertionError(f"README's command reference has no npmaskrcnn {command}")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_readme_command_reference_lists_every_option(command):
    synopsis = _readme_synopsis(command)
    missing = [names[-1] for names, _, _ in _options(command)
               if names[-1].startswith("--") and names[-1] not in synopsis
               and names[-1] != "--debug"]  # every command's: said once, below the block
    assert not missing, f"README's command reference lacks {command} {missing}"
    assert "also takes `--debug`" in README.read_text()


def test_unknown_backend_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--backend", "tpu"])


def test_train_eval_predict_on_tiny_shapes(tmp_path, capsys):
    run = tmp_path / "run"
    assert _main("train", *TINY, "--iters", "3", "--batch-size", "2", "--num-train", "4",
                 "--num-val", "2", "--out", run, "--checkpoint-every", "2") == 0
    out, err = capsys.readouterr()
    # a log a person can read: no carriage returns, short lines, COCO's table once, in %
    assert "\r" not in out + err and max(len(line) for line in (out + err).splitlines()) < 200
    assert "Average Precision" not in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("AP")] == [
        "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert re.search(r"^result: box AP [\d.]+, mask AP [\d.]+ \(AP50 [\d.]+ / [\d.]+\) on 2 "
                     r"images of .*instances_val.json$", out.splitlines()[-1])
    assert (run / "checkpoint.npz").exists() and (run / "log.jsonl").exists()
    assert (run / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "examples").iterdir())[0] == "example_0.png"
    val_ann = run / "data" / "annotations" / "instances_val.json"
    assert _main("eval", run / "checkpoint.npz", "--ann", val_ann, "--images",
                 run / "data" / "val", "--out", tmp_path / "ev") == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'ev' / 'metrics.json'} and" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"}
    image = next((run / "data" / "val").iterdir())
    assert _main("predict", run / "checkpoint.npz", image, "--score-thresh", "0.0") == 0
    predictions = run / "predictions"  # default: beside the checkpoint
    dets = json.loads((predictions / "detections.json").read_text())
    assert dets[0]["image"] == str(image) and dets[0]["drawing"] == str(
        predictions / f"{image.stem}.png")
    assert (predictions / f"{image.stem}.png").exists()
    assert all(d["mask_area"] >= 0 and len(d["box"]) == 4 for d in dets[0]["detections"])


def test_cpupy_backend_runs_train_eval_predict(tmp_path, capsys):
    """The strict CuPy stand-in: host-only code (images, COCO, drawing) converts at its
    boundary, so nothing mixes host and device arrays."""
    run = tmp_path / "run"
    common = ["--backend", "cpupy"]
    assert _main("train", *TINY, *common, "--iters", "2", "--num-train", "2", "--num-val", "1",
                 "--out", run) == 0
    assert _main("eval", run / "checkpoint.npz", *common, "--ann",
                 run / "data" / "annotations" / "instances_val.json", "--images",
                 run / "data" / "val") == 0
    image = next((run / "data" / "val").iterdir())
    assert _main("predict", run / "checkpoint.npz", image, *common, "--score-thresh", "0",
                 "--out", tmp_path / "p") == 0
    assert "Traceback" not in capsys.readouterr().err


def test_shapes_are_seen_at_one_and_a_half_times_their_size(tmp_path):
    from npmaskrcnn.cli import load_model

    sizes = {}
    for name, extra in (("default", []), ("explicit", ["--input-size", "80"])):
        run = tmp_path / name
        assert _main("train", *TINY, "--iters", "1", "--num-train", "1", "--num-val", "1",
                     "--out", run, "--no-eval", *extra) == 0
        t = load_model(str(run / "checkpoint.npz"))[0].cfg.transform
        sizes[name] = (t.min_size, t.max_size)
    assert sizes == {"default": (96, 96), "explicit": (80, 80)}


def test_make_shapes_and_coco_subset_by_name_and_id(tmp_path, capsys):
    assert _main("make-shapes", tmp_path / "s", "--num-images", "1", "--image-size", "32",
                 "--classes", "square", "cross") == 0
    assert "wrote 1 image of square, cross to" in capsys.readouterr().out
    ann = tmp_path / "s" / "annotations" / "instances_train.json"
    assert [c["name"] for c in json.loads(ann.read_text())["categories"]] == ["square", "cross"]
    assert _main("make-shapes", tmp_path / "s", "--num-images", "4", "--image-size", "48",
                 "--seed", "3") == 1  # the split is there: not replaced without --overwrite
    assert _main("make-shapes", tmp_path / "s", "--num-images", "4", "--image-size", "48",
                 "--seed", "3", "--overwrite") == 0
    data = json.loads(ann.read_text())
    assert len(data["images"]) == 4 and data["info"]["generator"]["seed"] == 3
    capsys.readouterr()
    assert _main("coco-subset", ann, tmp_path / "sub.json", "--categories", "1", "circle",
                 "--max-images", "2") == 0  # an id and a name, as the help says
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'sub.json'}: ") and "of 2 categories" in out
    sub = json.loads((tmp_path / "sub.json").read_text())
    assert [c["name"] for c in sub["categories"]] == ["square", "circle"]
    assert len(sub["images"]) <= 2


def test_import_weights_and_train_from_them(tmp_path, capsys):
    """import-weights prints its report; train --weights starts from the file, names the
    class-specific layers it leaves fresh (another number of classes) and keeps the report
    in the checkpoint; the imported whole model is a checkpoint for predict and eval."""

    run = tmp_path / "run"
    assert _main("train", *TINY, "--iters", "1", "--num-train", "2", "--num-val", "1",
                 "--out", run, "--no-eval") == 0
    capsys.readouterr()
    assert _main("import-weights", run / "checkpoint.npz", tmp_path / "w.npz") == 0
    out = capsys.readouterr().out
    assert "the whole model" in out and f"wrote {tmp_path / 'w.npz'}" in out
    # two of the four shape classes: cls_score, bbox_pred and mask_fcn_logits stay fresh
    ann = run / "data" / "annotations" / "instances_train.json"
    assert _main("coco-subset", ann, tmp_path / "two.json", "--categories", "square",
                 "circle", "--keep-empty") == 0
    assert _main("train", *TINY, "--iters", "1", "--ann", tmp_path / "two.json", "--images",
                 run / "data" / "train", "--out", tmp_path / "ft", "--weights",
                 tmp_path / "w.npz") == 0
    out = capsys.readouterr().out
    assert "initialised from --weights:" in out and "file 5 classes, model 3" in out
    meta = read_meta(str(tmp_path / "ft" / "checkpoint.npz"))
    fresh = [name for names in meta["initialised_from"]["fresh"].values() for name in names]
    assert sorted(n.rsplit(".", 1)[0] for n in fresh) == [
        "roi_heads.box_predictor.bbox_pred"] * 2 + ["roi_heads.box_predictor.cls_score"] * 2 + [
        "roi_heads.mask_predictor.mask_fcn_logits"] * 2
    assert meta["options"]["weights"] == str(tmp_path / "w.npz")
    # an imported file of one of our checkpoints keeps its classes
    assert read_meta(str(tmp_path / "w.npz"))["class_names"][1:] == [
        "square", "circle", "triangle", "ring"]
    image = next((run / "data" / "val").iterdir())
    assert _main("predict", tmp_path / "w.npz", image, "--out", tmp_path / "p",
                 "--score-thresh", "0") == 0
    assert _main("eval", tmp_path / "w.npz", "--ann",
                 run / "data" / "annotations" / "instances_val.json", "--images",
                 run / "data" / "val") == 0


def test_keypoints_on_generated_stick_figures(tmp_path, capsys):
    """train --data figures generates stick figures and trains the figures preset by default,
    then scores keypoint AP; eval scores it again; predict draws skeletons and lists the
    keypoints."""
    run = tmp_path / "run"
    assert _main("train", "--data", "figures", "--image-size", "64", "--iters", "2",
                 "--warmup", "1", "--batch-size", "1", "--num-train", "2", "--num-val", "2",
                 "--out", run) == 0
    out = capsys.readouterr().out
    assert "generating 2 images of train figures" in out and "training figures (1 class)" in out
    assert "seen at 96 px with AdamW (lr 0.002)" in out  # 1.5 x the 64-px images
    meta = read_meta(str(run / "checkpoint.npz"))
    assert (meta["train"]["optimizer"], meta["train"]["weight_decay"]) == ("adamw", 0.05)
    assert meta["optim_steps"] == 2
    assert re.search(r"^result: box AP [\d.]+, keypoint AP [\d.]+ \(AP50 [\d.]+ / [\d.]+\) on 2 "
                     r"images of .*person_keypoints_val.json$", out.splitlines()[-1])
    assert [line.split()[0] for line in out.splitlines() if "OKS=" in line] == [
        "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    val = run / "data" / "annotations" / "person_keypoints_val.json"
    assert _main("eval", run / "checkpoint.npz", "--ann", val, "--images", run / "data" / "val",
                 "--out", tmp_path / "ev") == 0
    assert "keypoints" in json.loads((tmp_path / "ev" / "metrics.json").read_text())
    image = next((run / "data" / "val").iterdir())
    assert _main("predict", run / "checkpoint.npz", image, "--score-thresh", "0",
                 "--out", tmp_path / "p") == 0
    dets = json.loads((tmp_path / "p" / "detections.json").read_text())[0]["detections"]
    assert dets and all(len(d["keypoints"]) == len(d["keypoint_scores"]) == 17 for d in dets)
    assert "mask_area" not in dets[0]  # the figures preset has no mask branch


def test_make_figures_and_a_mask_preset_on_keypoints_warns(tmp_path, capsys):
    assert _main("make-figures", tmp_path / "f", "--num-images", "2", "--image-size", "64") == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote 2 images of stick figures (") and "person_keypoints_train" in out
    ann = tmp_path / "f" / "annotations" / "person_keypoints_train.json"
    assert json.loads(ann.read_text())["categories"][0]["name"] == "person"
    assert _main("train", *TINY, "--ann", ann, "--images", tmp_path / "f" / "train",
                 "--iters", "1", "--no-eval", "--out", tmp_path / "run") == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if ": warning: " in line]
    assert len(warned) == 1 and re.search(r"person_keypoints_train.json: \d+ annotation\(s\) have "
                                          r"keypoints, but the preset tiny has no keypoint "
                                          r"branch: they are not trained", warned[0])


FIGURES_RUN = ["--data", "figures", "--image-size", "64", "--warmup", "1", "--batch-size", "1",
               "--num-train", "2", "--num-val", "1", "--no-eval"]


def _forget_the_optimizer(checkpoint: Path):
    """Make a checkpoint look like one written before --optimizer existed."""
    with np.load(checkpoint) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for section in ("options", "train"):
        meta[section] = {k: v for k, v in meta[section].items()
                         if k not in ("optimizer", "weight_decay")}
    meta["options"]["lr"] = 0.02  # the old --lr default, stored with the options
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(checkpoint, **arrays)


@pytest.mark.parametrize("typed", [["--optimizer", "sgd"], []], ids=["typed", "old run"])
def test_a_resumed_run_keeps_its_optimizer(tmp_path, capsys, typed):
    """A stick-figure run started with SGD -- typed, or before --optimizer existed, when SGD
    was the only one -- resumes with SGD and its learning rate, not the data's AdamW."""
    run = tmp_path / "run"
    assert _main("train", *FIGURES_RUN, "--iters", "1", "--out", run,
                 *(typed or ["--optimizer", "sgd"])) == 0
    assert "with SGD (lr 0.02)" in capsys.readouterr().out
    if not typed:
        _forget_the_optimizer(run / "checkpoint.npz")
    assert _main("train", "--out", run, "--resume", "--iters", "2") == 0
    out = capsys.readouterr().out
    assert "changed since the checkpoint: iters: 1 -> 2" in out
    assert "with SGD (lr 0.02)" in out
    meta = read_meta(str(run / "checkpoint.npz"))
    assert (meta["train"]["optimizer"], meta["train"]["lr"]) == ("sgd", 0.02)


def test_optimizer_defaults_follow_the_data_and_the_options():
    from npmaskrcnn.commands.train import settings

    def run(*argv):
        s = settings(build_parser().parse_args(["train", *argv]))
        return s["optimizer"], s["lr"], s["weight_decay"]

    assert run() == ("sgd", 0.02, 1e-4)  # the shapes
    assert run("--data", "figures") == ("adamw", 0.002, 0.05)
    assert run("--data", "figures", "--optimizer", "sgd") == ("sgd", 0.02, 1e-4)
    assert run("--optimizer", "adamw") == ("adamw", 0.001, 0.05)
    assert run("--ann", "a.json", "--images", "i", "--lr", "0.5", "--weight-decay", "0") == (
        "sgd", 0.5, 0.0)
