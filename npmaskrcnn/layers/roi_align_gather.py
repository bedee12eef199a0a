"""RoIAlign as one batched gather: the GPU engine.

Every bilinear sample reads the four feature cells around it, and the bilinear weight
of a cell is a row weight times a column weight (``bilinear.py``). So for a RoI with bins
PH x PW and g_h x g_w samples per bin, the rows it reads are, per bin, the two rows
(low, high) of each of its g_h sample rows, and likewise the columns. Gathering the
feature vector of every (row, column) pair at once gives

    V[r, (ph, iy, cy), (pw, ix, cx), :] = table[start_r + row[r, ph, iy, cy] * W_r
                                                + col[r, pw, ix, cx]]

with ``table`` (T, C) the feature maps laid out as rows of C-vectors (NHWC, flattened,
every image and every pyramid level after one another), ``start_r`` the row of pixel
(0, 0) of the RoI's map and W_r its width. The bin values are then weighted sums over
the corner axes::

    avg:  out[r, ph, pw] = sum_{iy, cy} wy[r, ph, iy, cy] sum_{ix, cx} wx[r, pw, ix, cx] V[...]
          (weights already divided by g_h and g_w)
    max:  S[r, ph, iy, pw, ix] = the same sums without the sums over iy and ix;
          out = max over (iy, ix), the winner remembered for the backward

and the backward multiplies dout by the same weights and scatter-adds it into the table
(one ``scatter_add``: samples of overlapping RoIs read the same cells). Whatever the
number of RoIs or levels this is a fixed handful of launches, which is what a GPU wants;
the price is memory: V holds (2 g_h PH) x (2 g_w PW) C-vectors per RoI, 4x the samples
(a CPU prefers the compact per-RoI blocks of ``roi_align_fast.py``). Padded samples of
adaptive grids (g >= the RoI's own grid) get weight 0, or -inf for max.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, scatter_add
from .bilinear import linear_weights_1d


class GatherCache(NamedTuple):
    """What ``backward`` needs: where each corner was read, and its weights."""

    table_rows: int  # T, rows of the table
    index: Any  # (R, A, B) int64 table row of each (row corner, column corner) pair
    wy: Any  # (R, PH, Gh, 2) row weights of the samples' low/high rows
    wx: Any  # (R, PW, Gw, 2) column weights
    argmax: Any  # max only: (R, PH, PW, C) int64 winning sample iy*Gw + ix, -1 for none


def _axis(coords, grid, size, average: bool, fixed: bool):
    """Corner indices (R, P, G, 2) and weights (R, P, G, 2) of the samples on one axis.

    ``coords`` (R, P, G) are sample coordinates, ``grid`` (R,) the real samples per bin
    (later ones are padding: weight 0), ``size`` (R,) the map's length along the axis;
    ``fixed``: every RoI has the same G samples (no padding). Both axes can go at once:
    coords (2, R, P, G), grid (2, R) and size (2, R) give results (2, R, P, G, 2).
    """
    xp = get_xp(coords)
    dtype = coords.dtype
    G = coords.shape[-1]
    low, high, w_low, w_high = linear_weights_1d(coords, size[..., None, None])
    index = xp.stack([low, high], axis=-1)  # (R, P, G, 2)
    weight = xp.stack([w_low, w_high], axis=-1)
    if fixed:  # 1 / g per sample for an average, nothing to mask
        return index, (weight * dtype.type(1 / G) if average and G else weight)
    real = xp.arange(G) < grid[..., None, None]  # ([2,] R, 1, G)
    scale = real.astype(dtype)
    if average:  # 1 / g per sample; max(g, 1) keeps an empty grid at 0 (torchvision's)
        scale = scale / xp.maximum(grid, 1).astype(dtype)[..., None, None]
    return index, weight * scale[..., None]


def forward(table, start, height, width, ys, grid_h, xs, grid_w, aggregation="avg",
            fixed: bool = False):
    """RoIAlign of R RoIs, each reading its own map inside ``table``.

    Args:
        table: (T, C) feature vectors of the maps (NHWC rows).
        start: (R,) int64 table row of pixel (0, 0) of each RoI's map.
        height, width: (R,) int64 size of each RoI's map (W is also its row stride).
        ys: (R, PH, Gh) sample rows, grid_h: (R,) real samples per bin along y;
        xs: (R, PW, Gw), grid_w: (R,) along x (``roi_align_fast.sample_grid``).
        aggregation: "avg" or "max".
        fixed: every RoI has Gh x Gw real samples (a fixed sampling ratio).
    Returns:
        out (R, C, PH, PW) and a ``GatherCache``.
    """
    xp = get_xp(table, ys)
    R, PH, Gh = ys.shape
    PW, Gw = xs.shape[1:]
    C = table.shape[1]
    average = aggregation == "avg"
    if ys.shape == xs.shape:  # square bins, one grid: both axes in one pass
        grid = None if fixed else xp.stack([grid_h, grid_w])
        index, weight = _axis(xp.stack([ys, xs]), grid, xp.stack([height, width]), average,
                              fixed)
        (rows, cols), (wy, wx) = index, weight  # (R, PH, Gh, 2) each
    else:
        rows, wy = _axis(ys, grid_h, height, average, fixed)  # (R, PH, Gh, 2)
        cols, wx = _axis(xs, grid_w, width, average, fixed)  # (R, PW, Gw, 2)
    # (R, A, 1) rows against (R, 1, B) columns -> (R, A, B) table rows
    index = ((start[:, None] + rows.reshape(R, PH * Gh * 2) * width[:, None])[:, :, None]
             + cols.reshape(R, 1, PW * Gw * 2))
    V = table[index]  # (R, A, B, C), A = PH*Gh*2, B = PW*Gw*2
    if average:
        V = V.reshape(R, PH, Gh * 2, PW, Gw * 2, C)
        t = (V * wx.reshape(R, 1, 1, PW, Gw * 2, 1)).sum(axis=4)  # (R, PH, Gh*2, PW, C)
        out = (t * wy.reshape(R, PH, Gh * 2, 1, 1)).sum(axis=2)  # (R, PH, PW, C)
        argmax = None
    else:
        V = V.reshape(R, PH, Gh, 2, PW, Gw, 2, C)
        t = (V * wx.reshape(R, 1, 1, 1, PW, Gw, 2, 1)).sum(axis=6)  # (R, PH, Gh, 2, PW, Gw, C)
        S = (t * wy.reshape(R, PH, Gh, 2, 1, 1, 1)).sum(axis=3)  # (R, PH, Gh, PW, Gw, C)
        S = S.transpose(0, 1, 3, 5, 2, 4).reshape(R, PH, PW, C, Gh * Gw)  # samples last
        real = ((xp.arange(Gh)[:, None] < grid_h[:, None, None])
                & (xp.arange(Gw)[None, :] < grid_w[:, None, None]))  # (R, Gh, Gw)
        S = xp.where(real.reshape(R, 1, 1, 1, Gh * Gw), S, -np.inf)  # padding never wins
        argmax = xp.argmax(S, axis=-1)  # (R, PH, PW, C), first maximum on ties
        has = (grid_h * grid_w > 0)[:, None, None, None]
        out = xp.where(has, xp.take_along_axis(S, argmax[..., None], axis=-1)[..., 0], 0)
        argmax = xp.where(has, argmax, -1)
    out = xp.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (R, PH, PW, C) -> (R, C, PH, PW)
    return out, GatherCache(table.shape[0], index, wy, wx, argmax)


def backward(dout, cache: GatherCache):
    """Adjoint of ``forward``: dout times each corner's weight, scatter-added.

    Args:
        dout: (R, C, PH, PW).
    Returns:
        dtable (T, C): zeros where no RoI reads.
    """
    xp = get_xp(dout)
    R, C, PH, PW = dout.shape
    Gh, Gw = cache.wy.shape[2], cache.wx.shape[2]
    d = dout.transpose(0, 2, 3, 1)  # (R, PH, PW, C)
    if cache.argmax is None:
        # (R, PH, Gh*2, 1, 1) x (R, 1, 1, PW, Gw*2): each corner pair's weight
        w = cache.wy.reshape(R, PH, Gh * 2, 1, 1) * cache.wx.reshape(R, 1, 1, PW, Gw * 2)
        dV = w[..., None] * d[:, :, None, :, None, :]  # (R, PH, Gh*2, PW, Gw*2, C)
    else:
        # the bin's gradient on its winning sample only: (R, PH, PW, C, Gh*Gw)
        onehot = cache.argmax[..., None] == xp.arange(Gh * Gw)
        dS = xp.where(onehot, d[..., None], 0).reshape(R, PH, PW, C, Gh, Gw)
        dS = dS.transpose(0, 1, 4, 2, 5, 3)  # (R, PH, Gh, PW, Gw, C)
        w = (cache.wy.reshape(R, PH, Gh, 2, 1, 1, 1)
             * cache.wx.reshape(R, 1, 1, 1, PW, Gw, 2))  # (R, PH, Gh, 2, PW, Gw, 2)
        dV = w[..., None] * dS[:, :, :, None, :, :, None, :]
    dtable = xp.zeros((cache.table_rows, C), dtype=dout.dtype)
    # samples of overlapping RoIs read the same cells: accumulate repeated rows
    scatter_add(dtable, cache.index.reshape(-1), dV.reshape(-1, C))
    return dtable
