"""COCO person keypoints: the 17 names, the skeleton, the category record and the OKS sigmas.

What the COCO person-keypoints files (``person_keypoints_*.json``) say about a person, shared by
the stick-figure generator (:mod:`npmaskrcnn.data.figures`), the evaluation (COCOeval's OKS) and
the drawings (:mod:`npmaskrcnn.visualize`). The left/right swap of a horizontal flip is
``npmaskrcnn.data.transforms.COCO_KEYPOINT_FLIP``. Also the checks of a keypoint record that
:class:`~npmaskrcnn.data.coco.CocoDataset` runs. Host-only; no gradient flows here.
"""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO's person skeleton: pairs of 1-based keypoint indices
SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
PERSON_CATEGORY = {
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(p) for p in SKELETON],
}
# COCOeval's per-keypoint OKS constants sigma_k (pycocotools ``Params.kpt_oks_sigmas``, the
# spread of human annotators on COCO, Ronchi & Perona 2017): OKS = mean over labelled
# keypoints of exp(-d_k^2 / (2 s^2 (2 sigma_k)^2)), s^2 the object's area
COCO_OKS_SIGMAS = tuple(s / 10 for s in (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
                                          0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89))


def keypoints_problem(keypoints, num_keypoints: int) -> str | None:
    """What is wrong with an annotation's ``keypoints`` ``[x1, y1, v1, ...]``, or None: not a
    list of ``3 * num_keypoints`` finite numbers, or a visibility other than COCO's 0 (not
    labelled), 1 (labelled, occluded), 2 (labelled, visible)."""
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
        size = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        return f"{size} keypoint values, expected 3 x {num_keypoints}"
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in keypoints):
        return "keypoints must be finite numbers [x1, y1, v1, ...]"
    visibility = np.asarray(keypoints[2::3])
    bad = np.flatnonzero(~np.isin(visibility, (0, 1, 2)))
    if bad.size:
        return (f"keypoint {int(bad[0])} has visibility {visibility[bad[0]]:g}; COCO's are 0 (not "
                "labelled), 1 (labelled, occluded) or 2 (labelled, visible)")
    return None


def outside_image(keypoints, height: int, width: int):
    """(..., K) bool: the labelled keypoints (v > 0) of (..., K, 3) ``x, y, v`` that lie
    outside the image ``[0, width] x [0, height]``."""
    x, y = keypoints[..., 0], keypoints[..., 1]
    return (keypoints[..., 2] > 0) & ((x < 0) | (x > width) | (y < 0) | (y > height))
