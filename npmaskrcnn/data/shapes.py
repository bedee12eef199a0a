"""A seeded synthetic instance-segmentation dataset: shapes on textured backgrounds.

Each image holds a few instances of a few classes -- ``square``, ``circle``, ``triangle`` and
two classes with thin structure, ``ring`` and ``cross``, whose masks are only a few pixels wide,
so that a mask is only right when the RoI features are pixel-aligned (the reason for RoIAlign,
paper section 3). The default set (:data:`DEFAULT_CLASSES`, what ``npmaskrcnn train`` and
``make-shapes`` generate unless told otherwise) has squares, circles, triangles and rings;
crosses are used by the RoI ablation (:func:`alignment_settings`) or on request; the
mask-loss ablation adds classes that share an outline with another one (rounded squares,
holed crosses) and places objects over objects of another class
(:func:`competition_settings`). Objects have random sizes (log-uniform, plus a share of
objects smaller than a feature stride), random colours, sub-pixel positions, and overlap
one another: a later object is drawn over the earlier ones, and every annotation is the
instance's *visible* part.

The set is written the way COCO is, so that it is loaded through exactly the same path as real
data (:class:`npmaskrcnn.data.coco.CocoDataset`)::

    out_dir/<split_name>/000001.png ...                 the images (RGB PNG)
    out_dir/annotations/instances_<split_name>.json     COCO instances: RLE masks, iscrowd 0

This is host-only NumPy code; no gradient flows anywhere here.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from ..files import atomic_write
from .shape_geometry import (  # noqa: F401  (re-exported: the shapes' public names)
    ALL_CLASSES,
    COMPETING_CLASSES,
    SHAPE_CLASSES,
    THIN_CLASSES,
    TWIN_CLASSES,
    shape_coverage,
)

DEFAULT_CLASSES = ("square", "circle", "triangle", "ring")


def shapes_paths(out_dir: str | os.PathLike, split_name: str = "train") -> tuple[Path, Path]:
    """``(ann_file, image_dir)`` of a split written by :func:`make_shapes_dataset`."""
    out_dir = Path(out_dir)
    return out_dir / "annotations" / f"instances_{split_name}.json", out_dir / split_name


def shapes_settings(ann_file: str | os.PathLike) -> dict | None:
    """The settings a split was generated with, read back from its annotation JSON, or None
    when the file is missing or was not written by :func:`make_shapes_dataset`.

    Returns:
        The ``info.generator`` record (``seed``, ``image_size``, object counts and sizes, ...)
        with ``num_images`` and ``classes`` taken from the file's images and categories.
        Compare it with what a command asks for before reusing generated data.
    """
    try:
        data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
        settings = dict(data["info"]["generator"])
        settings["num_images"] = len(data["images"])
        settings["classes"] = [c["name"] for c in data["categories"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings


def alignment_settings(stride: int = 16) -> dict:
    """Keyword arguments for a set where pixel alignment matters at a given feature stride.

    Half of the objects are smaller than one ``stride`` cell and the thin classes have strokes
    of 1-2 pixels, so a quantised RoI (RoIPool's rounding to the ``stride`` grid) misplaces
    them by a large fraction of their size. Pass as ``make_shapes_dataset(..., **settings)``.
    """
    return {
        "classes": ("square", "ring", "cross"),
        "min_size": max(stride // 2, 6),
        "small_max_size": stride,
        "small_fraction": 0.5,
        "thin_width": (1.0, 2.0),
    }


def competition_settings(stride: int = 16, overlap: float = 0.5) -> dict:
    """:func:`alignment_settings` with classes that compete: the data of Table 2b.

    Six classes in three pairs that share an outline (:data:`COMPETING_CLASSES`: square /
    rounded square, disc / ring, cross / holed cross), and each object placed over an
    earlier object of another class with probability ``overlap`` (see
    :func:`generate_shapes_image`), so that a RoI often holds two classes that look alike.
    """
    return {**alignment_settings(stride), "classes": COMPETING_CLASSES, "overlap": overlap}


def overlaps_another_class(boxes, labels, min_fraction: float = 0.1) -> np.ndarray:
    """(G,) bool: whether each object's box overlaps the box of an object of another class
    by at least ``min_fraction`` of the smaller of the two boxes (so that its RoI holds
    pixels of both). ``boxes`` (G, 4) ``[x1, y1, x2, y2]`` of one image, ``labels`` (G,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels)
    w = np.clip(np.minimum(boxes[:, None, 2], boxes[None, :, 2])
                - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0, None)  # (G, G)
    h = np.clip(np.minimum(boxes[:, None, 3], boxes[None, :, 3])
                - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    smaller = np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    other = labels[:, None] != labels[None, :]
    return ((w * h >= min_fraction * smaller) & other).any(axis=1)


def _smooth_noise(rng, image_size, cells):
    """(H, W) values in [0, 1]: a random ``cells x cells`` grid, bilinearly upsampled."""
    height, width = image_size
    grid = rng.uniform(0.0, 1.0, size=(cells + 1, cells + 1))
    gy, gx = np.linspace(0, cells, height), np.linspace(0, cells, width)
    rows = np.stack([np.interp(gx, np.arange(cells + 1), g) for g in grid])  # (cells+1, W)
    return np.stack([np.interp(gy, np.arange(cells + 1), c) for c in rows.T], axis=1)  # (H, W)


def _background(rng, image_size):
    """(H, W, 3) float background: solid, linear gradient, smooth noise, or stripes."""
    height, width = image_size
    kind = rng.integers(4)
    base = rng.uniform(0.0, 1.0, size=3)
    if kind == 0:
        weight = np.zeros((height, width))
        other = base
    elif kind == 1:
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        ramp = np.cos(theta) * xx / max(width - 1, 1) + np.sin(theta) * yy / max(height - 1, 1)
        weight = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
        other = rng.uniform(0.0, 1.0, size=3)
    elif kind == 2:
        weight = _smooth_noise(rng, image_size, cells=int(rng.integers(3, 9)))
        other = rng.uniform(0.0, 1.0, size=3)
    else:
        period = rng.uniform(6.0, 16.0)
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period)
        # low-contrast stripes: texture, not objects
        other = np.clip(base + rng.uniform(-0.2, 0.2, size=3), 0.0, 1.0)
    return base * (1 - weight[..., None]) + other * weight[..., None]


def _pick_colour(rng, avoid, min_distance, tries=50):
    """An RGB colour at least ``min_distance`` (Euclidean, in [0,1]^3) from every colour in
    ``avoid``; the farthest of ``tries`` candidates when none is far enough."""
    best, best_distance = None, -1.0
    for _ in range(tries):
        colour = rng.uniform(0.0, 1.0, size=3)
        distance = min((np.linalg.norm(colour - a) for a in avoid), default=np.inf)
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _draw_size(rng, min_size, max_size, small_fraction, small_max_size):
    """Object size: with probability ``small_fraction`` uniform in [min_size, small_max_size]
    (objects below a feature stride), otherwise log-uniform in [min_size, max_size]."""
    if rng.uniform() < small_fraction:
        return rng.uniform(min_size, max(min_size, min(small_max_size, max_size)))
    return float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))


