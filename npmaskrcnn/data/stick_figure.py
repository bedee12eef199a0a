"""The body model of a stick figure: a random pose and the 17 COCO keypoints it puts where.

A figure is a filled torso whose four corners are the shoulders and hips, capsule limbs bending
at the elbows and knees, round hands, feet, and a round head with two eyes, a nose and two ears
on its sphere. :func:`random_pose` draws joint angles within plausible ranges;
:func:`figure_skeleton` turns a pose and a height into the keypoints and the drawing primitives
of :mod:`npmaskrcnn.data.raster`. The images and the dataset are :mod:`npmaskrcnn.data.figures`.
Host-only NumPy code; no gradient flows here.
"""

from __future__ import annotations

import numpy as np

from .keypoints import KEYPOINT_NAMES

# body proportions, as fractions of the figure height (top of the head to the ankles)
PROPORTIONS = {
    "head_radius": 0.075, "neck": 0.04, "torso": 0.30, "shoulder_half": 0.12,
    "hip_half": 0.08, "upper_arm": 0.18, "forearm": 0.16, "thigh": 0.24, "shin": 0.23,
    "limb_width": 0.055, "foot": 0.07,
}
# face points on the head sphere: (azimuth, elevation) in radians; + azimuth = the
# person's left (the image's right for a figure facing the camera)
FACE = {"nose": (0.0, -0.15), "left_eye": (0.5, 0.25), "right_eye": (-0.5, 0.25),
        "left_ear": (1.45, 0.05), "right_ear": (-1.45, 0.05)}
K = {name: k for k, name in enumerate(KEYPOINT_NAMES)}


def unit_direction(angle):
    """Unit vector at ``angle`` radians from straight down (image +y), turning toward +x."""
    return np.array([np.sin(angle), np.cos(angle)])


def random_pose(rng: np.random.Generator) -> dict:
    """Joint angles (radians) within plausible ranges, and limb foreshortening factors.

    Angles are measured from straight down; for a limb of side s (+1 left, -1 right) a
    positive angle turns it away from the body's midline.
    """
    deg = np.pi / 180
    pose = {
        "lean": rng.uniform(-20, 20) * deg,  # torso from vertical
        "head_tilt": rng.uniform(-25, 25) * deg,
        "head_yaw": rng.uniform(-70, 70) * deg,
    }
    for side in ("left", "right"):
        pose[f"{side}_arm"] = rng.uniform(-25, 170) * deg  # 0 hanging, 90 sideways, 170 up
        pose[f"{side}_elbow"] = rng.uniform(-140, 140) * deg  # forearm relative to upper arm
        pose[f"{side}_leg"] = rng.uniform(-15, 55) * deg  # leg spread
        pose[f"{side}_knee"] = rng.uniform(-70, 70) * deg
        for part in ("upper_arm", "forearm", "thigh", "shin"):
            pose[f"{side}_{part}_scale"] = rng.uniform(0.7, 1.0)  # out-of-plane turn
    return pose


def figure_skeleton(pose: dict, height: float, proportions=None):
    """The 17 keypoints and the drawing primitives of one figure with its hips at (0, 0).

    Args:
        pose: from :func:`random_pose`.
        height: figure height in pixels (head top to ankles with straight legs).
        proportions: lengths as fractions of ``height`` (default :data:`PROPORTIONS`).
    Returns:
        keypoints: (17, 2) x, y in COCO order.
        parts: dict part -> list of primitives, each ``("disc", cx, cy, r)``,
            ``("capsule", x0, y0, x1, y1, half_width)`` or ``("polygon", (4, 2) corners)``;
            parts ``legs``, ``torso``, ``head``, ``arms`` (drawn in this order) and
            ``features`` (eyes and nose, painted on the head; not part of the mask).
        hidden: (17,) bool, the face points turned away behind the head.
    """
    p = {k: v * height for k, v in (proportions or PROPORTIONS).items()}
    lean = pose["lean"]
    up, perp = -unit_direction(lean), np.array([np.cos(lean), -np.sin(lean)])  # perp: to +x
    kp = np.zeros((17, 2))
    hips, shoulders = np.zeros(2), up * p["torso"]
    half_w = max(p["limb_width"], 2.5) / 2
    parts = {"legs": [], "torso": [], "head": [], "arms": [], "features": []}
    for side, s in (("left", 1.0), ("right", -1.0)):
        shoulder = shoulders + s * perp * p["shoulder_half"]
        hip = hips + s * perp * p["hip_half"]
        arm = lean + s * pose[f"{side}_arm"]
        elbow = shoulder + p["upper_arm"] * pose[f"{side}_upper_arm_scale"] * unit_direction(arm)
        fore = arm + s * pose[f"{side}_elbow"]
        wrist = elbow + p["forearm"] * pose[f"{side}_forearm_scale"] * unit_direction(fore)
        leg = lean / 2 + s * pose[f"{side}_leg"]
        knee = hip + p["thigh"] * pose[f"{side}_thigh_scale"] * unit_direction(leg)
        shin = leg - s * pose[f"{side}_knee"]
        ankle = knee + p["shin"] * pose[f"{side}_shin_scale"] * unit_direction(shin)
        toe = ankle + p["foot"] * unit_direction(s * np.pi / 2 - s * 0.3)  # foot points outward
        for name, xy in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                         ("hip", hip), ("knee", knee), ("ankle", ankle)):
            kp[K[f"{side}_{name}"]] = xy
        leg_w = half_w * 1.15
        parts["legs"] += [("capsule", *hip, *knee, leg_w), ("capsule", *knee, *ankle, leg_w),
                          ("capsule", *ankle, *toe, leg_w * 0.8)]
        parts["arms"] += [("capsule", *shoulder, *elbow, half_w),
                          ("capsule", *elbow, *wrist, half_w), ("disc", *wrist, half_w * 1.4)]
    corners = kp[[K["left_shoulder"], K["right_shoulder"], K["right_hip"], K["left_hip"]]]
    parts["torso"].append(("polygon", corners))
    parts["torso"] += [("capsule", *a, *b, half_w) for a, b in zip(corners, np.roll(corners, 1, 0))]
    # the head: a disc above the shoulders, turned by the tilt; the face on its sphere
    tilt = lean + pose["head_tilt"]
    head_up, head_perp = -unit_direction(tilt), np.array([np.cos(tilt), -np.sin(tilt)])
    r = p["head_radius"]
    centre = shoulders + up * p["neck"] + head_up * r
    parts["torso"].append(("capsule", *shoulders, *centre, half_w))  # the neck
    parts["head"].append(("disc", *centre, r))
    hidden = np.zeros(17, dtype=bool)
    for name, (azimuth, elevation) in FACE.items():
        a = azimuth + pose["head_yaw"]
        xy = centre + r * (np.sin(a) * np.cos(elevation) * head_perp + np.sin(elevation) * head_up)
        kp[K[name]] = xy
        facing = np.cos(a) * np.cos(elevation)
        hidden[K[name]] = facing < -0.05
        if "ear" in name and not hidden[K[name]]:
            parts["head"].append(("disc", *xy, 0.3 * r))
        elif "ear" not in name and not hidden[K[name]]:  # eyes and nose seen from the front
            parts["features"].append(("disc", *xy, max(0.13 * r, 0.6)))
    return kp, parts, hidden
