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
outside). ``linear_weights_1d`` computes one axis of it; ``interpolation_matrix`` uses
it to build, per RoI, the small matrix that averages the bilinear samples of each bin
along one axis, which turns RoIAlign into two matrix products (see ``roi_align.py``);
``separable_forward`` / ``separable_backward`` apply those products to every RoI's
block of the map and scatter their transposes back.

``bilinear_corners`` and ``bilinear_interpolate`` are the scalar teaching versions used
by the loop implementations (``*_naive``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, scatter_add


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


def linear_weights_1d(coord, size: int):
    """One axis of torchvision's bilinear rule, vectorised over any array of coordinates.

    Args:
        coord: (...) real coordinates along an axis of length ``size`` (float array).
        size: H for rows, W for columns.
    Returns:
        ``(low, high, w_low, w_high)``: int64 indices in [0, size - 1] and weights of the
        coordinate's dtype, ``w_low = 1 - l`` and ``w_high = l`` with l the fractional
        part after clamping, both zero where coord < -1 or coord > size (outside; NaN
        too, as in the kernel). The 2-D weight of corner (row, col) is the row weight
        times the column weight.
    """
    xp = get_xp(coord)
    inside = (coord >= -1.0) & (coord <= size)
    c = xp.where(inside, xp.maximum(coord, 0), 0)  # y <= 0 reads row 0; outside reads none
    low = xp.minimum(c.astype(np.int64), size - 1)  # c >= 0: astype truncates = floor
    at_end = low >= size - 1
    c = xp.where(at_end, low.astype(coord.dtype), c)  # y past the last row reads it
    high = xp.where(at_end, low, low + 1)
    frac = c - low.astype(coord.dtype)
    zero = xp.zeros((), dtype=coord.dtype)
    w_low = xp.where(inside, 1 - frac, zero)
    w_high = xp.where(inside, frac, zero)
    return low, high, w_low, w_high


def interpolation_matrix(coords, grid, size: int, average: bool = True):
    """Per-RoI matrices of the bilinear reads along one axis, over the rows a RoI touches.

    For RoI r and bin p the samples sit at ``coords[r, p, g]`` for g < grid[r] (the
    rest is padding, e.g. with an adaptive grid). With ``average`` the matrix has one
    row per bin and averages that bin's samples:

        A[r, p, k] = (1 / grid[r]) * sum_{g < grid[r]} (w_low  [low  = index[r, k]]
                                                       + w_high [high = index[r, k]]),

    (w, low, high of ``coords[r, p, g]`` as in ``linear_weights_1d``); without it the
    matrix has one row per sample, row p * G + g, unscaled (zero rows for padding).
    ``index[r, :count[r]]`` lists, sorted and without repeats, the rows (or columns) of
    the map that RoI r reads; columns k >= count[r] are padding (index 0, weight 0).
    Because the 2-D bilinear weight is a product, the average over a grid_h x grid_w
    grid of samples is ``A_y @ V @ A_x^T`` with V the block of touched rows and columns.

    Args:
        coords: (R, P, G) sample coordinates (float; G = the largest grid).
        grid: (R,) int64 number of samples per bin along this axis (0 allowed).
        size: H or W.
        average: one row per bin (True) or one row per sample (False).
    Returns:
        ``(index (R, K) int64, A (R, P, K) or (R, P*G, K), count (R,) int64)`` with
        K = max(count), at most min(2 * P * G, size); A has the dtype of ``coords``.
    """
    xp = get_xp(coords)
    R, P, G = coords.shape
    real = xp.broadcast_to(xp.arange(G)[None, None, :] < grid[:, None, None], (R, P, G))
    scale = xp.ones((R, 1, 1), dtype=coords.dtype)
    if average:
        scale = scale / xp.maximum(grid, 1).astype(coords.dtype)[:, None, None]
    else:  # every sample its own row: (R, P, G) -> (R, P*G, 1)
        coords, real = coords.reshape(R, P * G, 1), real.reshape(R, P * G, 1)
        P, G = P * G, 1
    low, high, w_low, w_high = linear_weights_1d(coords, size)
    w_low = xp.where(real, w_low * scale, 0)
    w_high = xp.where(real, w_high * scale, 0)

    # touched[r, i]: RoI r reads row i; cumsum numbers the touched rows 0, 1, 2, ...
    reads = real & (coords >= -1.0) & (coords <= size)  # (R, P, G)
    rr = xp.broadcast_to(xp.arange(R)[:, None, None], (R, P, G))
    touched = xp.zeros((R, size), dtype=bool)
    touched[rr[reads], low[reads]] = True
    touched[rr[reads], high[reads]] = True
    local = xp.cumsum(touched, axis=1) - 1  # (R, size): compact column of each row
    count = touched.sum(axis=1).astype(np.int64)
    K = int(count.max()) if R > 0 else 0  # one host read: the padded width
    index = xp.zeros((R, K), dtype=np.int64)
    tr, ti = xp.nonzero(touched)
    index[tr, local[tr, ti]] = ti

    # A[r, p, local(low)] += w_low etc.; an untouched row only ever has weight 0
    A = xp.zeros((R, P, max(K, 1)), dtype=coords.dtype)
    pp = xp.broadcast_to(xp.arange(P)[None, :, None], (R, P, G))
    scatter_add(A, (rr, pp, xp.maximum(local[rr, low], 0)), w_low)
    scatter_add(A, (rr, pp, xp.maximum(local[rr, high], 0)), w_high)
    return index, A[:, :, :K], count


class SeparablePlan(NamedTuple):
    """Everything needed to apply ``A_y @ V_r @ A_x^T`` to each RoI's block of the map."""

    batch: Any  # (R,) int64 image of each RoI
    rows: Any  # (R, Ky) int64 map rows each RoI reads (sorted, unique, padded with 0)
    A_y: Any  # (R, PY, Ky) row interpolation matrices
    n_rows: Any  # (R,) int64 number of real entries of ``rows``
    cols: Any  # (R, Kx) int64 map columns each RoI reads
    A_x: Any  # (R, PX, Kx) column interpolation matrices
    n_cols: Any  # (R,) int64 number of real entries of ``cols``


_GPU_CHUNK_ELEMENTS = 1 << 26  # GPU: gather at most ~64M elements (256 MiB float32) per step


def one_roi_at_a_time(xp) -> bool:
    """The one backend choice of the RoI ops: loop over single RoIs (CPU) or batch them.

    On the CPU one RoI at a time is fastest (its block stays in cache, no padding) and
    its rows/cols are unique, so the backward can use a plain indexed ``+=``. On a GPU
    per-RoI kernel launches would dominate, so RoIs go in padded batches and the
    backward uses ``scatter_add``. (Tests flip this to run the batched path on NumPy.)
    """
    return xp is np


def _steps(plan: SeparablePlan, channels: int):
    """(RoI slice, Ky, Kx, image or None) for each step of the RoI loop."""
    xp = get_xp(plan.A_y)
    R = plan.batch.shape[0]
    if one_roi_at_a_time(xp):
        n_rows, n_cols, batch = plan.n_rows.tolist(), plan.n_cols.tolist(), plan.batch.tolist()
        for r in range(R):
            yield slice(r, r + 1), n_rows[r], n_cols[r], batch[r]
    else:
        Ky, Kx = plan.rows.shape[1], plan.cols.shape[1]
        step = max(1, _GPU_CHUNK_ELEMENTS // max(Ky * Kx * channels, 1))
        for s in range(0, R, step):
            yield slice(s, min(s + step, R)), Ky, Kx, None


def separable_forward(xt, plan: SeparablePlan, reduce=None):
    """``S[r] = A_y[r] @ V_r @ A_x[r]^T`` for every RoI, V_r its touched block of the map.

    Columns first: ``A_x @ V_r[k]`` for each block row k, then ``A_y @`` for each output
    column. Every product is a small matrix of C-vectors (at most PX x Kx x C multiply-
    adds), which BLAS runs well on one thread; one large product per RoI would be
    threaded, and on a busy machine waiting for the second thread costs milliseconds.

    Args:
        xt: (N, H, W, C) the feature map, channels last (so a block gather moves whole
            C-vectors).
        plan: the RoIs' row/column matrices (``interpolation_matrix`` of each axis).
        reduce: optional ``reduce(S_chunk, roi_slice) -> out_chunk`` applied step by step
            (e.g. a max over samples), so the full S is never held at once. Chunks are
            laid out (c, PX, PY, C), the order the products leave, and so is its result.
    Returns:
        (R, C, PY, PX), NCHW like the RoI ops' outputs (each chunk is transposed while
        it is small and in cache), or the same for what ``reduce`` makes of S.
    """
    xp = get_xp(xt)
    C = xt.shape[-1]
    PY, PX = plan.A_y.shape[1], plan.A_x.shape[1]
    out = []
    for sl, Ky, Kx, b in _steps(plan, C):
        if b is not None:  # (1, Ky, Kx, C): one RoI's block
            block = xt[b][plan.rows[sl.start, :Ky, None], plan.cols[sl.start, None, :Kx]][None]
        else:  # (c, Ky, Kx, C): a batch of padded blocks
            block = xt[plan.batch[sl, None, None], plan.rows[sl, :, None], plan.cols[sl, None, :]]
        t = plan.A_x[sl, None, :, :Kx] @ block  # (c, Ky, PX, C): columns, row by row
        s = plan.A_y[sl, None, :, :Ky] @ t.transpose(0, 2, 1, 3)  # (c, PX, PY, C): rows
        s = s if reduce is None else reduce(s, sl)
        out.append(xp.ascontiguousarray(s.transpose(0, 3, 2, 1)))  # (c, C, PY, PX)
    if not out:  # no RoIs: reduce an empty chunk for the output shape
        s = xp.zeros((0, PX, PY, C), dtype=xt.dtype)
        s = s if reduce is None else reduce(s, slice(0, 0))
        return s.transpose(0, 3, 2, 1)
    return xp.concatenate(out, axis=0)


def separable_backward(dout, plan: SeparablePlan, xt_shape: tuple, expand=None):
    """Adjoint of ``separable_forward``: ``dV_r = A_y[r]^T @ dS[r] @ A_x[r]``, scattered.

    Args:
        dout: (R, C, PY, PX) upstream gradient of the forward's output; with ``expand``
            (``expand(d_chunk, roi_slice) -> dS_chunk``, chunks laid out (c, X, Y, C) and
            (c, PX, PY, C)) the gradient of what ``reduce`` made of S.
        plan: as in the forward.
        xt_shape: (N, H, W, C).
    Returns:
        dxt (N, H, W, C), each RoI's block gradient added where the block was read.
    """
    xp = get_xp(dout)
    C = xt_shape[-1]
    dxt = xp.zeros(xt_shape, dtype=dout.dtype)
    for sl, Ky, Kx, b in _steps(plan, C):
        d = xp.ascontiguousarray(dout[sl].transpose(0, 3, 2, 1))  # (c, X, Y, C)
        d = d if expand is None else expand(d, sl)  # (c, PX, PY, C)
        dt = plan.A_y[sl, None, :, :Ky].swapaxes(-1, -2) @ d  # (c, PX, Ky, C): rows
        dblock = plan.A_x[sl, None, :, :Kx].swapaxes(-1, -2) @ dt.transpose(0, 2, 1, 3)
        # dblock: (c, Ky, Kx, C), columns
        if b is not None:  # one RoI: its rows and cols are unique, so += loses nothing
            dxt[b][plan.rows[sl.start, :Ky, None], plan.cols[sl.start, None, :Kx]] += dblock[0]
        else:  # blocks of different RoIs overlap: accumulate repeated indices
            index = (plan.batch[sl, None, None], plan.rows[sl, :, None], plan.cols[sl, None, :])
            scatter_add(dxt, index, dblock)
    return dxt
