"""The command line, end to end on tiny data (a few iterations of the tiny preset)."""

import json

import pytest

from npmaskrcnn.cli import build_parser, main


def test_help_explains_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("make-shapes", "coco-subset", "train", "eval", "predict", "ablate"):
        assert cmd in out
    for cmd in ("make-shapes", "coco-subset", "train", "eval", "predict"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "usage: npmaskrcnn " + cmd in capsys.readouterr().out


def test_unknown_backend_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--backend", "tpu"])


def test_train_eval_predict_on_tiny_shapes(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--preset", "tiny", "--image-size", "64", "--iters", "3", "--warmup", "1",
          "--batch-size", "2", "--num-train", "4", "--num-val", "2", "--out", str(run),
          "--checkpoint-every", "2"])
    out = capsys.readouterr().out
    assert "Average Precision" in out or "AP" in out
    assert (run / "checkpoint.npz").exists() and (run / "log.jsonl").exists()
    assert (run / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "examples").iterdir())[0] == "example_0.png"
    val_ann = run / "data" / "annotations" / "instances_val.json"
    main(["eval", str(run / "checkpoint.npz"), "--ann", str(val_ann),
          "--images", str(run / "data" / "val"), "--out", str(tmp_path / "ev")])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"}
    image = next((run / "data" / "val").iterdir())
    main(["predict", str(run / "checkpoint.npz"), str(image), "--out", str(tmp_path / "pred"),
          "--score-thresh", "0.0"])
    dets = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert dets[0]["image"] == str(image)
    assert (tmp_path / "pred" / f"{image.stem}.png").exists()


def test_predict_names_an_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    run = tmp_path / "run"
    main(["train", "--preset", "tiny", "--image-size", "64", "--iters", "1", "--warmup", "1",
          "--num-train", "2", "--num-val", "1", "--out", str(run), "--no-eval"])
    with pytest.raises(SystemExit, match="broken.png"):
        main(["predict", str(run / "checkpoint.npz"), str(bad), "--out", str(tmp_path / "p")])


def test_shapes_are_seen_at_one_and_a_half_times_their_size(tmp_path):
    from npmaskrcnn.cli import load_model

    sizes = {}
    for name, extra in (("default", []), ("explicit", ["--input-size", "80"])):
        run = tmp_path / name
        main(["train", "--preset", "tiny", "--image-size", "64", "--iters", "1", "--warmup",
              "1", "--num-train", "1", "--num-val", "1", "--out", str(run), "--no-eval",
              *extra])
        t = load_model(str(run / "checkpoint.npz"))[0].cfg.transform
        sizes[name] = (t.min_size, t.max_size)
    assert sizes == {"default": (96, 96), "explicit": (80, 80)}


def test_eval_refuses_a_checkpoint_of_other_classes(tmp_path):
    run = tmp_path / "run"
    main(["train", "--preset", "tiny", "--image-size", "64", "--iters", "1", "--warmup", "1",
          "--num-train", "2", "--num-val", "1", "--out", str(run), "--no-eval"])
    from npmaskrcnn.data.shapes import make_shapes_dataset, shapes_paths

    make_shapes_dataset(tmp_path / "other", 2, image_size=64, classes=("square", "cross"))
    ann, images = shapes_paths(tmp_path / "other", "train")
    with pytest.raises(SystemExit, match="trained on"):
        main(["eval", str(run / "checkpoint.npz"), "--ann", str(ann), "--images", str(images)])
