"""Issue 14's "done when" through the command line: a torchvision model's weights, imported
with ``npmaskrcnn import-weights``, give torchvision's detections with ``npmaskrcnn predict``
(skipped without PyTorch/torchvision; the float64 comparison of the same path at the library
level is in ``tests/engine/test_weights.py``)."""

import json
from pathlib import Path

import numpy as np
import pytest

from npmaskrcnn.cli import main

COCO_MINI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_mini"
IMAGE = "000000005802.jpg"


def _main(*argv) -> int:
    return main([str(a) for a in argv])


def _in_torchvisions_order(got: list[dict], want_boxes) -> list[dict]:
    """Our detections paired one to one with torchvision's by the nearest box, in its order.

    Both sides sort by score, and float32 sums in another order can swap two detections
    whose scores differ in the sixth digit (random weights give many such near-ties: on a
    2-core AMD EPYC, 0.447046 / 0.447040 here against 0.447042 / 0.447038 there). Only
    such swaps are allowed: the pairing must be one to one, and a detection that changes
    place must have the score of the one it changes place with, to float32 tolerance.
    """
    boxes = np.array([d["box"] for d in got])
    order = np.array([int(np.abs(boxes - b).max(axis=1).argmin()) for b in want_boxes])
    assert sorted(order.tolist()) == list(range(len(got))), "boxes do not pair one to one"
    scores = np.array([d["score"] for d in got])
    moved = np.nonzero(order != np.arange(len(order)))[0]
    print(f"{len(moved)} of {len(got)} detections in another place (near-equal scores)")
    np.testing.assert_allclose(scores[order[moved]], scores[moved], rtol=1e-4)
    return [got[j] for j in order]


def test_imported_torchvision_maskrcnn_predicts_what_torchvision_predicts(tmp_path, capsys):
    """A randomly initialised ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``
    saved with ``torch.save(model.state_dict())``, imported and run by ``predict``: the
    detections JSON holds torchvision's labels, scores, boxes and mask areas (float32 on
    both sides, so to float32 tolerance). Two class biases are raised so that random
    weights give confident detections (at random, every class scores about 1/91 < 0.05)."""
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    from PIL import Image

    image_path = COCO_MINI / "images" / IMAGE
    if not image_path.is_file():
        pytest.skip("shared coco_mini data not present")
    torch.manual_seed(0)
    tv = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    with torch.no_grad():  # person (1) and dog (18) above the 0.05 score threshold
        tv.roi_heads.box_predictor.cls_score.bias[1] = 6.0
        tv.roi_heads.box_predictor.cls_score.bias[18] = 5.0
    torch.save(tv.state_dict(), tmp_path / "maskrcnn.pth")

    assert _main("import-weights", tmp_path / "maskrcnn.pth", tmp_path / "maskrcnn.npz") == 0
    assert "mapped   307 arrays" in capsys.readouterr().out
    assert _main("predict", tmp_path / "maskrcnn.npz", image_path, "--out", tmp_path / "p",
                 "--score-thresh", "0.3") == 0
    got = json.loads((tmp_path / "p" / "detections.json").read_text())[0]["detections"]

    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255
    with torch.no_grad():
        want = tv([torch.from_numpy(image)])[0]
    keep = want["scores"] >= 0.3
    want = {k: v[keep].numpy() for k, v in want.items()}
    assert len(got) == len(want["labels"]) > 10
    got = _in_torchvisions_order(got, want["boxes"])
    assert [d["label"] for d in got] == [str(int(k)) for k in want["labels"]]
    np.testing.assert_allclose([d["score"] for d in got], want["scores"], rtol=1e-4)
    np.testing.assert_allclose([d["box"] for d in got], want["boxes"], rtol=1e-4, atol=1e-2)
    areas = (want["masks"][:, 0] > 0.5).sum(axis=(1, 2))
    np.testing.assert_allclose([d["mask_area"] for d in got], areas, rtol=2e-3, atol=2)
