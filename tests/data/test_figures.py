"""Tests of npmaskrcnn.data.figures: the stick-figure person-keypoint set."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from npmaskrcnn.data.coco import CocoDataset, decode_segmentation
from npmaskrcnn.data.figures import (
    KEYPOINT_NAMES,
    PERSON_CATEGORY,
    SKELETON,
    figure_skeleton,
    figures_paths,
    generate_figures_image,
    make_figures_dataset,
    random_pose,
)
from npmaskrcnn.data.transforms import COCO_KEYPOINT_FLIP

COCO_MINI = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_mini"


def _neutral_pose():
    pose = {k: 0.0 for k in random_pose(np.random.default_rng(0))}
    pose.update({k: 1.0 for k in pose if k.endswith("_scale")})
    return pose


def _mask_extent(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


# ----------------------------------------------------------------------------- COCO's person
@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="shared coco_mini data not present")
def test_category_is_cocos_person():
    real = json.loads((COCO_MINI / "annotations" / "person_keypoints.json").read_text())
    person = next(c for c in real["categories"] if c["name"] == "person")
    assert PERSON_CATEGORY == person


def test_names_skeleton_and_flip_agree():
    assert len(KEYPOINT_NAMES) == 17 and len(SKELETON) == 19
    # the loader's left/right flip maps every name to its mirror name
    for k, j in enumerate(COCO_KEYPOINT_FLIP):
        assert KEYPOINT_NAMES[j] == KEYPOINT_NAMES[k].replace("left", "@").replace(
            "right", "left").replace("@", "right")


# ----------------------------------------------------------------------------- geometry
def test_neutral_figure_hand_computed():
    # height 100, standing straight, facing the camera: the person's left on the image right
    kp, parts, hidden = figure_skeleton(_neutral_pose(), 100.0)
    by_name = dict(zip(KEYPOINT_NAMES, kp))
    np.testing.assert_allclose(by_name["left_hip"], [8, 0], atol=1e-12)
    np.testing.assert_allclose(by_name["right_shoulder"], [-12, -30], atol=1e-12)
    np.testing.assert_allclose(by_name["left_elbow"], [12, -12], atol=1e-12)  # 18 down
    np.testing.assert_allclose(by_name["left_wrist"], [12, 4], atol=1e-12)  # 16 further
    np.testing.assert_allclose(by_name["right_knee"], [-8, 24], atol=1e-12)
    np.testing.assert_allclose(by_name["right_ankle"], [-8, 47], atol=1e-12)
    # head centre 30 + 4 + 7.5 above the hips; the nose just below it, the eyes above it
    np.testing.assert_allclose(by_name["nose"], [0, -41.5 + 7.5 * math.sin(0.15)], atol=1e-12)
    assert by_name["left_eye"][0] == pytest.approx(7.5 * math.sin(0.5) * math.cos(0.25))
    assert by_name["left_ear"][0] > by_name["left_eye"][0] > 0 > by_name["right_eye"][0]
    assert not hidden.any()
    # the head turned to the person's left: the nose moves to the image's right and the
    # left ear goes behind the head (and only it)
    pose = dict(_neutral_pose(), head_yaw=0.6)
    kp, _, hidden = figure_skeleton(pose, 100.0)
    assert kp[KEYPOINT_NAMES.index("nose"), 0] > 0
    assert [KEYPOINT_NAMES[k] for k in np.flatnonzero(hidden)] == ["left_ear"]
    assert {"legs", "torso", "head", "arms", "features"} == set(parts)


# ----------------------------------------------------------------------------- images
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.integers(64, 160), figures=st.integers(0, 4),
       distractors=st.integers(0, 3))
def test_generated_figures_are_consistent(seed, size, figures, distractors):
    rng = np.random.default_rng(seed)
    image, masks, kps = generate_figures_image(rng, (size, size + 16), figures, distractors)
    g = len(masks)
    assert image.shape == (size, size + 16, 3) and image.dtype == np.uint8
    assert masks.shape == (g, size, size + 16) and kps.shape == (g, 17, 3) and g <= figures
    assert masks.sum(axis=0).max(initial=0) <= 1  # visible parts do not overlap
    assert np.all(masks.sum(axis=(1, 2)) >= 40)
    v = kps[..., 2]
    assert set(np.unique(v)) <= {0.0, 1.0, 2.0}
    labelled = v > 0
    x, y = kps[..., 0], kps[..., 1]
    assert np.all((x[labelled] >= 0) & (x[labelled] < size + 16))  # inside the image
    assert np.all((y[labelled] >= 0) & (y[labelled] < size))
    assert np.all(kps[~labelled] == 0)  # COCO: not labelled is (0, 0, 0)


def test_visible_keypoints_lie_on_their_figure():
    on, total = 0, 0
    for i in range(30):
        rng = np.random.default_rng([5, i])
        _, masks, kps = generate_figures_image(rng, 128, 3, 2)
        for mask, kp in zip(masks, kps):
            for x, y in kp[kp[:, 2] == 2, :2]:
                on += int(mask[int(y), int(x)])
                total += 1
    print(f"visible keypoints on their figure's visible mask: {on}/{total}")
    assert total > 500 and on / total > 0.97


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_height"):
        generate_figures_image(np.random.default_rng(0), 64, 1, min_height=50, max_height=20)
    with pytest.raises(ValueError, match="min_figures"):
        make_figures_dataset("unused", 1, min_figures=3, max_figures=2)


# ----------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def figures_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, make_figures_dataset(out, 40, image_size=(96, 128), seed=3)


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_determinism(figures_split, tmp_path):
    out, ann_file = figures_split
    assert (ann_file, out / "train") == figures_paths(out, "train")
    assert ann_file.name == "person_keypoints_train.json"
    make_figures_dataset(tmp_path / "again", 40, image_size=(96, 128), seed=3)
    first = _all_files(out)
    assert len(first) == 41 and first == _all_files(tmp_path / "again")
    short = make_figures_dataset(tmp_path / "short", 2, image_size=(96, 128), seed=3)
    assert (short.parents[1] / "train" / "000002.png").read_bytes() == first["train/000002.png"]
    other = make_figures_dataset(tmp_path / "other", 1, image_size=(96, 128), seed=4)
    assert (other.parents[1] / "train" / "000001.png").read_bytes() != first["train/000001.png"]


def test_coco_fields(figures_split):
    out, ann_file = figures_split
    data = json.loads(ann_file.read_text())
    assert data["categories"] == [PERSON_CATEGORY]
    images = {im["id"]: im for im in data["images"]}
    assert len(data["annotations"]) > 40
    for ann in data["annotations"]:
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0
        assert len(ann["keypoints"]) == 51
        v = np.array(ann["keypoints"][2::3])
        assert ann["num_keypoints"] == int((v > 0).sum())
        image = images[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], image["height"], image["width"])
        assert ann["area"] == mask.sum() > 0 and ann["bbox"] == _mask_extent(mask)
    # pycocotools and the package's own loader read it
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    assert coco.loadCats(1)[0]["skeleton"] == PERSON_CATEGORY["skeleton"]
    dataset = CocoDataset(ann_file, out / "train")
    image, target = dataset[0]
    assert dataset.num_keypoints == 17 and dataset.class_names == ["__background__", "person"]
    assert target["keypoints"].shape == (len(target["boxes"]), 17, 3)
    assert image.shape == (3, 96, 128)


def test_cocoeval_of_the_ground_truth_against_itself(figures_split):
    _, ann_file = figures_split
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                    "score": 1.0} for a in gt.dataset["annotations"] if a["num_keypoints"] > 0]
        ev = COCOeval(gt, gt.loadRes(results), iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print("keypoint AP of the ground truth against itself:", ev.stats[0])
    assert ev.stats[0] == pytest.approx(1.0)


def test_visibility_statistics(figures_split):
    _, ann_file = figures_split
    data = json.loads(ann_file.read_text())
    v = np.array([a["keypoints"][2::3] for a in data["annotations"]])  # (G, 17)
    share = {flag: float(np.mean(v == flag)) for flag in (0, 1, 2)}
    per_image = np.bincount([a["image_id"] for a in data["annotations"]])
    print("visibility shares", share, "figures per image", per_image[1:].mean())
    # the proportions the defaults are tuned for: about 80 % visible, 8 % occluded but
    # labelled, 12 % not labelled (outside the image, or occluded and left unlabelled)
    assert 0.7 < share[2] < 0.9
    assert 0.03 < share[1] < 0.15
    assert 0.05 < share[0] < 0.2
    assert per_image[1:].max() >= 3  # several figures per image
    # distractors are not annotated: every annotation is a person
    assert {a["category_id"] for a in data["annotations"]} == {1}


@pytest.mark.parametrize("covered", ["a limb", "nothing", "everything"])
def test_painting_only_the_covered_box_changes_no_pixel(covered):
    """``_paint`` blends only within the bounding box of the covered pixels: bit for bit
    the whole-image blend ``image * (1 - c) + colour * c``, and it paints in place."""
    from npmaskrcnn.data.figures import _paint
    from npmaskrcnn.data.raster import primitives_coverage

    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (40, 50, 3))
    coverage = {"a limb": primitives_coverage([("capsule", 12.3, 30.1, 31.7, 8.4, 2.6)],
                                              (40, 50)),
                "nothing": np.zeros((40, 50)), "everything": np.ones((40, 50))}[covered]
    colour = np.array([0.9, 0.2, 0.4])
    whole = image * (1 - coverage[..., None]) + colour * coverage[..., None]
    painted = _paint(image, coverage, colour)
    assert painted is image
    np.testing.assert_array_equal(painted, whole)
    if covered == "a limb":  # the box is a part of the image
        assert 0 < np.count_nonzero(coverage.any(axis=1)) < 40
