"""Tests of npmaskrcnn.data.shapes: rasterisation, occlusion, determinism, COCO output."""

import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from npmaskrcnn.data.coco import CocoDataset, decode_segmentation
from npmaskrcnn.data.shapes import (
    COMPETING_CLASSES,
    SHAPE_CLASSES,
    THIN_CLASSES,
    alignment_settings,
    competition_settings,
    generate_shapes_image,
    make_shapes_dataset,
    overlaps_another_class,
    shape_coverage,
    shapes_paths,
    shapes_settings,
)


def _mask_extent(mask):
    """[x, y, w, h] of the pixels set in a (H, W) mask, pixel edges included."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def test_square_coverage_hand_computed():
    # side 2 centred at (2.25, 2): x in [1.25, 3.25], y in [1, 3]. With 4 samples per pixel
    # side at (k + 0.5)/4: column 1 has 3 of 4 sample columns inside, column 3 has 1 of 4.
    cov = shape_coverage("square", 2.25, 2.0, 2.0, 0.0, 0.0, (4, 5))
    expected = np.zeros((4, 5))
    expected[1:3, 1] = 0.75
    expected[1:3, 2] = 1.0
    expected[1:3, 3] = 0.25
    np.testing.assert_allclose(cov, expected)


def test_cross_coverage_hand_computed():
    # arms 8 long and 2 wide, centred on a pixel corner: two 8x2 bars sharing a 2x2 square
    cov = shape_coverage("cross", 8.0, 8.0, 8.0, 2.0, 0.0, (16, 16))
    assert set(np.unique(cov)) <= {0.0, 1.0}
    assert cov.sum() == 8 * 2 + 8 * 2 - 2 * 2
    assert _mask_extent(cov >= 0.5) == [4, 4, 8, 8]


@pytest.mark.parametrize(
    "kind, area",
    [
        ("circle", np.pi * 20**2),
        ("ring", np.pi * (20**2 - 16**2)),
        ("triangle", 3 * np.sqrt(3) / 4 * 20**2),
        ("square", 40**2),
        ("rounded_square", 40**2 - (4 - np.pi) * 10**2),  # corners of radius 40/4 rounded
        ("holed_cross", 4 / 3 * 40 * 4),  # two 40x4 bars, the 40/3 square centre cut out
    ],
)
def test_coverage_area_matches_geometry(kind, area):
    cov = shape_coverage(kind, 50.3, 49.7, 40.0, 4.0, 0.0, (100, 100), supersample=8)
    print(kind, cov.sum(), area)
    assert abs(cov.sum() - area) < 0.01 * area


@pytest.mark.parametrize("plain, twin", [("square", "rounded_square"), ("circle", "ring"),
                                         ("cross", "holed_cross")])
def test_competing_pairs_share_their_outline_and_differ_inside(plain, twin):
    a, b = (shape_coverage(k, 20.3, 19.6, 24.0, 2.0, 0.0, (40, 40)) >= 0.5 for k in (plain, twin))
    assert _mask_extent(a) == _mask_extent(b)  # the same box
    assert (b & ~a).sum() == 0 and (a & ~b).sum() > 0.05 * a.sum()  # the twin lacks a part
    assert {plain, twin} <= set(COMPETING_CLASSES)


def test_overlaps_another_class_hand_computed():
    boxes = [[0, 0, 10, 10], [8, 8, 18, 18], [9, 0, 19, 10], [40, 40, 50, 50], [40, 40, 44, 44]]
    labels = [1, 2, 2, 1, 1]
    # 0 and 1 share 2x2 = 4% of a box (under 10%); 0 and 2 share 1x10 = 10%: enough; 1 and 2
    # are one class; 3 and 4 overlap fully but are one class
    assert overlaps_another_class(boxes, labels).tolist() == [True, False, True, False, False]
    assert overlaps_another_class(boxes, labels, 0.04).tolist() == [True, True, True, False,
                                                                    False]
    assert overlaps_another_class(np.zeros((0, 4)), []).shape == (0,)


def test_competition_data_has_six_paired_classes_and_overlaps(tmp_path):
    """The data of Table 2b: at least 6 classes, in pairs that share an outline, each
    present; at least 30 % of the objects overlap an object of another class (the default
    ablation data: far fewer)."""
    fractions = {}
    for name, settings_ in (("compete", competition_settings(16)),
                            ("align16", alignment_settings(16))):
        ann_file = make_shapes_dataset(tmp_path / name, 60, image_size=128, seed=0, **settings_)
        data = json.loads(ann_file.read_text())
        by_image = {}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            by_image.setdefault(a["image_id"], []).append(([x, y, x + w, y + h],
                                                           a["category_id"]))
        flags = np.concatenate([overlaps_another_class(*zip(*objs)) for objs in
                                by_image.values()])
        fractions[name] = flags.mean()
        counts = np.bincount([a["category_id"] for a in data["annotations"]])
        print(name, "objects", flags.size, "overlapping another class", f"{flags.mean():.2f}",
              "per class", counts[1:].tolist())
    assert fractions["compete"] >= 0.3 and fractions["align16"] < 0.2
    compete = json.loads(shapes_paths(tmp_path / "compete", "train")[0].read_text())
    assert [c["name"] for c in compete["categories"]] == list(COMPETING_CLASSES)
    counts = np.bincount([a["category_id"] for a in compete["annotations"]], minlength=7)[1:]
    assert len(counts) >= 6 and counts.min() >= 0.08 * counts.sum()


def test_coverage_outside_image_and_unknown_kind():
    assert shape_coverage("circle", -50.0, -50.0, 10.0, 2.0, 0.0, (8, 8)).sum() == 0
    with pytest.raises(ValueError, match="hexagon"):
        shape_coverage("hexagon", 4.0, 4.0, 4.0, 1.0, 0.0, (8, 8))


def _check_instances(image, masks, labels, num_classes, min_visible_area):
    height, width = image.shape[:2]
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    assert masks.dtype == np.uint8 and masks.shape == (len(labels), height, width)
    assert labels.dtype == np.int64
    assert np.all((labels >= 1) & (labels <= num_classes))
    # visible parts: no pixel belongs to two instances, and no instance is too small
    assert masks.sum(axis=0).max(initial=0) <= 1
    assert np.all(masks.sum(axis=(1, 2)) >= min_visible_area)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    height=st.integers(24, 80),
    width=st.integers(24, 80),
    num_objects=st.integers(0, 6),
    rotate=st.booleans(),
)
def test_generated_instances_are_visible_and_disjoint(seed, height, width, num_objects, rotate):
    rng = np.random.default_rng(seed)
    image, masks, labels = generate_shapes_image(
        rng, (height, width), num_objects, SHAPE_CLASSES, min_size=6.0, rotate=rotate,
        min_visible_area=10,
    )
    assert len(labels) <= num_objects
    _check_instances(image, masks, labels, len(SHAPE_CLASSES), 10)


def test_occlusion_keeps_only_the_visible_part():
    # crowded: many large objects on a small image, so that occlusion must happen
    rng = np.random.default_rng(3)
    image, masks, labels = generate_shapes_image(
        rng, (48, 48), 8, ("square", "circle"), min_size=20.0, max_size=30.0, small_fraction=0.0,
        min_visible_fraction=0.2,
    )
    _check_instances(image, masks, labels, 2, 12)
    areas = masks.sum(axis=(1, 2))
    # a full square of side >= 20 covers >= 19*19 pixels; an occluded one shows less
    full_square = 19 * 19
    assert np.any((labels == 1) & (areas < full_square)) or np.any(
        (labels == 2) & (areas < np.pi * 9.5**2)
    )


def test_empty_image():
    image, masks, labels = generate_shapes_image(np.random.default_rng(0), 16, 0)
    assert image.shape == (16, 16, 3) and masks.shape == (0, 16, 16) and labels.shape == (0,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_size"):
        generate_shapes_image(np.random.default_rng(0), 32, 1, min_size=20.0, max_size=10.0)
    with pytest.raises(ValueError, match="classes"):
        make_shapes_dataset("unused", 1, classes=("square", "star"))
    with pytest.raises(ValueError, match="min_objects"):
        make_shapes_dataset("unused", 1, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="num_images must be a whole number >= 0, got -3"):
        make_shapes_dataset("unused", -3)


@pytest.fixture(scope="module")
def shapes_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    ann_file = make_shapes_dataset(out, 20, image_size=(48, 64), seed=7, classes=SHAPE_CLASSES,
                                   min_size=8.0, max_objects=5, split_name="train")
    return out, ann_file


def test_settings_are_read_back(shapes_split, tmp_path):
    _, ann_file = shapes_split
    settings = shapes_settings(ann_file)
    assert settings["num_images"] == 20 and settings["image_size"] == [48, 64]
    assert settings["seed"] == 7 and settings["classes"] == list(SHAPE_CLASSES)
    assert settings["max_objects"] == 5 and settings["min_size"] == 8.0
    assert shapes_settings(tmp_path / "missing.json") is None
    (tmp_path / "other.json").write_text('{"images": [], "categories": []}')
    assert shapes_settings(tmp_path / "other.json") is None  # not a generated file


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_determinism(shapes_split, tmp_path):
    out, ann_file = shapes_split
    assert (ann_file, out / "train") == shapes_paths(out, "train")
    again = make_shapes_dataset(tmp_path / "again", 20, image_size=(48, 64), seed=7,
                                classes=SHAPE_CLASSES, min_size=8.0, max_objects=5)
    first, second = _all_files(out), _all_files(tmp_path / "again")
    assert len(first) == 21 and first == second
    assert again.name == ann_file.name
    # image i does not depend on how many images are made; another seed or split differs
    shorter = _all_files(make_shapes_dataset(tmp_path / "short", 3, image_size=(48, 64), seed=7,
                                             classes=SHAPE_CLASSES, min_size=8.0,
                                             max_objects=5).parents[1])
    assert all(shorter[f"train/{i:06d}.png"] == first[f"train/{i:06d}.png"] for i in (1, 2, 3))
    for kwargs in ({"seed": 8}, {"split_name": "val"}):
        other = make_shapes_dataset(tmp_path / "other", 1, image_size=(48, 64),
                                    classes=SHAPE_CLASSES, min_size=8.0, max_objects=5,
                                    **{"seed": 7, **kwargs})
        name = kwargs.get("split_name", "train")
        assert (other.parents[1] / name / "000001.png").read_bytes() != first["train/000001.png"]


def test_annotations_match_masks(shapes_split):
    out, ann_file = shapes_split
    data = json.loads(ann_file.read_text())
    assert [c["id"] for c in data["categories"]] == list(range(1, len(SHAPE_CLASSES) + 1))
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    images = {im["id"]: im for im in data["images"]}
    assert len(images) == 20 and len({a["id"] for a in data["annotations"]}) == len(
        data["annotations"])
    for ann in data["annotations"]:
        assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
        image = images[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], image["height"], image["width"])
        assert mask.shape == (image["height"], image["width"])
        assert ann["bbox"] == _mask_extent(mask)
        assert ann["area"] == mask.sum() > 0
    # every class appears, the thin ones included
    present = {a["category_id"] for a in data["annotations"]}
    assert present == set(range(1, len(SHAPE_CLASSES) + 1))


def test_round_trip_through_coco_dataset(shapes_split):
    out, ann_file = shapes_split
    dataset = CocoDataset(ann_file, out / "train")
    assert len(dataset) == 20 and dataset.class_names[1:] == list(SHAPE_CLASSES)
    split_key = zlib.crc32(b"train")
    for index in (0, 5, 19):
        image, target = dataset[index]
        assert target["image_id"] == index + 1
        # regenerate the image in memory with the documented per-image generator
        rng = np.random.default_rng([7, split_key, index])
        num_objects = int(rng.integers(1, 6))
        pixels, masks, labels = generate_shapes_image(rng, (48, 64), num_objects, SHAPE_CLASSES,
                                                      min_size=8.0)
        np.testing.assert_array_equal(image, pixels.transpose(2, 0, 1) / np.float32(255.0))
        np.testing.assert_array_equal(target["masks"], masks)
        np.testing.assert_array_equal(target["labels"], labels)
        for box, mask in zip(target["boxes"], masks):
            x, y, w, h = _mask_extent(mask)
            np.testing.assert_array_equal(box, [x, y, x + w, y + h])
        assert not target["iscrowd"].any()
    with Image.open(out / "train" / "000001.png") as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (64, 48)


def test_alignment_settings_make_small_and_thin_objects(tmp_path):
    settings_ = alignment_settings(stride=16)
    assert {"ring", "cross"} <= set(settings_["classes"]) <= set(SHAPE_CLASSES)
    assert set(settings_["classes"]) - {"square"} <= set(THIN_CLASSES)
    ann_file = make_shapes_dataset(tmp_path, 12, image_size=64, seed=1, max_objects=5,
                                   **settings_)
    data = json.loads(ann_file.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    print("objects", len(sides), "below one stride:", np.mean(sides < 16))
    assert np.mean(sides < 16) > 0.3
    # a thin stroke: the ring's mask is much smaller than its box
    rings = [a for a in data["annotations"] if names[a["category_id"]] == "ring"]
    assert rings and all(a["area"] < 0.6 * a["bbox"][2] * a["bbox"][3] for a in rings)


def test_zero_images_and_zero_objects(tmp_path):
    ann_file = make_shapes_dataset(tmp_path, 0, image_size=16)
    assert len(CocoDataset(ann_file, tmp_path / "train")) == 0
    ann_file = make_shapes_dataset(tmp_path, 2, image_size=16, min_objects=0, max_objects=0,
                                   split_name="blank")
    image, target = CocoDataset(ann_file, tmp_path / "blank")[1]
    assert image.shape == (3, 16, 16) and target["boxes"].shape == (0, 4)
    assert target["masks"].shape == (0, 16, 16)
