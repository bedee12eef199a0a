"""COCO evaluation: result records, RLE, category mapping, and COCOeval on known answers.

A tiny COCO file is written in tmp_path: two images, two categories with non-contiguous ids
(3 "box" -> label 1, 7 "bar" -> label 2), rectangle polygons. Perfect predictions built from
its ground truth must score AP 1; boxes shifted by a fifth of their width (IoU 2/3 with their
GT) must score exactly 4/10 (matched at IoU thresholds .50 .55 .60 .65, missed at the other 6).
"""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image
from pycocotools.coco import COCO

from npmaskrcnn.data.coco import CocoDataset
from npmaskrcnn.engine.evaluate import (
    STAT_NAMES,
    coco_evaluate,
    evaluate,
    format_summary,
    predictions_to_coco,
    result_line,
)

# pycocotools 2.0.x's decode warns about its own np.array(copy=False) under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
COCO_MINI = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_mini"
CONTIGUOUS_TO_CAT_ID = {1: 3, 2: 7}
SIZES = {1: (40, 60), 2: (50, 50)}  # image id -> (height, width)
# (image id, category id, [x, y, w, h]); widths are multiples of 5 so a w/5 shift is whole
GT_BOXES = [(1, 3, [5, 5, 20, 10]), (1, 7, [30, 10, 25, 20]), (1, 3, [10, 20, 10, 15]),
            (2, 7, [0, 0, 15, 30]), (2, 3, [20, 25, 25, 20])]


def _rect_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _write_tiny_coco(folder: Path) -> Path:
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w}
                   for i, (h, w) in SIZES.items()],
        "categories": [{"id": 3, "name": "box"}, {"id": 7, "name": "bar"}],
        "annotations": [{"id": n + 1, "image_id": i, "category_id": c, "bbox": b,
                         "area": float(b[2] * b[3]), "iscrowd": 0,
                         "segmentation": _rect_polygon(*b)}
                        for n, (i, c, b) in enumerate(GT_BOXES)],
    }
    path = folder / "tiny.json"
    path.write_text(json.dumps(data))
    for i, (h, w) in SIZES.items():
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return path


@pytest.fixture
def tiny(tmp_path):
    path = _write_tiny_coco(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    return coco, path


def _perfect_predictions(coco, shift=0.0):
    """Detections equal to the GT (score 1), boxes and masks moved right by ``shift`` * w."""
    cat_to_label = {c: k for k, c in CONTIGUOUS_TO_CAT_ID.items()}
    predictions, ids = [], sorted(SIZES)
    for image_id in ids:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        h, w = SIZES[image_id]
        boxes, masks = [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            dx = shift * bw
            boxes.append([x + dx, y, x + dx + bw, y + bh])
            mask = np.zeros((h, w), np.float32)
            mask[int(y):int(y + bh), int(x + dx):int(x + dx + bw)] = 0.9
            masks.append(mask)
        predictions.append({
            "boxes": np.array(boxes, np.float32),
            "labels": np.array([cat_to_label[a["category_id"]] for a in anns], np.int64),
            "scores": np.linspace(1.0, 0.8, len(anns)).astype(np.float32),
            "masks": np.stack(masks),
        })
    return predictions, ids


def _empty_prediction(h, w):
    return {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
            "scores": np.zeros(0, np.float32), "masks": np.zeros((0, h, w), np.float32)}


def test_predictions_to_coco_hand_case(xp):
    mask = np.zeros((4, 5), np.float32)
    mask[1:3, 2:4] = [[0.51, 0.9], [0.49, 1.0]]  # 0.49 is outside at threshold 0.5
    pred = {"boxes": xp.asarray([[1.0, 2.0, 4.5, 3.0]]), "labels": xp.asarray([2]),
            "scores": xp.asarray([0.75]), "masks": xp.asarray(mask[None])}  # device arrays
    (record,) = predictions_to_coco([pred], [42], CONTIGUOUS_TO_CAT_ID)
    assert record["image_id"] == 42 and record["category_id"] == 7
    assert record["bbox"] == [1.0, 2.0, 3.5, 1.0]
    assert record["score"] == pytest.approx(0.75)
    assert isinstance(record["segmentation"]["counts"], str)
    decoded = mask_utils.decode(record["segmentation"])
    expected = np.zeros((4, 5), np.uint8)
    expected[1, 2:4] = 1
    expected[2, 3] = 1
    np.testing.assert_array_equal(decoded, expected)
    json.dumps(record)  # JSON-ready


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 17, 23)).astype(np.float32)
    masks[1] = 0.0  # an empty mask
    pred = {"boxes": rng.uniform(0, 10, (3, 4)), "labels": np.array([1, 2, 1]),
            "scores": np.array([0.9, 0.8, 0.7]), "masks": masks[:, None]}  # (D, 1, H, W)
    records = predictions_to_coco([pred], [5], CONTIGUOUS_TO_CAT_ID, mask_threshold=0.3)
    for record, mask in zip(records, masks):
        rle = json.loads(json.dumps(record["segmentation"]))
        assert rle["size"] == [17, 23]
        np.testing.assert_array_equal(mask_utils.decode(rle), (mask > 0.3).astype(np.uint8))
    assert records[1]["segmentation"] == json.loads(json.dumps(records[1]["segmentation"]))


