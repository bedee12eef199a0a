"""Supersampled rasterisation of discs, capsules and convex polygons (host-only NumPy).

The stick figures of :mod:`npmaskrcnn.data.figures` are unions of three primitives:

- ``("disc", cx, cy, r)``: the points within r of the centre (heads, hands, ears);
- ``("capsule", x0, y0, x1, y1, half_width)``: the points within half_width of a segment
  (limbs: a thick line with round ends, so a chain of capsules bends without gaps);
- ``("polygon", corners)``: a convex polygon, corners (n, 2) in either orientation (torsos).

Coordinates are continuous pixel coordinates: pixel (i, j) is the square
[j, j+1) x [i, i+1). A pixel's coverage is the share of its ``s x s`` samples
``(j + (a + 0.5)/s, i + (b + 0.5)/s)`` inside the union, as
:func:`npmaskrcnn.data.shapes.shape_coverage` does for the shapes; masks are coverage >= 0.5.
No gradient flows here.
"""

from __future__ import annotations

import numpy as np


def primitive_extent(prim) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) bounding box of a primitive."""
    kind = prim[0]
    if kind == "disc":
        _, cx, cy, r = prim
        return cx - r, cy - r, cx + r, cy + r
    if kind == "capsule":
        _, x0, y0, x1, y1, hw = prim
        return min(x0, x1) - hw, min(y0, y1) - hw, max(x0, x1) + hw, max(y0, y1) + hw
    pts = prim[1]
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def primitive_inside(prim, u, v):
    """Boolean: which sample points (u, v) lie inside the primitive."""
    kind = prim[0]
    if kind == "disc":
        _, cx, cy, r = prim
        return (u - cx) ** 2 + (v - cy) ** 2 <= r * r
    if kind == "capsule":  # points within hw of the segment
        _, x0, y0, x1, y1, hw = prim
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        return (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2 <= hw * hw
    pts = prim[1]  # a convex polygon, either orientation: the same side of every edge
    cross = [(b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0])
             for a, b in zip(pts, np.roll(pts, -1, axis=0))]
    return np.all([c >= 0 for c in cross], axis=0) | np.all([c <= 0 for c in cross], axis=0)


def primitives_coverage(prims, image_size, supersample: int = 4):
    """The fraction of each pixel covered by the union of ``prims``, by supersampling.

    Each primitive is tested only on the samples of its own bounding box.

    Args:
        prims: a list of primitives (see the module docstring); image_size: (H, W);
        supersample: s, samples per pixel along each axis.
    Returns:
        (H, W) float64 coverage in [0, 1].
    """
    height, width = image_size
    out = np.zeros((height, width))
    if not prims:
        return out
    ext = np.array([primitive_extent(p) for p in prims])
    x0, y0 = max(int(np.floor(ext[:, 0].min())), 0), max(int(np.floor(ext[:, 1].min())), 0)
    x1 = min(int(np.ceil(ext[:, 2].max())) + 1, width)
    y1 = min(int(np.ceil(ext[:, 3].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return out
    s = supersample
    offsets = (np.arange(s) + 0.5) / s
    xs = (np.arange(x0, x1)[:, None] + offsets).ravel()  # (w*s,)
    ys = (np.arange(y0, y1)[:, None] + offsets).ravel()  # (h*s,)
    inside = np.zeros((len(ys), len(xs)), dtype=bool)
    for prim, (px0, py0, px1, py1) in zip(prims, ext):
        c0, c1 = np.searchsorted(xs, px0), np.searchsorted(xs, px1, side="right")
        r0, r1 = np.searchsorted(ys, py0), np.searchsorted(ys, py1, side="right")
        if c1 > c0 and r1 > r0:
            u, v = np.meshgrid(xs[c0:c1], ys[r0:r1])
            inside[r0:r1, c0:c1] |= primitive_inside(prim, u, v)
    h, w = y1 - y0, x1 - x0
    out[y0:y1, x0:x1] = inside.reshape(h, s, w, s).mean(axis=(1, 3))
    return out


def shift_primitive(prim, shift):
    """The primitive translated by ``shift`` (dx, dy)."""
    if prim[0] == "polygon":
        return ("polygon", prim[1] + shift)
    if prim[0] == "disc":
        return ("disc", prim[1] + shift[0], prim[2] + shift[1], prim[3])
    _, x0, y0, x1, y1, hw = prim
    return ("capsule", x0 + shift[0], y0 + shift[1], x1 + shift[0], y1 + shift[1], hw)
