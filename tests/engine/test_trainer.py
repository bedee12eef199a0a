import json
import math

import numpy as np
import pytest

from npmaskrcnn.config import tiny
from npmaskrcnn.data.coco import CocoDataset
from npmaskrcnn.data.shapes import make_shapes_dataset, shapes_paths
from npmaskrcnn.engine.checkpoint import load_checkpoint, save_checkpoint
from npmaskrcnn.engine.trainer import TrainConfig, Trainer, TrainingDiverged, lr_at
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


def test_kill_and_resume_gives_identical_parameters(shapes_set, tmp_path):
    full = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    Trainer(full, shapes_set, _cfg(), str(tmp_path / "full"), progress=False).train()

    run = tmp_path / "resumed"
    first = MaskRCNN(tiny(num_classes=shapes_set.num_classes))
    # checkpoint at iteration 3, then killed while loading the batch of iteration 4
    crashing = CrashingDataset(shapes_set, crash_after=2 * 4 + 1)
    with pytest.raises(Crash):
        Trainer(first, crashing, _cfg(), str(run), progress=False).train()
    second = MaskRCNN(tiny(num_classes=shapes_set.num_classes))  # a fresh process
    trainer = Trainer(second, shapes_set, _cfg(), str(run), progress=False)
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
    with pytest.raises(ValueError, match="c.npz: not a readable checkpoint"):
        load_checkpoint(str(path), other)