def test_category_mapping_forms():
    pred = {"boxes": np.zeros((3, 4)), "labels": np.array([2, 1, 2]), "scores": np.ones(3)}
    as_dict = predictions_to_coco([pred], [1], {1: 3, 2: 7})
    as_list = predictions_to_coco([pred], [1], [0, 3, 7])
    as_ids = predictions_to_coco([pred], [1], None)
    assert [r["category_id"] for r in as_dict] == [7, 3, 7]
    assert [r["category_id"] for r in as_list] == [7, 3, 7]
    assert [r["category_id"] for r in as_ids] == [2, 1, 2]
    assert all("segmentation" not in r for r in as_dict)
    with pytest.raises(ValueError, match="label 5"):
        predictions_to_coco([{**pred, "labels": np.array([5, 1, 1])}], [1], {1: 3, 2: 7})
    with pytest.raises(ValueError, match="image ids"):
        predictions_to_coco([pred], [1, 2], {1: 3, 2: 7})


def test_perfect_predictions_score_one(tiny):
    coco, _ = tiny
    predictions, ids = _perfect_predictions(coco)
    results = predictions_to_coco(predictions, ids, CONTIGUOUS_TO_CAT_ID)
    metrics = coco_evaluate(coco, results, per_category=True, verbose=False)
    for iou_type in ("bbox", "segm"):
        print(iou_type, metrics[iou_type]["AP"])
        assert set(STAT_NAMES) <= set(metrics[iou_type])
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)
        assert metrics[iou_type]["AR100"] == pytest.approx(1.0)
        assert metrics[iou_type]["per_category"] == {
            "box": {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
            "bar": {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
        }
    assert "category_id" in results[0] and len(results) == len(GT_BOXES)


def test_shifted_boxes_score_four_tenths(tiny):
    coco, _ = tiny
    predictions, ids = _perfect_predictions(coco, shift=0.2)  # IoU (1 - .2) / (1 + .2) = 2/3
    metrics = coco_evaluate(coco, predictions_to_coco(predictions, ids, CONTIGUOUS_TO_CAT_ID),
                            verbose=False)
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        print(iou_type, m["AP"], m["AP50"], m["AP75"])
        assert m["AP50"] == pytest.approx(1.0)
        assert m["AP75"] == pytest.approx(0.0)
        assert m["AP"] == pytest.approx(0.4)


def test_swapped_categories_score_zero(tiny):
    coco, _ = tiny
    predictions, ids = _perfect_predictions(coco)
    swapped = predictions_to_coco(predictions, ids, {1: 7, 2: 3})
    metrics = coco_evaluate(coco, swapped, iou_types=("bbox",), verbose=False)
    assert metrics["bbox"]["AP"] == pytest.approx(0.0)
    assert "segm" not in metrics


def test_empty_predictions_score_zero(tiny):
    coco, _ = tiny
    predictions = [_empty_prediction(*SIZES[i]) for i in sorted(SIZES)]
    results = predictions_to_coco(predictions, sorted(SIZES), CONTIGUOUS_TO_CAT_ID)
    assert results == []
    metrics = coco_evaluate(coco, results, per_category=True, verbose=False)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == 0.0
        assert metrics[iou_type]["AR100"] == 0.0
        assert metrics[iou_type]["per_category"]["box"]["AP"] == 0.0


def test_image_ids_restrict_the_evaluation(tiny):
    coco, _ = tiny
    predictions, ids = _perfect_predictions(coco)
    only_first = predictions_to_coco(predictions[:1], ids[:1], CONTIGUOUS_TO_CAT_ID)
    restricted = coco_evaluate(coco, only_first, image_ids=[1], verbose=False)
    everything = coco_evaluate(coco, only_first, verbose=False)  # image 2's GT is missed
    assert restricted["bbox"]["AP"] == pytest.approx(1.0)
    # recall is averaged over categories: "box" finds 2 of its 3, "bar" 1 of its 2
    assert everything["bbox"]["AR100"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert everything["bbox"]["AP"] < 0.9


def test_unknown_image_and_box_only_results(tiny):
    coco, _ = tiny
    pred = {"boxes": np.array([[5.0, 5.0, 25.0, 15.0]]), "labels": np.array([1]),
            "scores": np.array([1.0])}
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(coco, predictions_to_coco([pred], [99], CONTIGUOUS_TO_CAT_ID),
                      verbose=False)
    with pytest.warns(UserWarning, match="segm evaluation skipped"):
        metrics = coco_evaluate(coco, predictions_to_coco([pred], [1], CONTIGUOUS_TO_CAT_ID),
                                verbose=False)
    assert set(metrics) == {"bbox"}
    assert 0.0 < metrics["bbox"]["AP"] < 1.0


def test_summary_is_printed_and_formatted(tiny, capsys):
    coco, _ = tiny
    predictions, ids = _perfect_predictions(coco, shift=0.2)
    metrics = coco_evaluate(coco, predictions_to_coco(predictions, ids, CONTIGUOUS_TO_CAT_ID),
                            per_category=True)
    printed = capsys.readouterr().out
    assert "IoU metric: bbox" in printed and "IoU metric: segm" in printed
    assert printed.count("Average Precision") == 12
    text = format_summary(metrics)
    print(text)
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["bbox", "segm"]
    ap_line = next(line for line in lines if line.startswith("AP "))
    assert ap_line.split()[-2:] == ["0.400", "0.400"]
    assert "bbox: per category" in text and "bar" in text
    assert format_summary({}) == "(no metrics)"
    percent = format_summary(metrics, percent=True).splitlines()
    assert percent[0].split()[-4:] == ["(in", "%)", "bbox", "segm"]
    assert next(line for line in percent if line.startswith("AP ")).split()[-2:] == ["40.0",
                                                                                     "40.0"]
    assert result_line(metrics) == "box AP 40.0, mask AP 40.0 (AP50 100.0 / 100.0)"
    assert result_line({"bbox": {**metrics["bbox"], "AP": -1.0}}) == "box AP - (AP50 100.0)"
    assert result_line({}) == "no metrics"


def test_evaluate_progress_is_plain_lines_without_a_terminal(tiny, capsys):
    coco, path = tiny
    dataset = CocoDataset(path, path.parent)
    evaluate(_ReplayModel(_perfect_predictions(coco)[0]), dataset, verbose=False)
    captured = capsys.readouterr()
    assert captured.out == ""  # COCO's own summary only when asked
    assert [line.split()[:2] for line in captured.err.splitlines()] == [["evaluate", "1/2"],
                                                                        ["evaluate", "2/2"]]


class _ReplayModel:
    """A stand-in for MaskRCNN: returns prepared detections in dataset order."""

    def __init__(self, predictions):
        self.queue = list(predictions)
        self.calls = []

    def predict(self, images):
        self.calls.append([tuple(im.shape) for im in images])
        out, self.queue = self.queue[: len(images)], self.queue[len(images):]
        return out


def test_evaluate_writes_detections_and_metrics(tiny, tmp_path):
    coco, path = tiny
    dataset = CocoDataset(path, path.parent)
    predictions, _ = _perfect_predictions(coco)
    model = _ReplayModel(predictions)
    metrics = evaluate(model, dataset, out_dir=tmp_path / "eval", batch_size=2, progress=False)
    assert model.calls == [[(3, 40, 60), (3, 50, 50)]]
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    detections = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert len(detections) == len(GT_BOXES)
    assert {d["category_id"] for d in detections} == {3, 7}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics


def test_labels_that_are_category_ids_map_by_identity(tiny):
    """A model imported whole from torchvision labels with COCO category ids (3 and 7 here):
    mapped through the dataset's contiguous ids they would be wrong, by identity right."""
    coco, path = tiny
    dataset = CocoDataset(path, path.parent)
    predictions, _ = _perfect_predictions(coco)
    for p in predictions:
        p["labels"] = np.array([CONTIGUOUS_TO_CAT_ID[int(k)] for k in p["labels"]])
    metrics = evaluate(_ReplayModel(predictions), dataset, progress=False,
                       labels_are_category_ids=True)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label 3 has no COCO category id"):
        evaluate(_ReplayModel(predictions), dataset, progress=False)


def test_evaluate_box_only_model_and_no_detections(tiny):
    coco, path = tiny
    dataset = CocoDataset(path, path.parent)
    empty = [{k: v for k, v in _empty_prediction(*SIZES[i]).items() if k != "masks"}
             for i in sorted(SIZES)]
    model = _ReplayModel(empty)
    metrics = evaluate(model, dataset, batch_size=1, progress=False)
    assert model.calls == [[(3, 40, 60)], [(3, 50, 50)]]
    assert set(metrics) == {"bbox"} and metrics["bbox"]["AP"] == 0.0


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="shared coco_mini data not present")
def test_coco_mini_ground_truth_against_itself():
    dataset = CocoDataset(COCO_MINI / "annotations" / "instances.json", COCO_MINI / "images",
                          check_files=False)
    predictions, ids = [], []
    for index in range(len(dataset)):
        target = dataset.load_target(index)
        keep = target["iscrowd"] == 0  # crowd regions are ignore regions, not objects
        predictions.append({"boxes": target["boxes"][keep], "labels": target["labels"][keep],
                            "scores": np.ones(int(keep.sum()), np.float32),
                            "masks": target["masks"][keep]})
        ids.append(target["image_id"])
    results = predictions_to_coco(predictions, ids, dataset.contiguous_to_cat_id)
    assert len(results) == 423 - 5
    metrics = coco_evaluate(dataset.coco, results, verbose=False)
    print({t: metrics[t]["AP"] for t in metrics})
    assert metrics["bbox"]["AP"] > 0.99
    assert metrics["segm"]["AP"] > 0.99


# ---- keypoints (OKS) -------------------------------------------------------------------------


def _keypoint_coco(folder: Path, area=400.0):
    """One 60x80 image, one person (area ``area``) with the 17 COCO keypoints, 16 labelled
    (the last not: x = y = v = 0), and a second category without keypoints."""
    from npmaskrcnn.data.keypoints import PERSON_CATEGORY

    rng = np.random.default_rng(0)
    kps = np.stack([rng.uniform(20, 40, 17), rng.uniform(10, 50, 17), np.full(17, 2.0)], 1)
    kps[16] = 0
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": 60, "width": 80}],
        "categories": [PERSON_CATEGORY, {"id": 5, "name": "ball"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [15, 5, 30, 50], "area": area,
             "iscrowd": 0, "segmentation": _rect_polygon(15, 5, 30, 50),
             "keypoints": kps.ravel().tolist(), "num_keypoints": 16},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [50, 5, 10, 10], "area": 100.0,
             "iscrowd": 0, "segmentation": _rect_polygon(50, 5, 10, 10)}],
    }
    path = folder / "kp.json"
    path.write_text(json.dumps(data))
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(folder / "1.png")
    return path, kps


