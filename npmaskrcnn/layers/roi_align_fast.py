"""The RoIAlign engines the model runs (``roi_align.py`` teaches the recipe).

Both compute exactly ``roi_align_naive``'s numbers (torchvision's semantics, see
``roi_align.py``); the one backend choice (``on_device``) picks the engine:

- **CPU** (``roi_align_separable.py``): the bilinear weight is a product of a row weight
  and a column weight, so for each RoI the bin averages are ``A_y @ V @ A_x^T``, V (ny, nx, C)
  holds the only rows and columns the RoI's samples touch and A_y (PH, ny), A_x (PW, nx)
  are small interpolation matrices (``interpolation_matrix``). The backward is the
  transposed products, ``dV = A_y^T @ dout @ A_x``, added back into those rows and
  columns. For max, the same matrices have one row per sample instead of per bin, and
  the max is taken over the resulting samples. One RoI at a time: its block stays in
  cache, and each touched feature vector is read once per RoI (the kernel reads four per
  sample; ``benchmarks/bench_ops.py`` compares the two).
- **GPU** (``roi_align_gather.py``): every RoI of every pyramid level in one gather of
  the sample corners from a flat table of feature vectors, one weighted sum, and one
  scatter-add back: a fixed, small number of launches whatever the number of RoIs.

``roi_align_levels_forward`` / ``_backward`` pool each RoI from its own pyramid level
(the FPN pooler): one call per level on the CPU, one call for all levels on a GPU.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, on_device
from . import roi_align_gather as gather
from .roi_align_separable import (
    SeparablePlan,
    interpolation_matrix,
    max_expand,
    max_reduce,
    separable_backward,
    separable_forward,
)
from .sizes import as_pair

AGGREGATIONS = ("avg", "max")


def sample_grid(rois, PH: int, PW: int, spatial_scale, sampling_ratio: int, aligned, dtype):
    """Sample coordinates of every bin, torchvision's arithmetic (and its order) in ``dtype``.

    ``spatial_scale`` is a float, or an (R,) array giving each RoI its own (the scale of
    the pyramid level it is pooled from).

    Returns:
        batch (R,) int64, ys (R, PH, Gh), grid_h (R,) int64, xs (R, PW, Gw), grid_w (R,)
        with G the largest grid (samples g >= grid[r] are padding).
    """
    xp = get_xp(rois)
    t = np.dtype(dtype).type
    r = rois.astype(dtype)
    offset = t(0.5) if aligned else t(0.0)
    if isinstance(spatial_scale, (int, float)):
        scale = t(spatial_scale)
    else:  # (R,) one per RoI -> (R, 1) against the (R, 2) corners
        scale = spatial_scale.astype(dtype)[:, None]
    start = r[:, 1:3] * scale  # (R, 2): x_start, y_start
    end = r[:, 3:5] * scale
    if aligned:  # (x - 0.0 is x: the subtraction is skipped without the shift)
        start, end = start - offset, end - offset
    size = end - start  # (R, 2): roi_w, roi_h
    if not aligned:
        size = xp.maximum(size, t(1.0))  # torchvision forces malformed RoIs to 1x1
    bins = size / xp.asarray([PW, PH], dtype=dtype)
    if sampling_ratio > 0:
        grid = xp.full(size.shape, sampling_ratio, dtype=np.int64)
    else:
        grid = xp.maximum(xp.ceil(bins), 0).astype(np.int64)  # adaptive: ceil(roi / out)

    def axis(k, P: int):
        """Sample coordinates along axis k (0: x, 1: y, slice(None): both at once)."""
        if sampling_ratio > 0:
            G, n = sampling_ratio, t(sampling_ratio)
        else:  # adaptive grids: the largest one, read by the host (the padded sample count)
            G = int(grid[:, k].max()) if len(grid) else 0
            n = xp.maximum(grid[:, k], 1).astype(dtype)[..., None, None]
        p, g = _bin_and_sample_offsets(P, G, np.dtype(dtype), xp)  # (1, P, 1), (1, 1, G)
        b = bins[:, k, None, None]
        return start[:, k, None, None] + p * b + (g * b) / n  # (R, [2,] P, G)

    batch = r[:, 0].astype(np.int64)
    if PH == PW:  # square bins: both axes in one pass (an adaptive G: the larger of the two)
        both = axis(slice(None), PH)  # (R, 2, P, G): x then y
        return batch, both[:, 1], grid[:, 1], both[:, 0], grid[:, 0]
    return batch, axis(1, PH), grid[:, 1], axis(0, PW), grid[:, 0]


@lru_cache(maxsize=64)
def _bin_and_sample_offsets(P: int, G: int, dtype, xp):
    """The constants ``p`` (1, P, 1) and ``g + 1/2`` (1, 1, G) of the sample positions,
    made once per size on the device (do not modify them)."""
    p = xp.asarray(np.arange(P, dtype=dtype)[None, :, None])
    g = xp.asarray((np.arange(G, dtype=dtype) + dtype.type(0.5))[None, None, :])
    return p, g


# positions per block of channels_first's NumPy copy: a 64 x C block stays in cache
TRANSPOSE_TILE = 64


def channels_first(xt):
    """(N, H, W, C) -> a contiguous (N, C, H, W) copy: the backward's gradient, computed with
    the feature vectors contiguous (both engines), in the layout of the feature maps.

    A GPU copies the transpose in one kernel. NumPy's copy walks the output in order and
    reads the input C elements apart, a cache miss for every element: 70 ms for the
    (2, 128, 128, 256) gradient of P2 in ``bench_model.py``'s train step on the 2-core
    machine, against 11 ms when copied one block of ``TRANSPOSE_TILE`` positions at a time
    (the other direction, NCHW -> NHWC, is fast as it is: 13 ms).
    """
    xp = get_xp(xt)
    if on_device(xp):
        return xp.ascontiguousarray(xt.transpose(0, 3, 1, 2))
    N, H, W, C = xt.shape
    rows = xt.reshape(N, H * W, C)
    out = xp.empty((N, C, H * W), dtype=xt.dtype)
    for n in range(N):
        for start in range(0, H * W, TRANSPOSE_TILE):
            out[n, :, start:start + TRANSPOSE_TILE] = rows[n, start:start + TRANSPOSE_TILE].T
    return out.reshape(N, C, H, W)


class RoIAlignCache(NamedTuple):
    """What ``roi_align_backward`` needs; RoIAlign is linear in x, so x is not kept."""

    x_shape: tuple  # (N, C, H, W)
    plan: Any  # CPU: a SeparablePlan; GPU: a roi_align_gather.GatherCache
    # CPU max only: (R, PW, PH, C) int32, the winning sample gy*Gw + gx of each bin (-1 if
    # none). Width before height: the separable engine applies A_x first and A_y to the
    # result's transpose, so its products come out (c, PX, PY, C) and the argmax keeps
    # that layout instead of paying a transpose; only ``max_expand`` reads it.
    argmax: Any
    grid: tuple  # CPU max only: (Gh, Gw), the padded sample grid


def roi_align_forward(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                      aligned=False, aggregation="avg"):
    """RoIAlign, as ``torchvision.ops.roi_align`` (plus the paper's max aggregation).

    Args:
        x: (N, C, H, W) feature maps.
        rois: (R, 5) rows ``[batch_index, x1, y1, x2, y2]`` in image pixels (cast to
            x's dtype, as torchvision requires them to match).
        output_size: PH or (PH, PW).
        spatial_scale: feature size / image size (1/4 for P2).
        sampling_ratio: samples per bin along each axis; <= 0: ceil(roi / output).
        aligned: shift by -0.5 pixel (pixel centres at i + 0.5); False is torchvision's
            default and what its ``MultiScaleRoIAlign`` uses.
        aggregation: "avg" (torchvision, paper's final choice) or "max".
    Returns:
        out (R, C, PH, PW) and the cache. No gradient flows into ``rois``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    xp = get_xp(x, rois)
    PH, PW = as_pair(output_size)
    N, C, H, W = x.shape
    batch, ys, grid_h, xs, grid_w = sample_grid(
        rois, PH, PW, spatial_scale, sampling_ratio, aligned, x.dtype
    )
    if on_device(xp):  # one gather over a table of the map's C-vectors
        table = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)  # (N*H*W, C)
        size = xp.full(batch.shape, H, dtype=np.int64), xp.full(batch.shape, W, dtype=np.int64)
        out, plan = gather.forward(table, batch * (H * W), *size, ys, grid_h, xs, grid_w,
                                   aggregation, fixed=sampling_ratio > 0)
        return out, RoIAlignCache(tuple(x.shape), plan, None, (0, 0))
    average = aggregation == "avg"
    rows, A_y, n_rows = interpolation_matrix(ys, grid_h, H, average)
    cols, A_x, n_cols = interpolation_matrix(xs, grid_w, W, average)
    plan = SeparablePlan(batch, rows, A_y, n_rows, cols, A_x, n_cols)
    xt = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C): C-vectors contiguous
    if average:
        out, argmax, grid = separable_forward(xt, plan), None, (0, 0)
    else:
        grid = (ys.shape[2], xs.shape[2])
        argmax = xp.empty((len(batch), PW, PH, C), dtype=np.int32)
        reduce = max_reduce(argmax, grid_h, grid_w, PH, PW, grid)
        out = separable_forward(xt, plan, reduce)
    return out, RoIAlignCache(tuple(x.shape), plan, argmax, grid)


def roi_align_backward(dout, cache: RoIAlignCache):
    """Gradient of ``roi_align_forward`` with respect to x.

    avg: dx[b, :, rows, cols] += A_y^T @ dout[r] @ A_x for each RoI (every bilinear
    weight times dout / (g_h g_w), as torchvision's backward); max: dout goes to the
    winning sample's four neighbours with their bilinear weights.

    Args:
        dout: (R, C, PH, PW).
    Returns:
        dx (N, C, H, W), zeros where no RoI reads.
    """
    N, C, H, W = cache.x_shape
    if isinstance(cache.plan, gather.GatherCache):
        dtable = gather.backward(dout, cache.plan)  # (N*H*W, C)
        return channels_first(dtable.reshape(N, H, W, C))
    expand = None if cache.argmax is None else max_expand(cache.argmax, cache.grid)
    dxt = separable_backward(dout, cache.plan, (N, H, W, C), expand)
    return channels_first(dxt)


class LevelsCache(NamedTuple):
    """What ``roi_align_levels_backward`` (or ``unpool_levels``) needs."""

    shapes: list  # the (N, C, H_l, W_l) of every level
    dtype: Any  # the features' dtype
    caches: list  # per level (RoI indices, the op's cache) or None; GPU RoIAlign: [GatherCache]


def pool_levels(features, rois, levels, pool):
    """Pool each RoI from its own level, one level at a time: ``pool(feature, rois, l)``
    -> ``(pooled (R_l, C, PH, PW), cache)`` runs on the RoIs of level l only.

    Returns:
        out (R, C, PH, PW) in the order of ``rois``, and a ``LevelsCache`` holding each
        level's RoI indices and cache (None for a level no RoI uses).
    """
    xp = get_xp(rois, *features)
    shapes = [tuple(f.shape) for f in features]
    out, caches = None, []
    for level, feature in enumerate(features):
        idx = xp.nonzero(levels == level)[0]  # (R_l,) the RoIs of this level
        if idx.shape[0] == 0:
            caches.append(None)
            continue
        pooled, cache = pool(feature, rois[idx], level)
        if out is None:
            out = xp.zeros((rois.shape[0],) + pooled.shape[1:], dtype=pooled.dtype)
        out[idx] = pooled
        caches.append((idx, cache))
    return out, LevelsCache(shapes, features[0].dtype, caches)


def unpool_levels(dout, cache: LevelsCache, unpool):
    """The gradient of ``pool_levels``: ``unpool(dout[idx], level_cache)`` for each level's
    RoIs, zeros for a level no RoI used. Returns one (N, C, H_l, W_l) array per level."""
    xp = get_xp(dout)
    dfeatures = []
    for shape, entry in zip(cache.shapes, cache.caches):
        if entry is None:
            dfeatures.append(xp.zeros(shape, dtype=cache.dtype))
        else:
            idx, level_cache = entry
            dfeatures.append(unpool(dout[idx], level_cache))
    return dfeatures


def roi_align_levels_forward(features, rois, levels, scales, output_size, sampling_ratio=-1,
                             aligned=False, aggregation="avg"):
    """RoIAlign of each RoI from its own feature map (an FPN pyramid level).

    Args:
        features: L maps (N, C, H_l, W_l).
        rois: (R, 5) ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        levels: (R,) int64 index of each RoI's map in ``features``.
        scales: L spatial scales (feature size / image size) of the maps.
        output_size, sampling_ratio, aligned, aggregation: as ``roi_align_forward``.
    Returns:
        out (R, C, PH, PW), row r pooled from ``features[levels[r]]``, and the cache.
    """
    xp = get_xp(rois, *features)
    PH, PW = as_pair(output_size)
    shapes = [tuple(f.shape) for f in features]
    dtype = features[0].dtype
    if on_device(xp):  # every level's C-vectors in one table, every RoI in one gather
        table = pyramid_table(features)
        offsets = np.cumsum([0] + [n * h * w for n, _, h, w in shapes[:-1]])
        per_level = xp.asarray(np.array([offsets, [s[2] for s in shapes],
                                         [s[3] for s in shapes]], dtype=np.int64))
        start, height, width = per_level[:, levels]  # (3, R): each RoI's level
        scale = xp.asarray(np.asarray(scales, dtype=dtype))[levels]
        batch, ys, grid_h, xs, grid_w = sample_grid(rois, PH, PW, scale, sampling_ratio,
                                                    aligned, dtype)
        out, plan = gather.forward(table, start + batch * height * width, height, width,
                                   ys, grid_h, xs, grid_w, aggregation,
                                   fixed=sampling_ratio > 0)
        return out, LevelsCache(shapes, dtype, [plan])
    out, cache = pool_levels(features, rois, levels, lambda feature, level_rois, level:
                             roi_align_forward(feature, level_rois, output_size, scales[level],
                                               sampling_ratio, aligned, aggregation))
    if out is None:  # no RoIs at all
        out = xp.zeros((rois.shape[0], shapes[0][1], PH, PW), dtype=dtype)
    return out, cache


def pyramid_table(features):
    """The maps' C-vectors as one (sum_l N*H_l*W_l, C) table, levels one after another:
    each level written in place with its NHWC transpose (one copy per level)."""
    xp = get_xp(*features)
    c = features[0].shape[1]
    sizes = [f.shape[0] * f.shape[2] * f.shape[3] for f in features]
    table = xp.empty((sum(sizes), c), dtype=features[0].dtype)
    start = 0
    for f, size in zip(features, sizes):
        n, _, h, w = f.shape
        table[start:start + size].reshape(n, h, w, c)[...] = f.transpose(0, 2, 3, 1)
        start += size
    return table


def roi_align_levels_backward(dout, cache: LevelsCache):
    """Gradient of ``roi_align_levels_forward``: L maps dfeatures (N, C, H_l, W_l), each
    RoI's gradient in its own level, zeros in levels no RoI used."""
    if len(cache.caches) == 1 and isinstance(cache.caches[0], gather.GatherCache):
        dtable = gather.backward(dout, cache.caches[0])  # (sum_l N*H_l*W_l, C)
        dfeatures, start = [], 0
        for n, c, h, w in cache.shapes:
            block = dtable[start:start + n * h * w].reshape(n, h, w, c)
            dfeatures.append(channels_first(block))
            start += n * h * w
        return dfeatures
    return unpool_levels(dout, cache, roi_align_backward)
