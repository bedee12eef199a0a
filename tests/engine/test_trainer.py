import json
import math
import os
import re
import stat
from dataclasses import replace

import numpy as np
import pytest

from npmaskrcnn.config import tiny
from npmaskrcnn.data.coco import CocoDataset
from npmaskrcnn.data.shapes import make_shapes_dataset, shapes_paths
from npmaskrcnn.engine.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    config_differences,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from npmaskrcnn.engine.trainer import (
    ResumeWarning,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    lr_at,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, 4, image_size=64, seed=3, max_objects=2)
    ann, images = shapes_paths(root, "train")
    return CocoDataset(ann, images)


class Crash(Exception):
    pass


class CrashingDataset:
    """Raises (like a kill) on the n-th item fetched: a crash mid-run."""

    def __init__(self, base, crash_after):
        self.base, self.left = base, crash_after

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.left -= 1
        if self.left < 0:
            raise Crash("killed")
        return self.base[i]


def _cfg(**kw):
    return TrainConfig(iters=6, batch_size=2, lr=0.01, warmup_iters=2, checkpoint_every=3,
                       log_every=1, **kw)


@pytest.mark.parametrize("scales, optimizer", [(64, "sgd"), ((40, 48, 56, 64), "sgd"),
                                               (64, "adamw")])
def test_kill_and_resume_gives_identical_parameters(shapes_set, tmp_path, scales, optimizer):
    """Also with a training scale drawn per image (keypoint_r50_fpn's 640..800): the
    transform's generator is in the checkpoint too; and with AdamW, whose moments and step
    count (bias correction) are."""
    def model():
        cfg = tiny(num_classes=shapes_set.num_classes)
        cfg.transform.min_size = scales
        return MaskRCNN(cfg)

    full = model()
    Trainer(full, shapes_set, _cfg(optimizer=optimizer), str(tmp_path / "full"),
            progress=False).train()

    run = tmp_path / "resumed"
    first = model()
    # checkpoint at iteration 3, then killed while loading the batch of iteration 4
    crashing = CrashingDataset(shapes_set, crash_after=2 * 4 + 1)
    with pytest.raises(Crash):
        Trainer(first, crashing, _cfg(optimizer=optimizer), str(run), progress=False).train()
    second = model()  # a fresh process
    trainer = Trainer(second, shapes_set, _cfg(optimizer=optimizer), str(run), progress=False)
    assert trainer.resume() == 3
    trainer.train(resume=True)
    for name, p in full.parameters().items():
        np.testing.assert_array_equal(p, second.parameters()[name], err_msg=name)
    iters = [json.loads(line)["iter"] for line in open(run / "log.jsonl")]
    assert iters == list(range(6))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shapes_set, tmp_path):
    model = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    trainer = Trainer(model, shapes_set, _cfg(), str(tmp_path), progress=False)
    trainer.train(stop_at=3)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    model.roi_heads.box_predictor.cls_score.params["weight"][...] = np.nan
    with pytest.raises(TrainingDiverged, match=r"iteration 3: loss is nan"):
        trainer.train(resume=False)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_lr_schedule_warmup_then_steps():
    cfg = TrainConfig(lr=0.1, warmup_iters=10, warmup_factor=0.0, steps=(20, 30))
    assert lr_at(cfg, 0) == 0.0
    assert math.isclose(lr_at(cfg, 5), 0.05)
    assert lr_at(cfg, 10) == 0.1
    assert math.isclose(lr_at(cfg, 25), 0.01)
    assert math.isclose(lr_at(cfg, 30), 0.001)


def test_checkpoint_is_atomic_and_checked(tmp_path):
    model = MaskRCNN(tiny())
    path = tmp_path / "c.npz"
    save_checkpoint(str(path), model, meta={"iteration": 7})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    other = MaskRCNN(tiny())
    other.backbone.body.conv1.params["weight"][...] = 0
    assert load_checkpoint(str(path), other)["iteration"] == 7
    np.testing.assert_array_equal(other.backbone.body.conv1.params["weight"],
                                  model.backbone.body.conv1.params["weight"])
    path.write_bytes(path.read_bytes()[:100])  # truncated by a crash of some other program
    with pytest.raises(ValueError, match="c.npz: truncated or damaged checkpoint"):
        load_checkpoint(str(path), other)


def test_checkpoint_is_written_with_the_mode_of_any_new_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(str(tmp_path / "c.npz"), MaskRCNN(tiny()))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.npz").stat().st_mode) == 0o644  # mkstemp's is 0600


@pytest.mark.parametrize("content, problem", [
    (None, "no such checkpoint file"),
    (b"", r"empty file \(0 bytes\)"),
    (b"iteration 7\n", r"not a checkpoint: .* starts with b'iter'"),  # no allow_pickle advice
    ("no-meta", r"not an npmaskrcnn checkpoint \(a zip archive without the 'meta' entry\)"),
])
def test_unreadable_checkpoints_say_why(tmp_path, content, problem):
    path = tmp_path / "c.npz"
    if content == "no-meta":
        np.savez(path, weights=np.zeros(3))
    elif content is not None:
        path.write_bytes(content)
    for read in (lambda: read_meta(str(path)), lambda: load_checkpoint(str(path), None)):
        with pytest.raises(CheckpointError, match=f"c.npz: {problem}") as info:
            read()
        assert "allow_pickle" not in str(info.value)