def _oks(d, area):
    """COCO's OKS of keypoints all moved by d pixels, over the 16 labelled ones (by hand)."""
    from npmaskrcnn.data.keypoints import COCO_OKS_SIGMAS

    sigmas = np.asarray(COCO_OKS_SIGMAS[:16])
    return float(np.mean(np.exp(-d ** 2 / (2 * area * (2 * sigmas) ** 2))))


def test_keypoint_ap_from_the_oks_by_hand(tmp_path):
    """One person, one detection whose keypoints are all d pixels off. Matched at every OKS
    threshold t <= OKS(d), so AP = (number of thresholds 0.50, 0.55, ... <= OKS) / 10; d is
    chosen (by bisection) to give OKS 0.72: AP 0.5. Unmoved keypoints give AP 1."""
    path, kps = _keypoint_coco(tmp_path)
    dataset = CocoDataset(path, tmp_path)
    assert dataset.num_keypoints == 17 and dataset.keypoint_categories == [1]
    lo, hi = 0.0, 20.0
    for _ in range(60):
        d = (lo + hi) / 2
        lo, hi = (d, hi) if _oks(d, 400.0) > 0.72 else (lo, d)
    assert abs(_oks(d, 400.0) - 0.72) < 1e-9
    for shift, ap in ((0.0, 1.0), (d, 0.5)):
        moved = kps.copy()
        moved[:, 0] += shift * (moved[:, 2] > 0)  # a d-pixel move along x
        pred = {"boxes": np.array([[15, 5, 45, 55]], np.float32), "labels": np.array([1]),
                "scores": np.array([0.9], np.float32), "keypoints": moved[None]}
        metrics = evaluate(_ReplayModel([pred]), dataset, progress=False)
        assert set(metrics) == {"bbox", "keypoints"}
        assert metrics["keypoints"]["AP"] == pytest.approx(ap)
        assert set(metrics["keypoints"]) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50",
                                             "AR75", "ARm", "ARl"}


