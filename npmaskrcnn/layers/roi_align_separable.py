"""RoIAlign's CPU engine: per RoI, two small matrix products on its block of the map.

The bilinear weight of a sample's corner is a row weight times a column weight, so the
average of a bin's samples is ``A_y @ V @ A_x^T``: V (ny, nx, C) holds the only rows and
columns the RoI's samples touch, and A_y (PH, ny) / A_x (PW, nx) are small interpolation
matrices (``interpolation_matrix``) whose row p averages the weights of bin p's samples.
The backward is the transposed products, ``dV = A_y^T @ dout @ A_x``, added back into
those rows and columns. For max, the matrices get one row per sample instead of per bin
and the max is taken over the resulting samples (``max_reduce`` / ``max_expand``).

One RoI at a time: its block stays in cache, and its rows and columns are unique, so the
backward adds its block with a plain indexed ``+=``. Used by ``roi_align_fast.py`` on
NumPy arrays.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, scatter_add
from .bilinear import linear_weights_1d


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


def _steps(plan: SeparablePlan):
    """(RoI slice, Ky, Kx, image) for each RoI: the CPU engine's loop."""
    n_rows, n_cols, batch = plan.n_rows.tolist(), plan.n_cols.tolist(), plan.batch.tolist()
    for r in range(len(batch)):
        yield slice(r, r + 1), n_rows[r], n_cols[r], batch[r]


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
    for sl, Ky, Kx, b in _steps(plan):
        # (1, Ky, Kx, C): the RoI's block of touched rows and columns
        block = xt[b][plan.rows[sl.start, :Ky, None], plan.cols[sl.start, None, :Kx]][None]
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
    dxt = xp.zeros(xt_shape, dtype=dout.dtype)
    for sl, Ky, Kx, b in _steps(plan):
        d = xp.ascontiguousarray(dout[sl].transpose(0, 3, 2, 1))  # (c, X, Y, C)
        d = d if expand is None else expand(d, sl)  # (c, PX, PY, C)
        dt = plan.A_y[sl, None, :, :Ky].swapaxes(-1, -2) @ d  # (c, PX, Ky, C): rows
        dblock = plan.A_x[sl, None, :, :Kx].swapaxes(-1, -2) @ dt.transpose(0, 2, 1, 3)
        # dblock: (1, Ky, Kx, C), columns; the RoI's rows and cols are unique, so a plain
        # indexed += loses nothing
        dxt[b][plan.rows[sl.start, :Ky, None], plan.cols[sl.start, None, :Kx]] += dblock[0]
    return dxt


def max_reduce(argmax, grid_h, grid_w, PH: int, PW: int, grid: tuple):
    """``reduce`` for ``separable_forward``: max over each bin's samples, argmax saved."""
    xp = get_xp(argmax)
    Gh, Gw = grid
    gy, gx = xp.arange(Gh), xp.arange(Gw)

    def reduce(s, sl):
        c, C = s.shape[0], s.shape[-1]
        if Gh * Gw == 0:  # no RoI has a sample (adaptive grid of empty RoIs)
            argmax[sl] = -1
            return xp.zeros((c, PW, PH, C), dtype=s.dtype)
        # (c, PW*Gw, PH*Gh, C) -> (c, PW, PH, C, Gh*Gw): a bin's samples last, row-major
        s = s.reshape(c, PW, Gw, PH, Gh, C).transpose(0, 1, 3, 5, 4, 2)
        s = s.reshape(c, PW, PH, C, Gh * Gw)
        real = (gy[None, :, None] < grid_h[sl, None, None]) & (
            gx[None, None, :] < grid_w[sl, None, None])  # (c, Gh, Gw): not padding
        s = xp.where(real.reshape(c, 1, 1, 1, Gh * Gw), s, -np.inf)  # padding never wins
        k = xp.argmax(s, axis=-1)  # first maximum on ties
        has = (grid_h[sl] * grid_w[sl] > 0)[:, None, None, None]
        argmax[sl] = xp.where(has, k, -1)
        return xp.where(has, xp.take_along_axis(s, k[..., None], axis=-1)[..., 0], 0)

    return reduce


def max_expand(argmax, grid: tuple):
    """``expand`` for ``separable_backward``: each bin's gradient onto its winning sample."""
    xp = get_xp(argmax)
    Gh, Gw = grid

    def expand(d, sl):
        c, PW, PH, C = d.shape
        onehot = argmax[sl][..., None] == xp.arange(Gh * Gw)  # (c, PW, PH, C, Gh*Gw)
        ds = xp.where(onehot, d[..., None], 0).reshape(c, PW, PH, C, Gh, Gw)
        return ds.transpose(0, 1, 5, 2, 4, 3).reshape(c, PW * Gw, PH * Gh, C)

    return expand
