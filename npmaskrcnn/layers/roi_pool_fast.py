"""RoIPool's engine: the numbers of ``roi_pool.py``'s loops, with a separable max.

The max over a rectangle is the max over its rows of the max over its columns, and the
first row-major argmax is the first row reaching the max, then the first column of that
row reaching it. Per RoI, one strided max per column bin (channels last, so each is an
elementwise max of contiguous C-vectors), one per row bin, then two small searches for the
argmax. The backward is one ``scatter_add`` of every bin's gradient at its argmax.

Semantics (rounding, empty bins, ties, the -FLT_MAX start) are those documented in
``roi_pool.py``; ``tests/layers/test_roi_pool.py`` checks this file against its loops.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp, scatter_add
from .roi_pool import _FLT_MAX, RoIPoolCache, quantize_rois
from .sizes import as_pair


def _bin_edges(start, size, P: int, limit: int, dtype):
    """Integer bin edges (R, P) lo, hi of one axis, clamped to [0, limit]."""
    xp = get_xp(start)
    bin_size = size.astype(dtype) / np.dtype(dtype).type(P)  # (R,)
    p = xp.arange(P, dtype=dtype)[None, :]
    lo = xp.floor(p * bin_size[:, None]).astype(np.int64) + start[:, None]
    hi = xp.ceil((p + 1) * bin_size[:, None]).astype(np.int64) + start[:, None]
    return xp.clip(lo, 0, limit), xp.clip(hi, 0, limit)


def roi_pool_forward(x, rois, output_size, spatial_scale=1.0):
    """RoIPool, as ``torchvision.ops.roi_pool``.

    Args:
        x: (N, C, H, W) feature maps.
        rois: (R, 5) rows ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        output_size: PH or (PH, PW).
        spatial_scale: feature size / image size (1/16 for C4).
    Returns:
        out (R, C, PH, PW) and the cache. No gradient flows into ``rois``.
    """
    xp = get_xp(x, rois)
    PH, PW = as_pair(output_size)
    N, C, H, W = x.shape
    R = rois.shape[0]
    q = quantize_rois(rois, spatial_scale, x.dtype)
    h_lo, h_hi = _bin_edges(q[:, 1], q[:, 3], PH, H, x.dtype)  # (R, PH)
    w_lo, w_hi = _bin_edges(q[:, 0], q[:, 2], PW, W, x.dtype)  # (R, PW)
    batch = rois[:, 0].astype(np.int64)
    empty = (h_hi <= h_lo)[:, :, None] | (w_hi <= w_lo)[:, None, :]  # (R, PH, PW)

    xt = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, H, W, C): C-vectors contiguous
    xt_flat = xt.reshape(-1)
    channel = xp.arange(C)
    out = xp.zeros((R, C, PH, PW), dtype=x.dtype)
    argmax = xp.full((R, C, PH, PW), -1, dtype=np.int64)
    # A loop over RoIs (each has its own window) and, inside, over bins: PH + PW reductions
    # per RoI, each vectorised over a bin's rows or columns and all channels.
    hl, hh, wl, wh, bl = (a.tolist() for a in (h_lo, h_hi, w_lo, w_hi, batch))
    for r in range(R):
        y0, y1, x0, x1 = min(hl[r]), max(hh[r]), min(wl[r]), max(wh[r])
        if y1 <= y0 or x1 <= x0:
            continue  # every bin empty
        win = xt[bl[r], y0:y1, x0:x1]  # (h, w, C)
        col_max = xp.full((y1 - y0, PW, C), -np.inf, dtype=x.dtype)
        m = xp.full((PH, PW, C), -np.inf, dtype=x.dtype)  # the bins' maxima
        h_arg = xp.zeros((PH, PW, C), dtype=np.int64)
        for pw in range(PW):  # max over each column bin, for every row
            if wh[r][pw] > wl[r][pw]:
                xp.max(win[:, wl[r][pw] - x0 : wh[r][pw] - x0], axis=1, out=col_max[:, pw])
        for ph in range(PH):  # max over each row bin, and the first row reaching it
            n = hh[r][ph] - hl[r][ph]
            if n <= 0:
                continue
            rows = col_max[hl[r][ph] - y0 : hh[r][ph] - y0]  # (n, PW, C)
            xp.max(rows, axis=0, out=m[ph])
            # first i with rows[i] == max: n - max_i((rows[i] == max) * (n - i))
            rank = (rows == m[ph]) * xp.arange(n, 0, -1, dtype=np.int32)[:, None, None]
            h_arg[ph] = hl[r][ph] + n - rank.max(axis=0)
        # in the winning row, the first column of the bin reaching the max: read the bin's
        # columns (the last one repeated up to J) from xt, where channels are adjacent
        J = max(hi - lo for lo, hi in zip(wl[r], wh[r]))
        cols = xp.clip(xp.minimum(w_lo[r] + xp.arange(J)[:, None], w_hi[r] - 1), 0, W - 1)
        base = ((bl[r] * H + h_arg) * W) * C + channel  # (PH, PW, C) offsets of column 0
        vals = xt_flat[base + (cols * C)[:, None, :, None]]  # (J, PH, PW, C)
        rank = (vals == m) * xp.arange(J, 0, -1, dtype=np.int32)[:, None, None, None]
        w_arg = w_lo[r, None, :, None] + J - rank.max(axis=0)
        found = ~empty[r, :, :, None] & (m > -_FLT_MAX)  # the kernel's ">" from -FLT_MAX
        m = xp.where(empty[r, :, :, None], 0, xp.maximum(m, -_FLT_MAX))
        # (PH, PW, C) -> (C, PH, PW) while the RoI's results are small and in cache
        out[r] = m.transpose(2, 0, 1)
        argmax[r] = xp.where(found, h_arg * W + w_arg, -1).transpose(2, 0, 1)
    return out, RoIPoolCache(tuple(x.shape), batch, argmax)


def roi_pool_backward(dout, cache: RoIPoolCache):
    """Gradient of ``roi_pool_forward``: each bin's dout added at its argmax.

    dx[b, c].flat[argmax[r, c, ph, pw]] += dout[r, c, ph, pw] for every bin with a max,
    with ``scatter_add``, which sums repeated positions (one pixel can win the bins of
    several overlapping RoIs).

    Args:
        dout: (R, C, PH, PW).
    Returns:
        dx (N, C, H, W).
    """
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    if dout.shape[0] == 0:
        return xp.zeros(cache.x_shape, dtype=dout.dtype)
    plane = (cache.batch[:, None] * C + xp.arange(C)[None, :]) * (H * W)  # (R, C)
    flat = plane[:, :, None, None] + cache.argmax  # (R, C, PH, PW) index into dx.ravel()
    hit = cache.argmax >= 0
    dx = xp.zeros(N * C * H * W, dtype=dout.dtype)
    scatter_add(dx, flat[hit], dout[hit])
    return dx.reshape(cache.x_shape)