def generate_shapes_image(
    rng: np.random.Generator,
    image_size=(128, 128),
    num_objects: int = 3,
    classes=DEFAULT_CLASSES,
    min_size: float = 10.0,
    max_size: float | None = None,
    small_fraction: float = 0.2,
    small_max_size: float = 16.0,
    thin_width=None,
    rotate: bool = False,
    overlap: float = 0.0,
    min_visible_area: int = 12,
    min_visible_fraction: float = 0.3,
    min_contrast: float = 0.35,
    noise: float = 0.02,
    max_tries: int = 20,
):
    """Draw one image and the visible mask of each of its instances.

    Objects are placed one after the other, each on top of the previous ones. A new object is
    accepted only if every earlier instance keeps a visible area of at least
    ``min_visible_area`` pixels *and* ``min_visible_fraction`` of its own full mask; otherwise it
    is moved (new position) up to ``max_tries`` times and then dropped. So each instance in the
    image is labelled, and each label is what can be seen of it.

    Args:
        rng: NumPy generator; the whole image is a function of its state.
        image_size: ``(H, W)`` or an int.
        num_objects: objects to try to place (fewer when some are dropped).
        classes: names from :data:`ALL_CLASSES`; label ``k`` (1-based) is ``classes[k-1]``.
        min_size, max_size: object size range in pixels (``max_size`` None: half the short
            side, at least ``min_size``).
        small_fraction, small_max_size: share of objects drawn in ``[min_size,
            small_max_size]`` (smaller than a stride-16 cell by default).
        thin_width: ``(lo, hi)`` stroke width of ring / cross in pixels; None: 12-25% of the
            object size, at least 1.5 pixels.
        rotate: rotate squares, triangles and crosses by a random angle.
        overlap: probability that an object is placed over an earlier object of another
            class (its centre within 0.3 x the sum of the two sizes of that object's
            centre, per axis, so that their boxes overlap); 0 places every object at random
            and draws nothing more from ``rng`` (the default data stay as they were).
        min_contrast: least RGB distance of an object colour from the background mean and from
            the colours of the objects below it.
        noise: standard deviation of the Gaussian pixel noise (on [0, 1] intensities).
    Returns:
        ``(image (H, W, 3) uint8, masks (G, H, W) uint8, labels (G,) int64)``, masks in drawing
        order, ``G <= num_objects``.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    max_size = max(min(height, width) / 2.0, min_size) if max_size is None else max_size
    if not 0 < min_size <= max_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}")
    image = _background(rng, (height, width))
    colours = [image.reshape(-1, 3).mean(axis=0)]
    full_masks, visible, labels, placed = [], [], [], []  # placed: (cx, cy, size) of each
    for _ in range(num_objects):
        label = int(rng.integers(len(classes)))
        kind = classes[label]
        size = _draw_size(rng, min_size, max_size, small_fraction, small_max_size)
        others = [g for g, other in enumerate(labels) if other != label + 1]
        below = None  # the earlier object of another class this one is placed over
        if overlap > 0 and others and rng.uniform() < overlap:
            below = placed[others[int(rng.integers(len(others)))]]
        if thin_width is None:
            stroke = max(1.5, size * rng.uniform(0.12, 0.25))
        else:
            stroke = rng.uniform(*thin_width)
        angle = rng.uniform(0, np.pi / 2) if rotate else 0.0
        if kind == "triangle" and rotate:
            angle = rng.uniform(0, 2 * np.pi / 3)
        x_max, y_max = max(width - size / 2, size / 2), max(height - size / 2, size / 2)
        for _ in range(max_tries):
            if below is None:  # centre drawn so that the object lies inside the image
                cx, cy = rng.uniform(size / 2, x_max), rng.uniform(size / 2, y_max)
            else:  # near the centre of the object below, still inside the image
                reach = 0.3 * (size + below[2])
                cx = float(np.clip(below[0] + rng.uniform(-reach, reach), size / 2, x_max))
                cy = float(np.clip(below[1] + rng.uniform(-reach, reach), size / 2, y_max))
            coverage = shape_coverage(kind, cx, cy, size, stroke, angle, (height, width))
            mask = coverage >= 0.5
            if mask.sum() < min_visible_area:
                continue
            remaining = [v & ~mask for v in visible]
            if all(
                r.sum() >= min_visible_area and r.sum() >= min_visible_fraction * f.sum()
                for r, f in zip(remaining, full_masks)
            ):
                break
        else:
            continue
        colour = _pick_colour(rng, colours, min_contrast)
        # anti-aliased edges: blend by coverage; the mask is the coverage >= 0.5 part
        image = image * (1 - coverage[..., None]) + colour * coverage[..., None]
        visible = remaining + [mask]
        full_masks.append(mask)
        colours.append(colour)
        labels.append(label + 1)
        placed.append((cx, cy, size))
    image = image + rng.normal(0.0, noise, size=image.shape)
    image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    masks = np.zeros((0, height, width), np.uint8)
    if visible:
        masks = np.stack(visible).astype(np.uint8)  # (G, H, W)
    return image, masks, np.asarray(labels, dtype=np.int64)


def mask_to_annotation(mask: np.ndarray) -> dict:
    """COCO fields of one binary (H, W) mask: RLE ``segmentation`` (counts as str), ``bbox``
    ``[x, y, w, h]`` of the mask's pixel extent, ``area`` (pixel count)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    area = float(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"segmentation": rle, "bbox": bbox, "area": area}


