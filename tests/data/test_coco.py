"""Tests of npmaskrcnn.data.coco: decoding, targets, category mapping, subset tool, bad input."""

import contextlib
import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO

from npmaskrcnn.data.coco import (
    CocoDataset,
    DatasetError,
    DatasetWarning,
    decode_segmentation,
    ignore_mask,
    split_crowd,
)
from npmaskrcnn.data.coco_subset import make_coco_subset

COCO_MINI = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_mini"
needs_coco_mini = pytest.mark.skipif(
    not (COCO_MINI / "annotations" / "instances.json").is_file(),
    reason=f"real COCO subset not found at {COCO_MINI.resolve()}",
)
# pycocotools 2.0.x under NumPy 2 warns about its own np.array(copy=False) in annToMask
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _uncompressed_rle(mask):
    """Run lengths of a (H, W) 0/1 mask in column-major order, starting with a run of 0s."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


def _tiny_coco(root, annotations=None, images=None, image_files=True):
    """A 4x6 image, two categories with ids 3 and 7, and three hand-drawn annotations."""
    crowd = np.zeros((4, 6), np.uint8)
    crowd[0:2, 4:6] = 1
    compressed = np.zeros((4, 6), np.uint8)
    compressed[2:4, 0:2] = 1
    compressed_rle = mask_utils.encode(np.asfortranarray(compressed))
    compressed_rle["counts"] = compressed_rle["counts"].decode()
    if annotations is None:
        annotations = [
            {"id": 10, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 6.0,
             "bbox": [1.0, 0.5, 3.0, 2.0], "segmentation": [[1, 0.5, 4, 0.5, 4, 2.5, 1, 2.5]]},
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 4.0,
             "bbox": [4, 0, 2, 2], "segmentation": {"size": [4, 6],
                                                    "counts": _uncompressed_rle(crowd)}},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 4.0,
             "bbox": [-1, 2, 3, 3], "segmentation": compressed_rle},
        ]
    data = {
        "info": {"description": "tiny"}, "licenses": [{"id": 1, "name": "x"}],
        "images": images or [{"id": 1, "file_name": "a.png", "height": 4, "width": 6}],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
    }
    root.mkdir(parents=True, exist_ok=True)
    if image_files:
        pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
        for record in data["images"]:
            Image.fromarray(pixels).save(root / record["file_name"])
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json", crowd, compressed


def test_tiny_dataset_hand_computed(tmp_path):
    ann_file, crowd, compressed = _tiny_coco(tmp_path)
    dataset = CocoDataset(ann_file, tmp_path)
    assert len(dataset) == 1 and dataset.class_names == ["__background__", "three", "seven"]
    assert dataset.cat_id_to_contiguous == {3: 1, 7: 2}
    assert dataset.contiguous_to_cat_id == {1: 3, 2: 7}
    image, target = dataset[0]
    expected_pixels = np.arange(72, dtype=np.float32).reshape(4, 6, 3).transpose(2, 0, 1) / 255
    assert image.dtype == np.float32 and image.shape == (3, 4, 6)
    np.testing.assert_allclose(image, expected_pixels, rtol=1e-6)
    # the last box [-1, 2, 3, 3] -> x1y1x2y2 [-1, 2, 2, 5] clipped to the 6x4 image
    np.testing.assert_array_equal(target["boxes"], [[1, 0.5, 4, 2.5], [4, 0, 6, 2], [0, 2, 2, 4]])
    assert target["boxes"].dtype == np.float32
    np.testing.assert_array_equal(target["labels"], [2, 1, 1])
    np.testing.assert_array_equal(target["iscrowd"], [0, 1, 0])
    np.testing.assert_array_equal(target["area"], [6, 4, 4])
    assert target["image_id"] == 1 and "keypoints" not in target
    assert target["masks"].dtype == np.uint8 and target["masks"].shape == (3, 4, 6)
    np.testing.assert_array_equal(target["masks"][1], crowd)
    np.testing.assert_array_equal(target["masks"][2], compressed)
    # the polygon through pycocotools' own path (COCO.annToMask), area close to 3 x 2
    with contextlib.redirect_stdout(io.StringIO()):
        oracle = COCO(str(ann_file))
    np.testing.assert_array_equal(target["masks"][0], oracle.annToMask(oracle.anns[10]))
    assert 4 <= target["masks"][0].sum() <= 9


def test_split_crowd_and_ignore_mask(tmp_path):
    ann_file, crowd, _ = _tiny_coco(tmp_path)
    _, target = CocoDataset(ann_file, tmp_path)[0]
    instances, crowds = split_crowd(target)
    np.testing.assert_array_equal(instances["labels"], [2, 1])
    np.testing.assert_array_equal(crowds["boxes"], [[4, 0, 6, 2]])
    assert instances["masks"].shape == (2, 4, 6) and crowds["masks"].shape == (1, 4, 6)
    assert instances["image_id"] == crowds["image_id"] == 1
    np.testing.assert_array_equal(ignore_mask(target), crowd.astype(bool))
    assert not ignore_mask(instances).any() and ignore_mask(instances).shape == (4, 6)


def test_category_filter_and_skip_empty(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    only_seven = CocoDataset(ann_file, tmp_path, categories=["seven"])
    assert only_seven.class_names == ["__background__", "seven"]
    assert only_seven.cat_id_to_contiguous == {7: 1}
    np.testing.assert_array_equal(only_seven[0][1]["labels"], [1])
    # category 3 alone: one crowd region and one instance; by id works like by name
    assert len(CocoDataset(ann_file, tmp_path, categories=[3], skip_empty=True)) == 1
    crowd_only = [a for a in json.loads(ann_file.read_text())["annotations"] if a["id"] == 11]
    ann_file, _, _ = _tiny_coco(tmp_path / "crowd", annotations=crowd_only)
    assert len(CocoDataset(ann_file, tmp_path / "crowd")) == 1
    assert len(CocoDataset(ann_file, tmp_path / "crowd", skip_empty=True)) == 0
    with pytest.raises(DatasetError, match=r"unknown category 'dog'; known: \['seven', "
                                           r"'three'\] \(ids 3..7\)"):
        CocoDataset(ann_file, tmp_path / "crowd", categories=["dog"])
    # ids typed on a command line arrive as strings of digits
    assert CocoDataset(ann_file, tmp_path / "crowd", categories=["7"]).cat_ids == [7]
    with pytest.raises(DatasetError, match="unknown category '5'"):
        CocoDataset(ann_file, tmp_path / "crowd", categories=["5"])


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    density=st.floats(0.0, 1.0),
)
def test_rle_round_trip(height, width, seed, density):
    mask = (np.random.default_rng(seed).uniform(size=(height, width)) < density).astype(np.uint8)
    compressed = mask_utils.encode(np.asfortranarray(mask))
    as_str = {"size": [height, width], "counts": compressed["counts"].decode()}
    uncompressed = {"size": [height, width], "counts": _uncompressed_rle(mask)}
    for segm in (compressed, as_str, uncompressed):
        np.testing.assert_array_equal(decode_segmentation(segm, height, width), mask)


# ---- the real COCO subset ------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_instances():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # the official records are all valid
        return CocoDataset(COCO_MINI / "annotations" / "instances.json", COCO_MINI / "images")


@needs_coco_mini
def test_real_instances(coco_instances):
    dataset = coco_instances
    raw = json.loads((COCO_MINI / "annotations" / "instances.json").read_text())
    cat_ids = sorted(c["id"] for c in raw["categories"])
    assert dataset.num_classes == len(cat_ids) + 1 == len(dataset.class_names)
    assert [dataset.contiguous_to_cat_id[k] for k in range(1, len(cat_ids) + 1)] == cat_ids
    assert all(dataset.contiguous_to_cat_id[dataset.cat_id_to_contiguous[c]] == c for c in cat_ids)
    assert len(dataset) == len(raw["images"])
    oracle = dataset.coco
    anns_by_id = {a["id"]: a for a in raw["annotations"]}
    total = crowds = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        info = oracle.imgs[target["image_id"]]
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        ann_ids = oracle.getAnnIds(imgIds=target["image_id"])
        assert len(target["boxes"]) == len(ann_ids)
        for g, ann_id in enumerate(ann_ids):
            ann = anns_by_id[ann_id]
            np.testing.assert_array_equal(target["masks"][g], oracle.annToMask(ann))
            assert target["masks"][g].any()
            assert target["iscrowd"][g] == ann["iscrowd"]
            assert dataset.contiguous_to_cat_id[int(target["labels"][g])] == ann["category_id"]
        total += len(ann_ids)
        crowds += int(target["iscrowd"].sum())
    assert total == len(raw["annotations"])
    assert crowds == sum(a["iscrowd"] for a in raw["annotations"]) > 0
    # the crowd regions are the uncompressed-RLE records
    assert all(isinstance(a["segmentation"], dict) == bool(a["iscrowd"])
               for a in raw["annotations"])
    empty = [i for i in dataset.image_ids if not oracle.getAnnIds(imgIds=i)]
    assert empty and len(CocoDataset(COCO_MINI / "annotations" / "instances.json",
                                     COCO_MINI / "images", skip_empty=True)) < len(dataset)


@needs_coco_mini
def test_real_keypoints():
    # 37 persons have num_keypoints = 0 in the official file, 3 of them crowd regions
    with pytest.warns(DatasetWarning, match="34 person annotation"):
        dataset = CocoDataset(COCO_MINI / "annotations" / "person_keypoints.json",
                              COCO_MINI / "images")
    raw = json.loads((COCO_MINI / "annotations" / "person_keypoints.json").read_text())
    assert dataset.class_names == ["__background__", "person"] and dataset.num_keypoints == 17
    labelled = 0
    for index in range(len(dataset)):
        _, target = dataset[index]
        keypoints = target["keypoints"]
        assert keypoints.shape == (len(target["boxes"]), 17, 3) and keypoints.dtype == np.float32
        assert set(np.unique(keypoints[..., 2])) <= {0.0, 1.0, 2.0}
        labelled += int((keypoints[..., 2] > 0).sum())
    assert labelled == sum(int(np.count_nonzero(a["keypoints"][2::3])) for a in raw["annotations"])
    assert labelled > 0


@needs_coco_mini
def test_real_subset_tool(tmp_path):
    source = COCO_MINI / "annotations" / "instances.json"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "sub" / "subset.json"
    stats = make_coco_subset(source, out, categories=["person", 47, "bottle"], max_images=6)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    with contextlib.redirect_stdout(io.StringIO()):
        subset = COCO(str(out))
    raw = json.loads(source.read_text())
    assert sorted(subset.cats) == [1, 44, 47]
    assert stats["images"] == len(subset.imgs) == 6 and stats["categories"] == 3
    assert stats["annotations"] == len(subset.anns) > 0
    assert sum(stats["per_category"].values()) == stats["annotations"]
    assert stats["crowd"] == sum(a["iscrowd"] for a in subset.anns.values())
    assert {a["category_id"] for a in subset.anns.values()} <= {1, 44, 47}
    assert {a["image_id"] for a in subset.anns.values()} <= set(subset.imgs)
    data = json.loads(out.read_text())
    assert data["info"] == raw["info"] and data["licenses"] == raw["licenses"]
    # every annotation of the chosen categories on a chosen image is kept, unchanged
    expected = [a for a in raw["annotations"]
                if a["image_id"] in subset.imgs and a["category_id"] in (1, 44, 47)]
    assert sorted(data["annotations"], key=lambda a: a["id"]) == sorted(
        expected, key=lambda a: a["id"])
    # seeded: same seed, same file; the subset loads as a dataset on the same image folder
    again = tmp_path / "again.json"
    make_coco_subset(source, again, categories=["person", 47, "bottle"], max_images=6)
    assert again.read_bytes() == out.read_bytes()
    assert len(CocoDataset(out, COCO_MINI / "images")) == 6
    # keypoint subset keeps the keypoint names and skeleton
    kp_out = tmp_path / "kp.json"
    make_coco_subset(COCO_MINI / "annotations" / "person_keypoints.json", kp_out, max_images=3)
    category = json.loads(kp_out.read_text())["categories"][0]
    assert len(category["keypoints"]) == 17 and category["skeleton"]


def test_subset_refuses_to_overwrite(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    before = ann_file.read_bytes()
    for target in (ann_file, tmp_path / "." / "instances.json"):
        with pytest.raises(DatasetError, match="over its input"):
            make_coco_subset(ann_file, target)
    assert ann_file.read_bytes() == before
    out = tmp_path / "out.json"
    out.write_text("keep me")
    with pytest.raises(DatasetError, match="already exists"):
        make_coco_subset(ann_file, out)
    assert out.read_text() == "keep me"
    stats = make_coco_subset(ann_file, out, categories=["seven"], overwrite=True)
    assert stats == {"images": 1, "annotations": 1, "crowd": 0, "categories": 1,
                     "per_category": {"seven": 1}}


def test_subset_refuses_to_write_an_empty_file(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    del data["annotations"]  # an image-info file
    (tmp_path / "info.json").write_text(json.dumps(data))
    out = tmp_path / "out.json"
    with pytest.raises(DatasetError, match=r"info.json: no image has an annotation of the "
                                           r"chosen categories \(seven, three; 0 annotations"):
        make_coco_subset(tmp_path / "info.json", out)
    assert not out.exists()
    assert make_coco_subset(tmp_path / "info.json", out, keep_empty=True)["images"] == 1


# ---- bad input -----------------------------------------------------------------------------


def test_malformed_and_truncated_json(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    text = ann_file.read_text()
    for name, content in [("truncated.json", text[: len(text) // 2]),
                          ("malformed.json", text.replace(":", "=", 1))]:
        (tmp_path / name).write_text(content)
        with pytest.raises(DatasetError, match=rf"{name}: not valid JSON .* line 1"):
            CocoDataset(tmp_path / name, tmp_path)
        with pytest.raises(DatasetError, match=name):
            make_coco_subset(tmp_path / name, tmp_path / "out.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatasetError, match="list.json: top level is a list"):
        CocoDataset(tmp_path / "list.json", tmp_path)
    (tmp_path / "noimages.json").write_text('{"annotations": []}')
    with pytest.raises(DatasetError, match="noimages.json: missing list 'images'"):
        CocoDataset(tmp_path / "noimages.json", tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_id": 45}, r"annotation id 10 \(image 45\): points to image id 45"),
        ({"category_id": 99}, r"annotation id 10 \(image 1\): unknown category id 99"),
        ({"segmentation": [[1, 1, 3, 1]]}, r"instances.json: annotation id 10 \(image 1\): "
                                           r"polygon with 2 points$"),
        ({"segmentation": [[1, 1, 3, 1, 2]]}, r"annotation id 10 .* not an even-length"),
        ({"segmentation": []}, r"annotation id 10 .* empty segmentation"),
        ({"segmentation": {"size": [5, 6], "counts": [30]}}, r"id 10 .*RLE size \[5, 6\]"),
        ({"segmentation": {"size": [4, 6], "counts": [3, 4]}}, r"id 10 .*sum to 7, not 24"),
        ({"segmentation": 3}, r"id 10 .*segmentation of type int"),
        ({"bbox": [1, 2, 3]}, r"id 10 .*bbox must be 4 finite numbers"),
        ({"id": 11}, r"annotation id 11 .* appears twice"),
    ],
)
def test_bad_annotation_records(tmp_path, change, message):
    ann_file, _, _ = _tiny_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    data["annotations"][0].update(change)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        CocoDataset(ann_file, tmp_path)


def test_missing_image_file(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 4, "width": 6},
              {"id": 2, "file_name": "b.png", "height": 4, "width": 6}]
    ann_file, _, _ = _tiny_coco(tmp_path, images=images)
    (tmp_path / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image file\(s\) missing .*b.png \(image 2\)"):
        CocoDataset(ann_file, tmp_path)
    # without the construction-time check, loading that image names it
    dataset = CocoDataset(ann_file, tmp_path, check_files=False)
    with pytest.raises(DatasetError, match=r"b.png: image file not found \(image id 2"):
        dataset[1]


def test_undecodable_and_mismatched_images(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 4, "width": 6},
              {"id": 2, "file_name": "b.jpg", "height": 4, "width": 6},
              {"id": 3, "file_name": "c.png", "height": 5, "width": 6}]
    ann_file, _, _ = _tiny_coco(tmp_path, images=images)
    (tmp_path / "a.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "b.jpg").write_bytes(buffer.getvalue()[:200])  # truncated JPEG
    dataset = CocoDataset(ann_file, tmp_path)
    with pytest.raises(DatasetError,
                       match=r"a.png: cannot decode image: not a format .* \(image id 1 in"):
        dataset[0]
    with pytest.raises(DatasetError,
                       match=r"b.jpg: cannot decode image \(truncated .* \(image id 2 in"):
        dataset[1]
    with pytest.raises(DatasetError, match=r"c.png: image is 6x4 but image id 3 .* says 6x5"):
        dataset[2]


def test_empty_and_out_of_image_boxes_are_dropped_with_a_count(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    polygon = data["annotations"][0]
    extra = [dict(polygon, id=20, bbox=[2, 1, 0, 1]),      # zero width
             dict(polygon, id=21, bbox=[7, 1, 2, 2]),      # right of the 6-wide image
             dict(polygon, id=22, bbox=[1, -3, 2, 2]),     # above the image
             dict(polygon, id=23, bbox=[5, 3, 4, 4])]      # partly outside: clipped, kept
    data["annotations"] += extra
    ann_file.write_text(json.dumps(data))
    with pytest.warns(DatasetWarning, match=r"dropped 3 annotation\(s\) .*\[20, 21, 22\]"):
        dataset = CocoDataset(ann_file, tmp_path)
    _, target = dataset[0]
    assert len(target["boxes"]) == 4 and len(dataset.coco.anns) == 4
    np.testing.assert_array_equal(target["boxes"][-1], [5, 3, 6, 4])
    assert target["masks"].shape == (4, 4, 6)


# ---- keypoints -----------------------------------------------------------------------------


def _tiny_keypoints(root, change=None, extra=()):
    """The tiny file with two keypoints ("a", "b") on category 7 (seven): annotation 10 has
    a at (1, 1) visible and b at (3, 2) occluded; ``change`` updates annotation 10, ``extra``
    adds annotations."""
    ann_file, _, _ = _tiny_coco(root)
    data = json.loads(ann_file.read_text())
    data["categories"][1]["keypoints"] = ["a", "b"]
    data["annotations"][0]["keypoints"] = [1, 1, 2, 3, 2, 1]
    data["annotations"][0].update(change or {})
    data["annotations"] += [dict(data["annotations"][0], **e) for e in extra]
    ann_file.write_text(json.dumps(data))
    return ann_file


def test_keypoints_are_read_per_instance(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file: no warning
        dataset = CocoDataset(_tiny_keypoints(tmp_path), tmp_path)
    assert dataset.num_keypoints == 2 and dataset.keypoint_categories == [7]
    target = dataset.load_target(0)
    assert target["keypoints"].shape == (3, 2, 3)  # every instance; zeros without keypoints
    np.testing.assert_array_equal(target["keypoints"][0], [[1, 1, 2], [3, 2, 1]])
    assert not target["keypoints"][1:].any()


@pytest.mark.parametrize("change, message", [
    ({"keypoints": [1, 1, 2]}, r"instances.json: annotation id 10 \(image 1\): 3 keypoint "
                               r"values, expected 3 x 2$"),
    ({"keypoints": [1, 1, 2, 3, 2, 1, 0, 0, 0]}, r"annotation id 10 .*: 9 keypoint values"),
    ({"keypoints": {"x": 1}}, r"annotation id 10 .*: dict keypoint values, expected 3 x 2"),
    ({"keypoints": [1, 1, 2, "b", 2, 1]}, r"annotation id 10 .*: keypoints must be finite"),
    ({"keypoints": [1, 1, 2, 3, 2, 3]}, r"annotation id 10 .*: keypoint 1 has visibility 3; "
                                        r"COCO's are 0"),
])
def test_bad_keypoint_records(tmp_path, change, message):
    with pytest.raises(DatasetError, match=message):
        CocoDataset(_tiny_keypoints(tmp_path, change), tmp_path)


@pytest.mark.parametrize("change, extra, message, keypoints", [
    # labelled keypoints outside the 6 x 4 image: counted, then read as not labelled
    ({"keypoints": [7, 1, 2, 3, -1, 1]}, [{"id": 30, "keypoints": [1, 1, 2, 3, 9, 2]}],
     r"3 labelled keypoint\(s\) of 2 annotation\(s\) outside their image, read as not "
     r"labelled \(ids \[10, 30\]\)", [[0, 0, 0], [0, 0, 0]]),
    # persons without any labelled keypoint: counted (crowd regions are not persons)
    ({}, [{"id": 31, "keypoints": [0, 0, 0, 0, 0, 0]}, {"id": 32, "keypoints": []},
          {"id": 33, "keypoints": [], "iscrowd": 1}],
     r"2 seven annotation\(s\) without a labelled keypoint: they train boxes and masks, "
     r"not keypoints \(ids \[31, 32\]\)", [[1, 1, 2], [3, 2, 1]]),
])
def test_keypoint_problems_are_counted_in_one_warning(tmp_path, change, extra, message,
                                                      keypoints):
    ann_file = _tiny_keypoints(tmp_path, change, extra)
    with pytest.warns(DatasetWarning, match=message) as record:
        dataset = CocoDataset(ann_file, tmp_path)
    assert len(record) == 1
    np.testing.assert_array_equal(dataset.load_target(0)["keypoints"][0], keypoints)


def test_a_file_without_keypoints_has_none(tmp_path):
    ann_file, _, _ = _tiny_coco(tmp_path)
    dataset = CocoDataset(ann_file, tmp_path)
    assert dataset.num_keypoints == 0 and dataset.keypoint_categories == []
    assert "keypoints" not in dataset.load_target(0)