def test_weights_of_another_model_are_named_a_mismatch(tmp_path):
    save_checkpoint(str(tmp_path / "c.npz"), MaskRCNN(tiny(num_classes=3)))
    with pytest.raises(CheckpointMismatch, match=r"c.npz: its weights do not fit this model: "
                                                  r".*shape mismatch"):
        load_checkpoint(str(tmp_path / "c.npz"), MaskRCNN(tiny(num_classes=4)))


def test_config_differences_names_nested_fields():
    a = {"lr": 0.02, "steps": [8, 9], "head": {"width": 16, "norm": "gn"}}
    b = {"lr": 0.01, "steps": (8, 9), "head": {"width": 16, "norm": "bn"}, "new": 1}
    assert config_differences(a, b) == ["lr: 0.02 -> 0.01", "head.norm: gn -> bn",
                                        "new: (absent) -> 1"]
    assert config_differences(a, a) == []


def _stopped_run(shapes_set, run, at=3, **meta):
    model = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    trainer = Trainer(model, shapes_set, _cfg(), str(run), progress=False,
                      extra_meta={"class_names": shapes_set.class_names, **meta})
    trainer.train(stop_at=at)
    return trainer


def test_resume_refuses_another_model_or_other_classes(shapes_set, tmp_path):
    _stopped_run(shapes_set, tmp_path)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    cfg = tiny(num_classes=shapes_set.num_classes)
    cfg.transform = replace(cfg.transform, min_size=96, max_size=96)
    other = Trainer(MaskRCNN(cfg), shapes_set, _cfg(), str(tmp_path), progress=False,
                    extra_meta={"class_names": shapes_set.class_names})
    with pytest.raises(CheckpointMismatch, match=r"checkpoint.npz: trained with another model "
                       r"configuration \(transform.min_size: 64 -> 96; "
                       r"transform.max_size: 64 -> 96\)"):
        other.train(resume=True)
    renamed = ["__background__"] + [f"not {n}" for n in shapes_set.class_names[1:]]
    relabel = Trainer(MaskRCNN(tiny(num_classes=shapes_set.num_classes)), shapes_set, _cfg(),
                      str(tmp_path), progress=False, extra_meta={"class_names": renamed})
    names = shapes_set.class_names[1:]
    with pytest.raises(CheckpointMismatch, match=re.escape(
            f"trained on the classes {names}, but the data has {renamed[1:]}")):
        relabel.resume()
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_resume_with_new_training_settings_lists_and_keeps_them(shapes_set, tmp_path):
    _stopped_run(shapes_set, tmp_path)
    model = MaskRCNN(tiny(num_classes=shapes_set.num_classes, ))
    model.cfg.seed = 5  # only draws initial weights: may differ on resume
    trainer = Trainer(model, shapes_set, replace(_cfg(), lr=0.005, iters=7), str(tmp_path),
                      progress=False, extra_meta={"class_names": shapes_set.class_names})
    trainer.train(resume=True)
    assert trainer.changed_settings == ["seed: 0 -> 5", "iters: 6 -> 7", "lr: 0.01 -> 0.005"]
    meta = read_meta(str(tmp_path / "checkpoint.npz"))
    assert meta["iteration"] == 7 and meta["train"]["lr"] == 0.005
    assert meta["resumes"] == [{"iteration": 3, "changed": trainer.changed_settings}]


def test_crash_leftovers_are_cleaned_up_on_resume(shapes_set, tmp_path):
    _stopped_run(shapes_set, tmp_path)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"iter": 3, "lr": 0.0')  # killed mid-write
    (tmp_path / ".tmp-k1ll3d.npz").write_bytes(b"PK half a checkpoint")  # killed mid-save
    trainer = Trainer(MaskRCNN(tiny(num_classes=shapes_set.num_classes)), shapes_set, _cfg(),
                      str(tmp_path), progress=False)
    with pytest.warns(ResumeWarning) as caught:
        trainer.train(resume=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert "removed 1 temporary checkpoint file(s)" in messages and ".tmp-k1ll3d.npz" in messages
    assert "log.jsonl: dropped 1 line(s) that are not JSON" in messages
    assert not (tmp_path / ".tmp-k1ll3d.npz").exists()
    iters = [json.loads(line)["iter"] for line in open(tmp_path / "log.jsonl")]
    assert iters == list(range(6))


def test_nan_before_the_first_checkpoint_names_no_file(shapes_set, tmp_path):
    model = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    model.roi_heads.box_predictor.cls_score.params["weight"][...] = np.nan
    trainer = Trainer(model, shapes_set, _cfg(), str(tmp_path), progress=False)
    with pytest.raises(TrainingDiverged, match=r"iteration 0: loss is nan .* No checkpoint was "
                                               r"written yet \(one every 3 iterations\)"):
        trainer.train()
    assert not (tmp_path / "checkpoint.npz").exists()


def test_progress_without_a_terminal_is_plain_lines(shapes_set, tmp_path, capsys):
    model = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    Trainer(model, shapes_set, replace(_cfg(), iters=4), str(tmp_path), progress=True).train()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split()[:2] for line in lines] == [["train", f"{i}/4"] for i in (1, 2, 3, 4)]
    assert re.search(r"  loss [\d.]+ .* lr 0.01  [\d.]+ (s/it|it/s)  elapsed 0:\d\d$", lines[-1])
