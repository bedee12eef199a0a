"""Bilinear interpolation exactly as torchvision's RoIAlign kernel: scalar and vectorised.

torchvision (``csrc/ops/cpu/roi_align_common.h``, ``bilinear_interpolate``) reads a feature
plane of size H x W at a real point (y, x) as follows:

1. a point with y < -1 or y > H or x < -1 or x > W lies outside: its value is 0;
2. otherwise y <= 0 is clamped to 0 (and x likewise), so the last half pixel before the
   border and the first pixel after it read the border row;
3. y_low = floor(y); if y_low >= H - 1 then y_high = y_low = H - 1 and y = y_low (the far
   border is clamped too), else y_high = y_low + 1; the same for x;
4. with ly = y - y_low, hy = 1 - ly (and lx, hx) the value is

       hy*hx * v[y_low, x_low] + hy*lx * v[y_low, x_high]
     + ly*hx * v[y_high, x_low] + ly*lx * v[y_high, x_high].

The rule is *separable*: the point is outside when y or x is, so its validity is the
product of a row test and a column test, and each of the four weights is a row weight
(hy or ly, zero when y is outside) times a column weight (hx or lx, zero when x is
outside).

``bilinear_corners`` and ``bilinear_interpolate`` are the scalar versions, used by the
loop implementations (``roi_align_naive``); ``linear_weights_1d`` is one axis of the
rule, vectorised over any array of coordinates, used by the fast engines
(``roi_align_fast.py``, ``roi_align_gather.py``).
"""

from __future__ import annotations

import numpy as np

from ..backend import fused, get_xp


def bilinear_corners(y: float, x: float, height: int, width: int) -> list:
    """The four (row, col, weight) terms of torchvision's bilinear read at (y, x).

    Scalar teaching version, used by the ``*_naive`` RoI ops.

    Args:
        y, x: the point, in feature-map pixels (pixel i covers [i, i + 1) when the
            caller has applied the half-pixel offset, as torchvision's aligned=True).
        height, width: the plane size H, W.
    Returns:
        ``[(y_low, x_low, hy*hx), (y_low, x_high, hy*lx), (y_high, x_low, ly*hx),
        (y_high, x_high, ly*lx)]``, or ``[]`` when the point is outside (value 0).
    """
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)  # y, x >= 0 here, so int() is floor
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return [
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ]


def bilinear_interpolate(plane, y: float, x: float):
    """Value of ``plane`` (..., H, W) at the real point (y, x), torchvision's rule.

    Returns an array of shape ``plane.shape[:-2]`` (e.g. one value per channel).
    """
    height, width = plane.shape[-2:]
    value = get_xp(plane).zeros(plane.shape[:-2], dtype=plane.dtype)
    for row, col, weight in bilinear_corners(y, x, height, width):
        value = value + weight * plane[..., row, col]
    return value


def linear_weights_1d(coord, size):
    """One axis of torchvision's bilinear rule, vectorised over any array of coordinates.

    Args:
        coord: (...) real coordinates along an axis of length ``size`` (float array).
        size: H for rows, W for columns: an int, or an int64 array broadcastable
            against ``coord`` (each RoI its own map size, as in a pyramid).
    Returns:
        ``(low, high, w_low, w_high)``: int64 indices in [0, size - 1] and weights of the
        coordinate's dtype, ``w_low = 1 - l`` and ``w_high = l`` with l the fractional
        part after clamping, both zero where coord < -1 or coord > size (outside; NaN
        too, as in the kernel). The 2-D weight of corner (row, col) is the row weight
        times the column weight.
    """
    return _linear_weights(coord, size)


@fused
def _linear_weights(xp, coord, size):
    """``linear_weights_1d``'s arithmetic: one kernel on a GPU instead of thirteen."""
    inside = (coord >= -1.0) & (coord <= size)
    # y <= 0 reads row 0 and y >= H - 1 the last row alone (weight 1 on "low"): both are
    # a clamp to [0, H - 1]; outside points (and NaN) read nothing, so any row will do
    c = xp.where(inside, xp.minimum(xp.maximum(coord, 0), size - 1), 0)
    low = c.astype(np.int64)  # c >= 0: truncation is floor
    high = xp.minimum(low + 1, size - 1)
    frac = c - low.astype(coord.dtype)
    w_high = xp.where(inside, frac, 0).astype(coord.dtype, copy=False)
    w_low = xp.where(inside, 1 - frac, 0).astype(coord.dtype, copy=False)
    return low, high, w_low, w_high
