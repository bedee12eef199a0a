"""Every way a newcomer got a traceback, a silent wrong result or lost data from the command
line (issue 17), run through ``main``: the exit status, a one-line message that names the
file and the problem, no traceback; where data could be lost, that nothing was overwritten.

Each case is ``(id, argv builder, exit status, words the message must contain)``; the
builder gets a :class:`World` (tiny data, one tiny trained run) and may prepare files. A
case's ``check`` (optional) runs afterwards, e.g. comparing file bytes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npmaskrcnn.cli import main
from npmaskrcnn.data.shapes import make_shapes_dataset, shapes_paths

TINY = ["--preset", "tiny", "--image-size", "64", "--warmup", "1", "--batch-size", "1"]


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``npmaskrcnn *argv``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class World:
    """Files a case starts from; ``tmp`` is the case's own folder."""

    root: Path
    tmp: Path
    files: dict = field(default_factory=dict)

    @property
    def run(self) -> Path:  # a finished tiny run: checkpoint, log, data
        return self.root / "run"

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoint.npz"

    @property
    def imported(self) -> Path:  # the run's checkpoint as import-weights writes it
        return self.root / "imported.npz"

    @property
    def ann(self) -> Path:  # a valid 2-image COCO file of generated shapes
        return shapes_paths(self.root / "coco", "train")[0]

    @property
    def images(self) -> Path:
        return shapes_paths(self.root / "coco", "train")[1]

    def coco(self, change=None, name="instances.json") -> Path:
        """A copy of the COCO file, changed by ``change(data)``, in the case's folder."""
        data = json.loads(self.ann.read_text())
        if change is not None:
            change(data)
        path = self.tmp / name
        path.write_text(json.dumps(data))
        return path

    def image_folder(self, bad_file_bytes=None) -> Path:
        """A copy of the image folder; the first image replaced by ``bad_file_bytes``."""
        folder = self.tmp / "images"
        shutil.copytree(self.images, folder)
        if bad_file_bytes is not None:
            (folder / "000001.png").write_bytes(bad_file_bytes)
        return folder

    def file(self, name, content: bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_shapes_dataset(root / "coco", 2, image_size=64, seed=1, max_objects=2)
    code = main(["train", *TINY, "--iters", "2", "--num-train", "2", "--num-val", "1",
                 "--no-eval", "--out", str(root / "run")])
    assert code == 0
    assert main(["import-weights", str(root / "run" / "checkpoint.npz"),
                 str(root / "imported.npz")]) == 0
    return root


@pytest.fixture
def world(root, tmp_path):
    return World(root, tmp_path)


def _del(key):
    return lambda data: data.pop(key)


def _set(section, index, **values):
    return lambda data: data[section][index].update(values)


def _rename_classes(data):
    for category in data["categories"]:
        category["name"] = "not " + category["name"]


def _truncated(w):
    text = w.ann.read_text()
    return w.file("truncated.json", text[: len(text) // 2].encode())


def _fresh_run(w, *extra):
    """argv of a tiny training run into the case's folder."""
    return ["train", *TINY, "--iters", "1", "--num-train", "1", "--num-val", "1", "--no-eval",
            "--out", w.tmp / "run", *extra]


def _main(*argv) -> int:
    return main([str(a) for a in argv])


def _coco_run(w, ann, images):
    assert _main("train", *TINY, "--iters", "1", "--no-eval", "--ann", ann, "--images", images,
                 "--out", w.tmp / "run") == 0


CASES = [
    # ---- arguments, refused by the parser (status 2) ------------------------------------
    ("iters -1", lambda w: ["train", "--iters", "-1"], 2, ["--iters", "at least 1, got -1"]),
    ("iters 0", lambda w: ["train", "--iters", "0"], 2, ["--iters", "at least 1, got 0"]),
    ("image-size 0", lambda w: ["train", "--image-size", "0"], 2, ["--image-size", "at least"]),
    ("batch-size 0", lambda w: ["train", "--batch-size", "0"], 2, ["--batch-size", "at least"]),
    ("checkpoint-every 0", lambda w: ["train", "--checkpoint-every", "0"], 2,
     ["--checkpoint-every", "at least 1"]),
    ("lr nan", lambda w: ["train", "--lr", "nan"], 2, ["--lr", "finite number > 0, got nan"]),
    ("lr negative", lambda w: ["train", "--lr", "-0.1"], 2, ["--lr", "> 0"]),
    ("iters not a number", lambda w: ["train", "--iters", "ten"], 2, ["--iters", "'ten'"]),
    ("num-images -3", lambda w: ["make-shapes", w.tmp / "s", "--num-images", "-3"], 2,
     ["--num-images", "at least 1, got -3"]),
    ("max-images -1", lambda w: ["coco-subset", w.ann, w.tmp / "o.json", "--max-images", "-1"],
     2, ["--max-images", "at least 1"]),
    ("categories without a value", lambda w: ["coco-subset", w.ann, w.tmp / "o.json",
                                              "--categories"], 2,
     ["--categories", "expected at least one argument"]),
    ("val-ann without val-images", lambda w: ["train", "--val-ann", w.ann], 2,
     ["--val-ann needs --val-images"]),
    ("ann without images", lambda w: ["train", "--ann", w.ann], 2, ["--ann needs --images"]),
    ("resume and overwrite", lambda w: ["train", "--resume", "--overwrite"], 2,
     ["--overwrite", "not allowed with argument --resume"]),
    ("score-thresh 2", lambda w: ["predict", w.checkpoint, "x.png", "--score-thresh", "2"], 2,
     ["--score-thresh", "<= 1"]),
    ("num-train with ann", lambda w: ["train", "--ann", w.ann, "--images", w.images,
                                      "--num-train", "5"], 2,
     ["--num-train is for generated data"]),
    ("data with ann", lambda w: ["train", "--ann", w.ann, "--images", w.images, "--data",
                                "figures"], 2, ["--data is for generated data"]),
    ("unknown data", lambda w: ["train", "--data", "cats"], 2,
     ["--data", "invalid choice: 'cats'"]),
    ("backend on a host-only command", lambda w: ["make-shapes", w.tmp, "--backend", "numpy"],
     2, ["unrecognized arguments: --backend"]),
    # ---- bad data files and records (status 1) ------------------------------------------
    ("train on truncated json", lambda w: ["train", "--ann", _truncated(w), "--images",
                                           w.images, "--out", w.tmp / "r"], 1,
     ["truncated.json", "not valid JSON"]),
    ("eval on truncated json", lambda w: ["eval", w.checkpoint, "--ann", _truncated(w),
                                          "--images", w.images], 1,
     ["truncated.json", "not valid JSON"]),
    ("subset of truncated json", lambda w: ["coco-subset", _truncated(w), w.tmp / "o.json"], 1,
     ["truncated.json", "not valid JSON"]),
    ("unknown image id", lambda w: ["train", "--ann", w.coco(_set("annotations", 0,
                                                                  image_id=99)),
                                    "--images", w.images, "--out", w.tmp / "r"], 1,
     ["instances.json", "annotation id 1", "points to image id 99"]),
    ("unknown category id", lambda w: ["eval", w.checkpoint, "--ann",
                                       w.coco(_set("annotations", 0, category_id=42)),
                                       "--images", w.images], 1,
     ["instances.json", "unknown category id 42"]),
    ("polygon with 2 points", lambda w: ["train", "--ann", w.coco(_set(
        "annotations", 0, segmentation=[[1, 1, 5, 1]])), "--images", w.images, "--out",
        w.tmp / "r"], 1, ["instances.json", "annotation id 1", "polygon with 2 points"]),
    ("missing image file", lambda w: ["eval", w.checkpoint, "--ann", w.ann, "--images",
                                      w.tmp], 1, ["image file(s) missing", "000001.png"]),
    ("undecodable image", lambda w: ["train", *TINY, "--iters", "1", "--ann", w.ann,
                                     "--images", w.image_folder(b"not a png"), "--out",
                                     w.tmp / "r"], 1,
     ["000001.png", "cannot decode image", "image id 1"]),
    ("ann does not exist", lambda w: ["train", "--ann", w.tmp / "nope.json", "--images",
                                      w.images, "--out", w.tmp / "r"], 1,
     ["nope.json", "No such file or directory"]),
    ("images folder does not exist", lambda w: ["eval", w.checkpoint, "--ann", w.ann,
                                                "--images", w.tmp / "nowhere"], 1,
     ["nowhere", "missing"]),
    ("train without annotations", lambda w: ["train", "--ann", w.coco(_del("annotations")),
                                             "--images", w.images, "--out", w.tmp / "r"], 1,
     ["instances.json", "no image with an annotation", "0 annotations"]),
    ("eval without annotations", lambda w: ["eval", w.checkpoint, "--ann",
                                            w.coco(_del("annotations")), "--images",
                                            w.images], 1,
     ["instances.json", "no annotations to evaluate against"]),
    ("subset without annotations", lambda w: ["coco-subset", w.coco(_del("annotations")),
                                              w.tmp / "o.json"], 1,
     ["instances.json", "no image has an annotation", "nothing written"]),
    ("unknown category name", lambda w: ["coco-subset", w.ann, w.tmp / "o.json",
                                         "--categories", "dog"], 1,
     ["instances_train.json", "unknown category 'dog'", "known"]),
    ("float image out of range", lambda w: ["predict", w.checkpoint, _float_tiff(w, 255.0),
                                            "--out", w.tmp / "p"], 1,
     ["float.tif", "float image with values in [0, 255]"]),
    ("predict a missing image", lambda w: ["predict", w.checkpoint, w.tmp / "gone.jpg",
                                           "--out", w.tmp / "p"], 1,
     ["gone.jpg", "image file not found"]),
    ("predict a text file", lambda w: ["predict", w.checkpoint, w.file("notes.png", b"hi"),
                                       "--out", w.tmp / "p"], 1,
     ["notes.png", "cannot decode image"]),
    # ---- bad checkpoints -----------------------------------------------------------------
    ("truncated checkpoint", lambda w: ["eval", w.file("c.npz", w.checkpoint.read_bytes()[:300]),
                                        "--ann", w.ann, "--images", w.images], 1,
     ["c.npz", "truncated or damaged checkpoint"]),
    ("empty checkpoint", lambda w: ["predict", w.file("c.npz", b""), w.images / "000001.png"], 1,
     ["c.npz", "empty file (0 bytes)"]),
    ("text file as checkpoint", lambda w: ["eval", w.file("c.npz", b"iteration 5\n"), "--ann",
                                           w.ann, "--images", w.images], 1,
     ["c.npz", "not a checkpoint", ".npz (zip) archive"]),
    ("missing checkpoint", lambda w: ["eval", w.tmp / "none.npz", "--ann", w.ann, "--images",
                                      w.images], 1, ["none.npz", "no such checkpoint file"]),
    ("eval with other classes", lambda w: ["eval", w.checkpoint, "--ann",
                                           w.coco(_rename_classes), "--images", w.images], 1,
     ["checkpoint.npz", "trained on the classes ['square', 'circle', 'triangle', 'ring']",
      "'not square'"]),
    # ---- runs: resume and overwrite ------------------------------------------------------
    ("resume without a checkpoint", lambda w: ["train", "--out", w.tmp / "new", "--resume"], 1,
     ["checkpoint.npz", "no checkpoint to resume"]),
    ("resume with another preset", lambda w: _copied_run(w, "--preset", "shapes"), 1,
     ["checkpoint.npz", "trained with another model configuration", "backbone.width: 4 -> 16"]),
    ("resume with other shapes data", lambda w: _copied_run(w, "--num-train", "3"), 1,
     ["instances_train.json", "num_images 2 (asked: 3)"]),
    ("resume with other classes of the same count", lambda w: _other_classes_resume(w), 1,
     ["checkpoint.npz", "trained on the classes ['square', 'circle', 'triangle', 'ring']",
      "but the data has ['not square'"]),
    ("train into a run", lambda w: _copied_run(w, resume=False), 1,
     ["holds a run already", "checkpoint.npz", "--resume", "--overwrite"]),
    ("train out is a file", lambda w: ["train", "--out", w.file("f", b"mine")], 1,
     ["f: is a file, but --out must be a folder"]),
    ("eval out is a file", lambda w: ["eval", w.checkpoint, "--ann", w.ann, "--images",
                                      w.images, "--out", w.file("f", b"mine")], 1,
     ["f: is a file"]),
    ("predict over earlier predictions", lambda w: _predicted_twice(w), 1,
     ["x.png: already exists", "--overwrite"]),
    ("make-shapes over a split", lambda w: ["make-shapes", w.root / "coco", "--num-images",
                                            "1"], 1,
     ["instances_train.json", "already there; not replaced", "--overwrite"]),
    ("make-figures over a split", lambda w: _figures_twice(w), 1,
     ["person_keypoints_train.json", "already there; not replaced", "--overwrite"]),
    # ---- keypoints (issue 13) ------------------------------------------------------------
    ("keypoint preset on data without keypoints", lambda w: [
        "train", *TINY, "--preset", "figures", "--ann", w.ann, "--images", w.images, "--out",
        w.tmp / "r"], 1,
     ["instances_train.json: has no keypoints", "the preset figures trains 17",
      "person keypoints file"]),
    ("keypoint preset on other keypoints", lambda w: [
        "train", *TINY, "--preset", "figures", "--ann", w.coco(_three_keypoints), "--images",
        w.images, "--out", w.tmp / "r"], 1,
     ["instances.json: has 3 keypoints per instance", "trains 17"]),
    ("bad keypoint record", lambda w: ["train", "--ann", w.coco(_short_keypoints), "--images",
                                       w.images, "--out", w.tmp / "r"], 1,
     ["instances.json: annotation id 1 (image 1): 48 keypoint values, expected 3 x 17"]),
    ("coco-subset over a file", lambda w: ["coco-subset", w.ann, w.file("o.json", b"mine")], 1,
     ["o.json: already exists; not replaced"]),
    ("image size too small for the model", lambda w: _fresh_run(w, "--image-size", "16"), 1,
     ["--image-size 16", "24-px images", "at least 32"]),
    # ---- weights files (issue 14) ------------------------------------------------------
    ("backbone-only without weights", lambda w: ["train", "--backbone-only"], 2,
     ["--backbone-only needs --weights"]),
    ("import a truncated file", lambda w: ["import-weights", w.file(
        "w.npz", w.imported.read_bytes()[:400]), w.tmp / "out.npz"], 1,
     ["w.npz", "truncated"]),
    ("import another architecture", lambda w: ["import-weights", _weights(w, {
        "rpn.head.conv.1.0.weight": np.zeros(1, np.float32),
        "roi_heads.box_head.0.0.weight": np.zeros(1, np.float32)}), w.tmp / "out.npz"], 1,
     ["v2.npz", "maskrcnn_resnet50_fpn_v2", "nothing loaded"]),
    ("import an unknown layout", lambda w: ["import-weights", _weights(w, {
        "encoder.weight": np.zeros(1, np.float32)}), w.tmp / "out.npz"], 1,
     ["v2.npz: encoder.weight", "not a layout npmaskrcnn knows"]),
    ("import a file missing a key", lambda w: ["import-weights", _changed_weights(
        w, lambda a: a.pop("model/roi_heads.box_head.fc7.bias")), w.tmp / "out.npz"], 1,
     ["changed.npz: roi_heads.box_head.fc7.bias", "missing from the file"]),
    ("import a shape mismatch", lambda w: ["import-weights", _changed_weights(
        w, lambda a: a.update({"model/roi_heads.box_head.fc7.bias": np.zeros(3, np.float32)})),
        w.tmp / "out.npz"], 1,
     ["changed.npz: roi_heads.box_head.fc7.bias", "shape mismatch", "(3,)", "(32,)"]),
    ("import over an existing file", lambda w: ["import-weights", w.imported,
                                                w.file("out.npz", b"mine")], 1,
     ["out.npz: already exists; not replaced", "--overwrite"]),
    ("import a missing file", lambda w: ["import-weights", w.tmp / "none.pth",
                                         w.tmp / "out.npz"], 1, ["none.pth: no such"]),
    ("train from a truncated weights file", lambda w: _fresh_run(
        w, "--weights", w.file("w.npz", w.imported.read_bytes()[:400])), 1,
     ["w.npz", "truncated"]),
    ("train from the weights of another model", lambda w: _fresh_run(
        w, "--weights", w.imported, "--preset", "shapes"), 1,
     ["imported.npz: backbone.body.conv1.weight", "shape mismatch", "(4, 3, 7, 7)",
      "(16, 3, 7, 7)"]),
    ("predict with a backbone-only file", lambda w: ["predict", _backbone_file(w),
                                                     w.images / "000001.png"], 1,
     ["backbone.npz", "holds a backbone only", "train --weights"]),
    ("nan loss before the first checkpoint", lambda w: _fresh_run(
        w, "--lr", "1e30", "--clip-grad-norm", "0", "--warmup", "0", "--iters", "3"), 1,
     ["loss is nan", "No checkpoint was written yet", "start again with --overwrite"]),
]


def _figures_twice(w):
    assert _main("make-figures", w.tmp / "f", "--num-images", "1", "--image-size", "48") == 0
    return ["make-figures", w.tmp / "f", "--num-images", "1"]


def _short_keypoints(data):
    """COCO's 17 person keypoints declared, 16 given to the first annotation."""
    from npmaskrcnn.data.keypoints import KEYPOINT_NAMES

    data["categories"][0]["keypoints"] = list(KEYPOINT_NAMES)
    data["annotations"][0]["keypoints"] = [1, 2, 2] * 16


def _three_keypoints(data):
    data["categories"][0]["keypoints"] = ["a", "b", "c"]
    data["annotations"][0]["keypoints"] = [1, 1, 2, 2, 2, 2, 3, 3, 2]


def _weights(w, arrays, name="v2.npz"):
    path = w.tmp / name
    np.savez(path, **arrays)
    return path


def _changed_weights(w, change):
    """A copy of the imported tiny model's file, changed by ``change(arrays)``."""
    with np.load(w.imported) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    return _weights(w, arrays, "changed.npz")


def _backbone_file(w):
    """An imported backbone (as import-weights writes one from an ImageNet ResNet)."""
    with np.load(w.imported) as z:
        arrays = {k: z[k] for k in z.files if k.startswith("model/backbone.body.")}
    meta = {"weights": {"source": "resnet.pth", "kind": "ResNet classifier",
                        "container": "torch .pth", "scope": "backbone"}}
    arrays["meta"] = np.array(json.dumps(meta))
    return _weights(w, arrays, "backbone.npz")


def _float_tiff(w, top):
    """An 8x8 float image with values from 0 to ``top``."""
    path = w.tmp / "float.tif"
    Image.fromarray(np.linspace(0, top, 64, dtype=np.float32).reshape(8, 8), mode="F").save(path)
    return path


def _copied_run(w, *extra, resume=True):
    shutil.copytree(w.run, w.tmp / "run")
    return ["train", "--out", w.tmp / "run", *(["--resume"] if resume else []), *extra]


def _other_classes_resume(w):
    _coco_run(w, w.ann, w.images)
    return ["train", "--ann", w.coco(_rename_classes, "renamed.json"), "--images", w.images,
            "--out", w.tmp / "run", "--resume"]


def _predicted_twice(w):
    photo = w.tmp / "x.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(photo)
    assert _main("predict", w.checkpoint, photo, "--out", w.tmp / "p") == 0
    return ["predict", w.checkpoint, photo, "--out", w.tmp / "p"]


def _snapshot(folder: Path) -> dict:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_expected_failures_are_one_clear_line(case, world, capsys):
    name, build, status, words = case
    argv = build(world)
    capsys.readouterr()  # what the setup printed
    before = {**_snapshot(world.tmp), **_snapshot(world.root)}
    code, out, err = run(argv, capsys)
    assert code == status, (name, out, err)
    assert "Traceback" not in err + out
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    after = err.splitlines()[err.splitlines().index(errors[0]) + 1:]
    assert len(after) <= 1, err  # at most one line of what to do
    command = argv[0] if argv[0] in ("train", "eval", "predict", "make-shapes", "make-figures",
                                     "coco-subset", "import-weights") else ""
    assert errors[0].startswith(f"npmaskrcnn {command}: error: ".replace("  ", " ")) or \
        errors[0].startswith("npmaskrcnn: error: ")
    for word in words:
        assert word in errors[0] + " ".join(after), (word, err)
    if status == 1 and name not in ("nan loss before the first checkpoint",):
        # refused before writing anything: every file of the case is as it was
        now = {**_snapshot(world.tmp), **_snapshot(world.root)}
        assert {k: v for k, v in now.items() if k in before} == before, name
        assert sorted(set(now) - set(before)) == [], name  # and nothing new was written


def test_a_refused_run_directory_keeps_its_checkpoint_and_log(world, capsys):
    argv = _copied_run(world, resume=False)
    before = _snapshot(world.tmp / "run")
    code, _, err = run(argv, capsys)
    assert code == 1 and _snapshot(world.tmp / "run") == before
    # --overwrite removes the old run only once every check has passed
    code, _, err = run(argv + ["--overwrite", "--image-size", "16"], capsys)
    assert code == 1 and "at least 32" in err and _snapshot(world.tmp / "run") == before
    code, out, _ = run(argv + ["--overwrite", *TINY, "--iters", "1", "--num-train", "2",
                               "--num-val", "1", "--no-eval"], capsys)
    assert code == 0 and "--overwrite: removed the run's" in out
    assert json.loads((world.tmp / "run" / "log.jsonl").read_text().splitlines()[0])["iter"] == 0


def test_predict_never_loses_an_input_or_an_output(world, capsys):
    for folder in ("a", "b", "photos"):
        (world.tmp / folder).mkdir()
    rng = np.random.default_rng(0)
    for path in ("a/x.png", "b/x.png", "photos/cat.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(world.tmp / path)
    cat = (world.tmp / "photos" / "cat.png").read_bytes()
    code, out, _ = run(["predict", world.checkpoint, world.tmp / "a/x.png",
                        world.tmp / "b/x.png", "--out", world.tmp / "p",
                        "--score-thresh", "0"], capsys)
    assert code == 0 and "wrote 2 drawings" in out
    assert sorted(p.name for p in (world.tmp / "p").iterdir()) == ["detections.json", "x-2.png",
                                                                   "x.png"]
    listed = json.loads((world.tmp / "p" / "detections.json").read_text())
    assert [Path(r["drawing"]).name for r in listed] == ["x.png", "x-2.png"]
    code, _, _ = run(["predict", world.checkpoint, world.tmp / "photos/cat.png", "--out",
                      world.tmp / "photos"], capsys)
    assert code == 0 and (world.tmp / "photos" / "cat.png").read_bytes() == cat
    assert (world.tmp / "photos" / "cat-2.png").stat().st_size > 0


def test_degenerate_and_deep_images_are_predicted(world, capsys):
    strip = world.tmp / "strip.png"  # 1 pixel wide: the resize alone would make it 0 wide
    Image.fromarray(np.full((200, 1, 3), 128, np.uint8)).save(strip)
    dot = world.tmp / "dot.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(dot)
    deep = world.tmp / "deep.png"  # 16-bit grey, mid-grey: read as 0.5, not as white
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(deep)
    unit = _float_tiff(world, 0.5)  # float in [0, 1]: read as is, not as black
    code, out, err = run(["predict", world.checkpoint, strip, dot, deep, unit, "--out",
                          world.tmp / "p", "--score-thresh", "0"], capsys)
    assert code == 0, err
    assert "Traceback" not in err and "wrote 4 drawings" in out
    records = json.loads((world.tmp / "p" / "detections.json").read_text())
    assert [(r["height"], r["width"]) for r in records] == [(200, 1), (1, 1), (40, 40), (8, 8)]
    for r in records:
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]


def test_resume_takes_the_run_options_and_logs_what_changed(world, capsys):
    argv = _copied_run(world, "--iters", "3", "--lr", "0.01")
    (world.tmp / "run" / ".tmp-k1ll3d.npz").write_bytes(b"PK half")  # killed mid-save
    with open(world.tmp / "run" / "log.jsonl", "a") as f:
        f.write('{"iter": 2, "lr"')  # killed mid-write
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "resuming" in out and "at iteration 2 of 3" in out
    assert "changed since the checkpoint: iters: 2 -> 3, lr: 0.02 -> 0.01" in out
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    assert any("removed 1 temporary checkpoint file(s)" in w for w in warnings)
    assert any("dropped 1 line(s) that are not JSON" in w for w in warnings)
    assert not (world.tmp / "run" / ".tmp-k1ll3d.npz").exists()


def test_generated_data_of_other_settings_is_made_again_for_a_new_run(world, capsys):
    shutil.copytree(world.run, world.tmp / "run")
    code, out, err = run(["train", *TINY, "--iters", "1", "--num-train", "3", "--num-val", "1",
                          "--no-eval", "--out", world.tmp / "run", "--overwrite"], capsys)
    assert code == 0, err
    assert "generating 3 images of train shapes" in out and "num_images 2 (asked: 3)" in out
    data = json.loads(shapes_paths(world.tmp / "run" / "data", "train")[0].read_text())
    assert len(data["images"]) == 3


def test_a_bug_still_shows_its_traceback_and_debug_shows_any(world, capsys, monkeypatch):
    import npmaskrcnn.cli as cli

    def broken(a):
        raise ZeroDivisionError("a genuine bug")

    monkeypatch.setitem(cli.COMMANDS, "make-shapes", broken)
    with pytest.raises(ZeroDivisionError):
        main(["make-shapes", str(world.tmp / "s")])
    with pytest.raises(FileNotFoundError):  # an expected error, but --debug was given
        main(["train", "--ann", str(world.tmp / "nope.json"), "--images", str(world.tmp),
              "--out", str(world.tmp / "r"), "--debug"])


def test_ctrl_c_says_the_checkpoint_is_intact(root, tmp_path):
    """A real SIGINT to a real process: one line, status 130, the checkpoint named."""
    out = tmp_path / "run"
    shutil.copytree(root / "run" / "data", out / "data")  # no data generation in the way
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "npmaskrcnn.cli", "train", *TINY, "--iters", "100000",
         "--num-train", "2", "--num-val", "1", "--checkpoint-every", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("npmaskrcnn train: interrupted; the last checkpoint, ")
    assert str(out / "checkpoint.npz") in last and "is intact: add --resume" in last