def make_shapes_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    image_size=128,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    classes=DEFAULT_CLASSES,
    min_size: float = 10.0,
    max_size: float | None = None,
    split_name: str = "train",
    **image_kwargs,
) -> Path:
    """Generate a split of the shapes dataset as PNGs plus a COCO instances JSON.

    Image ``i`` is drawn from ``np.random.default_rng([seed, crc32(split_name), i])``: the
    pixels and annotations are a function of the arguments only (byte-identical files on every
    run with the same NumPy/Pillow/zlib), the first ``n`` images do not depend on
    ``num_images``, and two splits with the same seed differ.

    Args:
        out_dir: root folder (created); see :func:`shapes_paths` for the layout. Files of the
            same split already there are replaced.
        num_images: number of images.
        image_size: ``(H, W)`` or an int.
        seed: random seed.
        min_objects, max_objects: objects tried per image (uniform); occlusion may drop some.
        classes: names from :data:`ALL_CLASSES`, category ids 1..K in this order.
        min_size, max_size: object size range (pixels); ``max_size`` None: see
            :func:`generate_shapes_image`.
        split_name: name of the split (folder and JSON name).
        **image_kwargs: passed to :func:`generate_shapes_image` (``small_fraction``,
            ``small_max_size``, ``thin_width``, ``rotate``, ``min_visible_area``, ...); see also
            :func:`alignment_settings`.
    Returns:
        The path of the annotation JSON.
    """
    classes = tuple(classes)
    unknown = [c for c in classes if c not in ALL_CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct names from {ALL_CLASSES}, got {classes}")
    if int(num_images) != num_images or num_images < 0:
        raise ValueError(f"num_images must be a whole number >= 0, got {num_images}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size

    def draw(rng):
        num_objects = int(rng.integers(min_objects, max_objects + 1))
        image, masks, labels = generate_shapes_image(
            rng, (height, width), num_objects, classes, min_size, max_size, **image_kwargs
        )
        return image, [{"category_id": int(label), **mask_to_annotation(mask), "iscrowd": 0}
                       for mask, label in zip(masks, labels)]

    generator = {"seed": seed, "image_size": [height, width], "min_objects": min_objects,
                 "max_objects": max_objects, "min_size": min_size, "max_size": max_size}
    generator.update({k: list(v) if isinstance(v, tuple) else v for k, v in image_kwargs.items()})
    info = {"description": f"npmaskrcnn synthetic shapes, split {split_name!r}",
            "version": "1.0", "contributor": "npmaskrcnn.data.shapes", "generator": generator}
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"}
                  for k, name in enumerate(classes)]
    return write_generated_split(shapes_paths(out_dir, split_name), split_name, num_images,
                                 seed, (height, width), draw, info, categories)


def write_generated_split(paths, split_name: str, num_images: int, seed: int, size, draw,
                          info: dict, categories: list) -> Path:
    """Write a generated split (the shapes, the stick figures): PNGs and one COCO JSON.

    Image ``i`` is ``draw(rng)`` with ``rng = np.random.default_rng([seed,
    crc32(split_name), i])``, returning ``(image (H, W, 3) uint8, records)``; each record
    is an annotation without its ``id`` and ``image_id``, which are numbered here (from 1,
    in order). The JSON is written atomically: a reader never sees half a file.

    Args:
        paths: ``(annotation file, image folder)``.
        size: ``(H, W)`` of every image.
        info, categories: the JSON's ``info`` and ``categories``.
    Returns:
        The path of the annotation JSON.
    """
    ann_file, image_dir = paths
    height, width = size
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    split_key = zlib.crc32(split_name.encode("utf-8"))
    images, annotations = [], []
    for i in range(num_images):
        image, records = draw(np.random.default_rng([seed, split_key, i]))
        image_id = i + 1
        file_name = f"{image_id:06d}.png"
        # zlib level 1: the same pixels and, for these noisy images, as small a file as the
        # default level 6, in half the time (3 against 6 ms for a 160-px image)
        Image.fromarray(image).save(image_dir / file_name, format="PNG", compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations += [{"id": len(annotations) + k + 1, "image_id": image_id, **record}
                        for k, record in enumerate(records)]
    dataset = {"info": info, "licenses": [], "images": images, "annotations": annotations,
               "categories": categories}
    with atomic_write(ann_file, "w") as f:
        f.write(json.dumps(dataset, separators=(",", ":")))
    return ann_file
