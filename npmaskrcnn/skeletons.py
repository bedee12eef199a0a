"""Drawing person keypoints: each person's skeleton in its colour, the joints by side.

A keypoint model's detections carry ``keypoints`` (D, K, 3) ``x, y, v``; the ground truth
of a COCO person-keypoints file carries the same with COCO's visibility flags (0 = not
labelled, 1 = labelled but occluded, 2 = visible). :func:`draw_skeletons` draws, for every
person, the limbs of the skeleton (COCO's 19 pairs, :data:`~npmaskrcnn.data.keypoints.SKELETON`)
whose two ends are labelled, in the person's colour, and the labelled joints as dots: white
on the person's left side, black on the right, grey in the middle (the nose) -- so that a
left/right swap (the confusion a horizontal flip invites) shows at a glance. Occluded
keypoints (v = 1) are hollow. Predicted keypoints all have v = 1 in torchvision's
convention and are drawn as visible; ``scores`` (the heatmap logit at each keypoint) can
leave out those below ``score_thresh``. Host-only drawing code; no gradient flows here.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection

from .backend import asnumpy
from .data.keypoints import KEYPOINT_NAMES, SKELETON


def joint_sides(num_keypoints: int) -> list[str]:
    """"left", "right" or "middle" for each keypoint (COCO's names; "middle" for others)."""
    names = KEYPOINT_NAMES if num_keypoints == len(KEYPOINT_NAMES) else ("",) * num_keypoints
    return ["left" if n.startswith("left_") else "right" if n.startswith("right_") else
            "middle" for n in names]


def draw_skeletons(ax, keypoints, colors, skeleton=SKELETON, scores=None,
                   score_thresh=None, predicted: bool = False, size: float = 4.0) -> int:
    """Draw the skeletons of D persons on ``ax`` (in the image's pixel coordinates).

    Args:
        ax: a matplotlib Axes showing the image with ``extent=(0, W, H, 0)``.
        keypoints: (D, K, 3) ``x, y, v`` (NumPy or device array).
        colors: D colours, one per person (its limbs).
        skeleton: pairs of 1-based keypoint indices (COCO's ``skeleton``); limbs are drawn
            only for COCO's 17 keypoints or an explicitly given skeleton.
        scores: (D, K) keypoint scores, or None.
        score_thresh: with ``scores``, keypoints scoring below it are not drawn.
        predicted: the keypoints are a model's (every v is 1): drawn as visible.
        size: joint marker size, in points.
    Returns:
        The number of joints drawn.
    """
    kps = asnumpy(keypoints).reshape(len(colors), -1, 3) if len(colors) else np.zeros((0, 0, 3))
    labelled = kps[..., 2] > 0
    if scores is not None and score_thresh is not None:
        labelled &= asnumpy(scores).reshape(labelled.shape) >= score_thresh
    visible = labelled & ((kps[..., 2] >= 2) | predicted)
    sides = joint_sides(kps.shape[1])
    fill = {"left": "white", "right": "black", "middle": "0.6"}
    if kps.shape[1] != len(KEYPOINT_NAMES) and skeleton is SKELETON:
        skeleton = ()  # COCO's limbs mean nothing for other keypoints
    # one LineCollection for every limb and one scatter for every joint: a few artists
    # whatever the number of persons (a hundred detections draw in milliseconds)
    segments, limb_colors, points, faces, edges = [], [], [], [], []
    for person, color in enumerate(colors):
        xy = kps[person, :, :2]
        for a, b in skeleton:
            if labelled[person, a - 1] and labelled[person, b - 1]:
                segments.append(xy[[a - 1, b - 1]])
                limb_colors.append(color)
        for k in np.flatnonzero(labelled[person]):
            points.append(xy[k])
            faces.append(fill[sides[k]] if visible[person, k] else "none")
            edges.append(color)
    if segments:
        ax.add_collection(LineCollection(segments, colors=limb_colors, linewidths=1.6,
                                         capstyle="round"))
    if points:
        points = np.asarray(points)
        ax.scatter(points[:, 0], points[:, 1], s=size ** 2, c=faces, edgecolors=edges,
                   linewidths=1.0, zorder=3)
    return len(points)
