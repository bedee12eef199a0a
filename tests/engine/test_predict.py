"""Prediction on image files: unique output names, padding of degenerate images, masks pasted
one at a time that equal the all-at-once paste."""

from pathlib import Path

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy, to_backend
from npmaskrcnn.config import tiny
from npmaskrcnn.engine.predict import (
    MIN_RESIZED_SIDE,
    detection_records,
    drawing_paths,
    padded_size,
    predict_image,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN
from npmaskrcnn.model.transform import resized_image_size


def test_drawing_paths_are_unique_and_never_an_input(tmp_path):
    inputs = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "out" / "y.png",
              tmp_path / "c" / "X.jpg"]
    names = [p.name for p in drawing_paths(inputs, tmp_path / "out")]
    # x twice (and X, the same file where case is ignored); y.png is the input itself
    assert names == ["x.png", "x-2.png", "y-2.png", "X-3.png"]
    assert drawing_paths([Path("z.tif")], Path("o")) == [Path("o/z.png")]


@pytest.mark.parametrize("size", [(200, 1), (1, 500), (1, 1), (64, 64), (3000, 4000)])
def test_padded_size_gives_the_model_a_usable_image(size):
    h, w = padded_size(*size, 96, 96)
    assert h >= size[0] and w >= size[1]
    assert min(resized_image_size(h, w, 96, 96)) >= MIN_RESIZED_SIDE
    if min(resized_image_size(*size, 96, 96)) >= MIN_RESIZED_SIDE:
        assert (h, w) == size  # only degenerate images are padded
    assert padded_size(200, 1, 96, 96)[0] == 200  # only the short side grows


@pytest.fixture(scope="module")
def model():
    cfg = tiny(num_classes=3)
    cfg.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection
    return MaskRCNN(cfg).eval()


def test_pasted_masks_equal_the_full_paste(model, xp):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(3, 48, 80)).astype(np.float32)
    m = MaskRCNN(model.cfg)  # built on the test's backend (numpy or cpupy)
    m.load_state_dict({k: to_backend(v) for k, v in model.state_dict().items()})
    full = m.predict([to_backend(image)])[0]
    pred = predict_image(m.eval(), image)
    assert len(pred["scores"]) == len(full["scores"]) > 0
    np.testing.assert_allclose(pred["boxes"], asnumpy(full["boxes"]), rtol=1e-6)
    for d in range(len(pred["scores"])):
        mask = pred["masks"][d]
        assert type(mask) is np.ndarray and mask.dtype == bool and mask.shape == (48, 80)
        np.testing.assert_array_equal(mask, asnumpy(full["masks"][d] > 0.5))
        assert pred["masks"].area(d) == int(mask.sum())
    records = detection_records(pred, ["__background__", "a", "b"])
    assert [r["mask_area"] for r in records] == [int(asnumpy(full["masks"][d] > 0.5).sum())
                                                 for d in range(len(records))]
    assert {r["label"] for r in records} <= {"a", "b"}
    with pytest.raises(IndexError):
        pred["masks"][len(pred["scores"])]


class StripModel:
    """Stands in for MaskRCNN on a 300x1 strip: records the image it gets and returns three
    detections on it: inside the strip, across its edge, and in the padding only."""

    def __init__(self):
        self.cfg = tiny()  # min_size = max_size = 64
        self.seen = None

    def predict(self, images, paste_masks=True):
        assert not paste_masks
        self.seen = images[0].shape
        boxes = np.array([[0, 10, 1, 50], [0, 100, 9, 200], [5, 0, 20, 30]], np.float32)
        return [{"boxes": boxes, "labels": np.array([1, 2, 1]),
                 "scores": np.array([0.9, 0.8, 0.7], np.float32),
                 "masks": np.ones((3, 1, 28, 28), np.float32)}]


def test_a_degenerate_image_is_padded_and_its_detections_clipped():
    fake = StripModel()
    pred = predict_image(fake, np.full((3, 300, 1), 0.5, np.float32))
    assert fake.seen[1] == 300 and fake.seen[2] > 1  # padded on the right only
    assert min(resized_image_size(*fake.seen[1:], 64, 64)) >= MIN_RESIZED_SIDE
    np.testing.assert_array_equal(pred["boxes"], [[0, 10, 1, 50], [0, 100, 1, 200]])
    np.testing.assert_array_equal(pred["labels"], [1, 2])  # the padding's detection is gone
    assert pred["masks"][1].shape == (300, 1) and pred["masks"][1][100:200].all()


def test_score_threshold_keeps_the_best(model):
    image = np.random.default_rng(1).uniform(size=(3, 64, 64)).astype(np.float32)
    every = predict_image(model, image, score_thresh=0.0)
    cut = float(np.median(every["scores"]))
    kept = predict_image(model, image, score_thresh=cut)
    assert len(kept["scores"]) == int((every["scores"] >= cut).sum())
    assert len(kept["masks"]) == len(kept["scores"])
