"""Skeleton drawings (npmaskrcnn/skeletons.py): which joints and limbs are drawn, and how."""

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from npmaskrcnn.data.keypoints import SKELETON
from npmaskrcnn.skeletons import draw_skeletons, joint_sides
from npmaskrcnn.visualize import show_gt_vs_pred


def person(v=2):
    """17 keypoints on a line, all with visibility ``v``."""
    return np.stack([np.linspace(5, 40, 17), np.linspace(5, 60, 17), np.full(17, float(v))], 1)


def test_sides_follow_cocos_names():
    sides = joint_sides(17)
    assert sides[0] == "middle" and sides[5] == "left" and sides[6] == "right"
    assert sides.count("left") == sides.count("right") == 8
    assert joint_sides(3) == ["middle"] * 3


def test_labelled_joints_and_limbs_between_them():
    """Person 0: every keypoint visible; person 1: the nose unlabelled (its limbs 1-2 and 1-3
    go) and the left eye occluded (hollow); nothing of a (0, 0, 0) keypoint is drawn."""
    fig = Figure()
    ax = fig.add_subplot()
    second = person()
    second[0] = 0
    second[1, 2] = 1
    drawn = draw_skeletons(ax, np.stack([person(), second]), ["red", "blue"])
    assert drawn == 17 + 16
    limbs = next(c for c in ax.collections if isinstance(c, LineCollection))
    assert len(limbs.get_segments()) == len(SKELETON) + len(SKELETON) - 2
    joints = ax.collections[-1]
    faces = joints.get_facecolors()
    assert len(joints.get_offsets()) == 33
    hollow = [i for i, f in enumerate(faces) if f[3] == 0]
    assert hollow == [17]  # the second person's left eye, its first drawn joint
    assert tuple(faces[5][:3]) == (1.0, 1.0, 1.0) and tuple(faces[6][:3]) == (0.0, 0.0, 0.0)


def test_predicted_keypoints_are_visible_and_can_be_thresholded():
    fig = Figure()
    ax = fig.add_subplot()
    predicted = person(v=1)  # torchvision's convention: v = 1 for every predicted keypoint
    scores = np.linspace(-1, 1, 17)[None]
    assert draw_skeletons(ax, predicted[None], ["green"], scores=scores, score_thresh=0.0,
                          predicted=True) == 9  # the scores 0, 0.125, ..., 1
    faces = ax.collections[-1].get_facecolors()
    assert all(f[3] > 0 for f in faces)  # filled, not hollow


def test_no_person_and_other_keypoints(tmp_path):
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_skeletons(ax, np.zeros((0, 17, 3)), []) == 0
    three = np.array([[[1.0, 1.0, 2], [5.0, 5.0, 2], [9.0, 2.0, 2]]])
    assert draw_skeletons(ax, three, ["red"]) == 3
    assert not any(isinstance(c, LineCollection) for c in ax.collections)  # no COCO limbs
    image = np.full((3, 64, 48), 0.5)
    target = {"boxes": np.array([[4.0, 4.0, 42.0, 62.0]]), "labels": np.array([1]),
              "keypoints": person()[None]}
    pred = {**target, "scores": np.array([0.9]), "keypoints": person(v=1)[None]}
    show_gt_vs_pred(image, target, pred, ["__background__", "person"],
                    path=tmp_path / "skeletons.png")
    assert (tmp_path / "skeletons.png").stat().st_size > 0
