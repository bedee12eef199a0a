"""The shapes' geometry: the fraction of each pixel that one shape covers (host-only NumPy).

Five classes are drawn by default (:data:`SHAPE_CLASSES`); two more (:data:`TWIN_CLASSES`)
share their outline with one of them and differ inside it -- a square with rounded corners,
a cross with its centre cut out -- so that, with the ring and the disc ("circle"), three
pairs of classes look alike from outside: the data of the mask-loss ablation (paper Table
2b), where classes should compete (:data:`COMPETING_CLASSES`). No gradient flows here.
"""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ("square", "circle", "triangle", "ring", "cross")
TWIN_CLASSES = ("rounded_square", "holed_cross")  # outline of a square, of a cross
ALL_CLASSES = SHAPE_CLASSES + TWIN_CLASSES
THIN_CLASSES = ("ring", "cross", "holed_cross")  # drawn with a stroke (``thin_width``)
# three pairs that share an outline: square / rounded square, disc / ring, cross / holed cross
COMPETING_CLASSES = ("square", "rounded_square", "circle", "ring", "cross", "holed_cross")


def shape_coverage(kind, cx, cy, size, stroke, angle, image_size, supersample=4):
    """The fraction of each pixel covered by one shape, by supersampling.

    Pixel ``(i, j)`` is the square ``[j, j+1) x [i, i+1)``; it is sampled at
    ``supersample**2`` points ``(j + (a + 0.5)/s, i + (b + 0.5)/s)``, and the coverage is the
    share of samples inside the shape. The instance mask is ``coverage >= 0.5``.

    Args:
        kind: one of :data:`SHAPE_CLASSES` or :data:`TWIN_CLASSES`.
        cx, cy: centre in pixel coordinates (continuous).
        size: outer diameter (circle, ring), side (square, rounded square), arm-to-arm
            length (cross, holed cross) or twice the circumradius (triangle), in pixels.
        stroke: ring / cross / holed-cross stroke width in pixels (ignored by the filled
            shapes).
        angle: rotation in radians (ignored by circle and ring).
        image_size: ``(H, W)``.
    Returns:
        (H, W) float64 coverage in [0, 1].
    """
    height, width = image_size
    radius = size / 2.0
    out = np.zeros((height, width))
    x0, x1 = max(int(np.floor(cx - radius - 1)), 0), min(int(np.ceil(cx + radius + 1)), width)
    y0, y1 = max(int(np.floor(cy - radius - 1)), 0), min(int(np.ceil(cy + radius + 1)), height)
    if x1 <= x0 or y1 <= y0:
        return out
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).ravel() - cx  # (w*s,)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).ravel() - cy  # (h*s,)
    u, v = np.meshgrid(xs, ys)  # (h*s, w*s), image axes: u right, v down
    # rotate the sample points by -angle, i.e. the shape by +angle
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * u + sin * v, -sin * u + cos * v
    r2 = u * u + v * v
    if kind == "square":
        inside = (np.abs(u) <= radius) & (np.abs(v) <= radius)
    elif kind == "circle":
        inside = r2 <= radius**2
    elif kind == "ring":
        inner = max(radius - stroke, 0.0)
        inside = (r2 <= radius**2) & (r2 >= inner**2)
    elif kind == "rounded_square":
        # the square with corners rounded at radius size/4: inside the square shrunk by
        # that radius, grown back by it (distance to the inner square <= the radius)
        corner = radius / 2
        du = np.maximum(np.abs(u) - (radius - corner), 0.0)
        dv = np.maximum(np.abs(v) - (radius - corner), 0.0)
        inside = du * du + dv * dv <= corner**2
    elif kind in ("cross", "holed_cross"):
        half = stroke / 2.0
        inside = ((np.abs(u) <= half) & (np.abs(v) <= radius)) | (
            (np.abs(v) <= half) & (np.abs(u) <= radius)
        )
        if kind == "holed_cross":  # the same outline, its centre (a size/3 square) cut out
            inside &= (np.abs(u) > radius / 3) | (np.abs(v) > radius / 3)
    elif kind == "triangle":
        # equilateral, circumradius R, apex up: inside all three edges, each at the
        # inradius R/2 from the centre along its outward normal (down, and +-120 degrees)
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(theta) + v * np.sin(theta) <= radius / 2
    else:
        raise ValueError(f"unknown shape class {kind!r}: choose from {ALL_CLASSES}")
    h, w = y1 - y0, x1 - x0
    # (h*s, w*s) -> (h, s, w, s) -> mean over the samples of each pixel
    out[y0:y1, x0:x1] = inside.reshape(h, supersample, w, supersample).mean(axis=(1, 3))
    return out
