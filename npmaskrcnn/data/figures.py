"""A seeded synthetic person-keypoint dataset: stick figures on textured backgrounds.

Keypoint R-CNN (paper section 5) needs people with the 17 COCO keypoints. This set draws
*stick figures* -- a filled torso whose four corners are the shoulders and hips, capsule
limbs bending at the elbows and knees, round hands, feet, and a round head with two eyes,
a nose and two ears -- in random poses, so that keypoints train on a laptop CPU with no
download, the way :mod:`npmaskrcnn.data.shapes` does for masks. Every figure is a COCO
``person`` with COCO's keypoint names and skeleton (:data:`PERSON_CATEGORY`):

- poses: torso lean, arm abduction, elbow and knee bend, leg spread, head tilt and yaw drawn
  within plausible ranges (:func:`random_pose`), limbs foreshortened at random; figures are
  seen from the front, so the person's left side is on the image's right (as a COCO person
  facing the camera; a horizontal flip with the left/right swap keeps that convention);
- several figures per image with random heights, positions and colours, some partly out
  of the frame; distractors that are not persons (the shapes' squares, circles, triangles,
  rings and crosses, and bare sticks that look like limbs);
- occlusion: objects are drawn one over the other (figures and distractors in random
  order), and each annotation is what remains visible of its figure (as the shapes);
- visibility flags, as COCO: 2 = labelled and visible; 1 = labelled but occluded (covered
  by a later object, or an ear turned away behind the head); 0 = not labelled, with
  ``x = y = 0`` (outside the image, or occluded and -- with probability
  ``unlabelled_occluded`` -- left unlabelled, as COCO annotators often do).

Written the way COCO person keypoints are::

    out_dir/<split_name>/000001.png ...                       the images (RGB PNG)
    out_dir/annotations/person_keypoints_<split_name>.json    segmentation (RLE), bbox,
        area (of the visible mask), iscrowd 0, keypoints [x1, y1, v1, ...], num_keypoints

so the same data trains masks and keypoints together. Coordinates are continuous pixel
coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)); every labelled keypoint lies inside
the image. Host-only NumPy code; no gradient flows here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .keypoints import KEYPOINT_NAMES, PERSON_CATEGORY, SKELETON  # noqa: F401 - re-exported
from .raster import primitive_extent, primitives_coverage, shift_primitive
from .shapes import (
    SHAPE_CLASSES,
    _background,
    _pick_colour,
    mask_to_annotation,
    shape_coverage,
    write_generated_split,
)
from .stick_figure import figure_skeleton, random_pose, unit_direction

DISTRACTOR_KINDS = SHAPE_CLASSES + ("stick",)


def figures_paths(out_dir: str | os.PathLike, split_name: str = "train") -> tuple[Path, Path]:
    """``(ann_file, image_dir)`` of a split written by :func:`make_figures_dataset`."""
    out_dir = Path(out_dir)
    return out_dir / "annotations" / f"person_keypoints_{split_name}.json", out_dir / split_name


def _stick_distractor(rng, cx, cy, size, width):
    """A bare branch: 2-4 capsules of limb width, like a limb without a body."""
    prims, point = [], np.array([cx, cy])
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.uniform(-1.2, 1.2)
        nxt = point + size / 3 * unit_direction(angle)
        prims.append(("capsule", *point, *nxt, width / 2))
        point = nxt
    return prims


def _paint(image, coverage, colour):
    """Blend ``colour`` over ``image`` by coverage (anti-aliased edges), in place.

    ``image * (1 - c) + colour * c`` is the image itself where c = 0, so only the
    bounding box of the covered pixels is computed (a limb covers a few percent of the
    image: generating the figures' data took a quarter of its time here otherwise).
    """
    rows, cols = np.flatnonzero(coverage.any(axis=1)), np.flatnonzero(coverage.any(axis=0))
    if rows.size:
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        c = coverage[box][..., None]
        image[box] = image[box] * (1 - c) + colour * c
    return image


def _place_figure(rng, parts, allow_cut, cut_margin, image_size):
    """A random translation of a figure (hips at the origin) into the image: the figure
    lies inside it, or with ``allow_cut`` up to ``cut_margin`` of its extent outside.

    Returns the translated parts and the shift (dx, dy).
    """
    height, width = image_size
    ext = np.array([primitive_extent(p) for ps in parts.values() for p in ps])
    lo, hi = ext[:, :2].min(axis=0), ext[:, 2:].max(axis=0)
    margin = cut_margin * (hi - lo) if allow_cut else np.zeros(2)
    low, high = -lo - margin, np.array([width, height]) - hi + margin
    shift = rng.uniform(np.minimum(low, high), np.maximum(low, high))  # low > high: too big
    return {n: [shift_primitive(p, shift) for p in ps] for n, ps in parts.items()}, shift


def _distractor_coverage(rng, kind, size, stroke, angle, image_size):
    """Coverage of a distractor at a random centre: a shape of the shapes set or a stick."""
    height, width = image_size
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    if kind == "stick":
        return primitives_coverage(_stick_distractor(rng, cx, cy, size, stroke), image_size)
    return shape_coverage(kind, cx, cy, size, stroke, angle, image_size)


def _paint_figure(rng, image, placed, colours, min_contrast):
    """Paint a placed figure: legs, torso, head, face, then arms (over the body), each
    part's colour away from the background and the colours below (``colours`` grows)."""
    body = _pick_colour(rng, colours, min_contrast)
    legs = _pick_colour(rng, colours + [body], min_contrast * 0.6)
    head = _pick_colour(rng, colours + [body], min_contrast * 0.6)
    arms = np.clip(body * 0.7 + 0.3 * (body < 0.5), 0, 1)  # a shade of the body colour
    for part, colour in (("legs", legs), ("torso", body), ("head", head),
                         ("features", head * 0.3), ("arms", arms)):
        image = _paint(image, primitives_coverage(placed[part], image.shape[:2]), colour)
    colours += [body, legs, head]
    return image


def generate_figures_image(
    rng: np.random.Generator,
    image_size=(160, 160),
    num_figures: int = 2,
    num_distractors: int = 1,
    min_height: float | None = None,
    max_height: float | None = None,
    cut_fraction: float = 0.35,
    cut_margin: float = 0.45,
    unlabelled_occluded: float = 0.35,
    min_visible_area: int = 40,
    min_visible_fraction: float = 0.4,
    min_contrast: float = 0.35,
    noise: float = 0.02,
    max_tries: int = 20,
):
    """Draw one image of stick figures and distractors; return the figures' annotations.

    Objects (``num_figures`` figures and ``num_distractors`` distractors, in random order)
    are placed one over the other. As in :func:`~npmaskrcnn.data.shapes.generate_shapes_image`,
    a new object is accepted only if every earlier figure keeps at least
    ``min_visible_area`` pixels and ``min_visible_fraction`` of its own mask visible;
    otherwise it is moved (up to ``max_tries`` times) and then dropped.

    Args:
        rng: NumPy generator; the whole image is a function of its state.
        image_size: ``(H, W)`` or an int.
        num_figures, num_distractors: objects to try to place.
        min_height, max_height: figure height range in pixels (None: 35% and 85% of the
            short side); limbs are 5.5% of the height wide (at least 2.5 pixels).
        cut_fraction, cut_margin: share of figures that may leave the image, by up to
            ``cut_margin`` of their extent (their keypoints outside are not labelled).
        unlabelled_occluded: probability that an occluded keypoint (covered by a later
            object, or turned away behind the head) is not labelled (v = 0) rather than
            labelled as occluded (v = 1).
        min_contrast: least RGB distance of a colour from the background mean and from the
            colours below it. noise: std of the Gaussian pixel noise.
    Returns:
        ``(image (H, W, 3) uint8, masks (G, H, W) uint8, keypoints (G, 17, 3) float64)``:
        visible masks and COCO keypoints ``x, y, v`` of the placed figures, in drawing
        order, ``G <= num_figures``.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    short = min(height, width)
    min_height = 0.35 * short if min_height is None else min_height
    max_height = 0.85 * short if max_height is None else max_height
    if not 0 < min_height <= max_height:
        raise ValueError(f"need 0 < min_height <= max_height, got {min_height}, {max_height}")
    image = _background(rng, (height, width))
    colours = [image.reshape(-1, 3).mean(axis=0)]
    kinds = ["figure"] * num_figures + ["distractor"] * num_distractors
    rng.shuffle(kinds)
    figures = []  # dicts: full mask, visible mask, later (union of later objects), keypoints
    for kind in kinds:
        if kind == "figure":
            pose = random_pose(rng)
            size = rng.uniform(min_height, max_height)
            kp, parts, hidden = figure_skeleton(pose, size)
            allow_cut = rng.uniform() < cut_fraction
        else:
            dkind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
            size = rng.uniform(0.15, 0.45) * short
            stroke = max(2.5, size * rng.uniform(0.1, 0.2))
            angle = rng.uniform(0, np.pi / 2)
        for _ in range(max_tries):
            if kind == "figure":
                placed, shift = _place_figure(rng, parts, allow_cut, cut_margin, (height, width))
                body = placed["legs"] + placed["torso"] + placed["head"] + placed["arms"]
                coverage = primitives_coverage(body, (height, width))
            else:
                coverage = _distractor_coverage(rng, dkind, size, stroke, angle, (height, width))
            mask = coverage >= 0.5
            if kind == "figure" and mask.sum() < min_visible_area:
                continue
            if all((f["visible"] & ~mask).sum() >= max(min_visible_area,
                                                        min_visible_fraction * f["full"].sum())
                   for f in figures):
                break
        else:
            continue
        for f in figures:  # the new object covers part of every earlier figure
            f["visible"] &= ~mask
            f["later"] |= mask
        if kind == "figure":
            image = _paint_figure(rng, image, placed, colours, min_contrast)
            figures.append({"full": mask, "visible": mask.copy(), "later": np.zeros_like(mask),
                            "xy": kp + shift, "hidden": hidden})
        else:
            colour = _pick_colour(rng, colours, min_contrast)
            image = _paint(image, coverage, colour)
            colours.append(colour)
    image = image + rng.normal(0.0, noise, size=image.shape)
    image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    masks = np.zeros((0, height, width), np.uint8)
    keypoints = np.zeros((len(figures), 17, 3))
    if figures:
        masks = np.stack([f["visible"] for f in figures]).astype(np.uint8)
    for g, f in enumerate(figures):
        keypoints[g] = _visibility(rng, f, (height, width), unlabelled_occluded)
    return image, masks, keypoints


def _visibility(rng, figure, image_size, unlabelled_occluded):
    """(17, 3) COCO keypoints ``x, y, v`` of a placed figure (see the module docstring)."""
    height, width = image_size
    out = np.zeros((17, 3))
    for k, (x, y) in enumerate(np.round(figure["xy"], 2)):  # the precision of the JSON
        if not (0 <= x < width and 0 <= y < height):
            continue  # outside the image: not labelled, (0, 0, 0)
        occluded = figure["later"][int(y), int(x)] or figure["hidden"][k]
        if occluded and rng.uniform() < unlabelled_occluded:
            continue
        out[k] = (x, y, 1 if occluded else 2)
    return out


def make_figures_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    image_size=160,
    seed: int = 0,
    min_figures: int = 1,
    max_figures: int = 3,
    max_distractors: int = 2,
    split_name: str = "train",
    **image_kwargs,
) -> Path:
    """Generate a split of the stick-figure set as PNGs plus a COCO person-keypoints JSON.

    Image ``i`` is drawn from ``np.random.default_rng([seed, crc32(split_name), i])``, as
    the shapes: byte-identical files for the same arguments, the first ``n`` images
    independent of ``num_images``, different splits different.

    Args:
        out_dir: root folder (created); see :func:`figures_paths` for the layout.
        num_images: number of images.
        image_size: ``(H, W)`` or an int.
        seed: random seed.
        min_figures, max_figures: figures tried per image (uniform); occlusion may drop some.
        max_distractors: distractors tried per image, uniform in [0, max_distractors].
        split_name: name of the split (folder and JSON name).
        **image_kwargs: passed to :func:`generate_figures_image` (``min_height``,
            ``max_height``, ``cut_fraction``, ``unlabelled_occluded``, ...).
    Returns:
        The path of the annotation JSON.
    """
    if not 0 <= min_figures <= max_figures:
        raise ValueError(f"need 0 <= min_figures <= max_figures, got {min_figures}, {max_figures}")
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size

    def draw(rng):
        num_figures = int(rng.integers(min_figures, max_figures + 1))
        num_distractors = int(rng.integers(0, max_distractors + 1))
        image, masks, keypoints = generate_figures_image(
            rng, (height, width), num_figures, num_distractors, **image_kwargs)
        return image, [{"category_id": 1, **mask_to_annotation(mask), "iscrowd": 0,
                        "keypoints": [float(v) for v in kps.ravel()],
                        "num_keypoints": int((kps[:, 2] > 0).sum())}
                       for mask, kps in zip(masks, keypoints)]

    generator = {"seed": seed, "image_size": [height, width], "min_figures": min_figures,
                 "max_figures": max_figures, "max_distractors": max_distractors}
    generator.update(image_kwargs)
    info = {"description": f"npmaskrcnn synthetic stick figures, split {split_name!r}",
            "version": "1.0", "contributor": "npmaskrcnn.data.figures", "generator": generator}
    return write_generated_split(figures_paths(out_dir, split_name), split_name, num_images,
                                 seed, (height, width), draw, info, [PERSON_CATEGORY])