def test_keypoint_records_and_summary(tmp_path):
    path, kps = _keypoint_coco(tmp_path)
    pred = {"boxes": np.array([[15, 5, 45, 55]], np.float32), "labels": np.array([1]),
            "scores": np.array([0.9], np.float32), "keypoints": kps[None]}
    records = predictions_to_coco([pred], [1], None)
    assert records[0]["keypoints"] == kps.ravel().tolist()
    dataset = CocoDataset(path, tmp_path)
    metrics = evaluate(_ReplayModel([pred]), dataset, progress=False)
    text = format_summary(metrics, percent=True)
    assert "AP  @[OKS=0.50:0.95 | area=   all | maxDets= 20]" in text and "keypo" in text
    # the ball, never detected, halves box AP; keypoint AP is the person's alone
    assert result_line(metrics) == "box AP 50.0, keypoint AP 100.0 (AP50 50.0 / 100.0)"


def test_keypoints_other_than_cocos_need_their_sigmas(tmp_path):
    path, kps = _keypoint_coco(tmp_path)
    data = json.loads(path.read_text())
    data["categories"][0]["keypoints"] = data["categories"][0]["keypoints"][:2]
    data["annotations"][0]["keypoints"] = kps[:2].ravel().tolist()
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    results = [{"image_id": 1, "category_id": 1, "score": 1.0,
                "keypoints": kps[:2].ravel().tolist()}]
    with pytest.raises(ValueError, match="2 keypoints per 'person' and no 'sigmas'"):
        coco_evaluate(coco, results, iou_types=("keypoints",), verbose=False)
    data["categories"][0]["sigmas"] = [0.05, 0.05]
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    metrics = coco_evaluate(coco, results, iou_types=("keypoints",), verbose=False)
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0)


def test_keypoint_predictions_without_ground_truth_keypoints_are_not_scored(tiny):
    coco, path = tiny
    dataset = CocoDataset(path, path.parent)
    predictions, _ = _perfect_predictions(coco)
    for p in predictions:
        p["keypoints"] = np.zeros((len(p["boxes"]), 17, 3), np.float32)
    with pytest.warns(UserWarning, match="keypoint evaluation skipped"):
        metrics = evaluate(_ReplayModel(predictions), dataset, progress=False)
    assert set(metrics) == {"bbox", "segm"}
