"""Nearest-neighbour upsampling, forward and backward.

The FPN's top-down pathway upsamples each coarser map 2x before adding the lateral
1x1 projection (torchvision: ``F.interpolate(inner, size=lateral.shape[-2:],
mode="nearest")``). Semantics are those of ``torch.nn.functional.interpolate`` with
``mode="nearest"``:

- with ``scale_factor`` s, the output size is floor(in * s) and the source index is
  ``src = min(floor(dst * (1/s)), in - 1)``;
- with ``size``, ``src = min(floor(dst * (in/out)), in - 1)``;
- the scale is a float32, as in PyTorch's kernel, so the indices match PyTorch's
  bit for bit (PyTorch's CPU shortcuts ``out == in`` -> identity and
  ``out == 2 in`` -> ``dst // 2`` are kept too).

Each output pixel copies one input pixel, so the backward pass sums, for every input
pixel, the gradients of all its copies.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, scatter_add
from .module import Module
from .sizes import interpolate_output_size


def source_index(n_in: int, n_out: int, scale_factor=None) -> np.ndarray:
    """The input index copied by each output index along one axis: (n_out,) int64.

    A function of the sizes only, so it is computed on the host (NumPy): the model's
    arrays need it only to gather, and its shape tests need no device round-trip.
    """
    dst = np.arange(n_out, dtype=np.int64)
    if n_out == n_in:
        return dst
    if n_out == 2 * n_in:
        return dst // 2
    # PyTorch: scale = float(1 / scale_factor) if given, else float(in) / out, in float32
    scale = np.float32(1.0 / scale_factor if scale_factor is not None else n_in / n_out)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def _integer_factor(src: np.ndarray, n_in: int, n_out: int):
    """k when ``src == dst // k`` (each input copied k times in a row), else None."""
    if n_in == 0 or n_out % n_in != 0:
        return None
    k = n_out // n_in
    return k if np.array_equal(src, np.arange(n_out, dtype=np.int64) // k) else None


class UpsampleNearest2dCache(NamedTuple):
    """What ``upsample_nearest2d_backward`` needs."""

    x_shape: tuple  # (N, C, H, W) of the input
    src_h: Any  # (Ho,) int64 (NumPy): input row copied by each output row
    src_w: Any  # (Wo,) int64 (NumPy): input column copied by each output column
    factor_h: int | None  # k when output row r copies input row r // k (fast path)
    factor_w: int | None  # same for columns


def upsample_nearest2d_naive(x, scale_factor=None, size=None):
    """Loop reference for the forward: out[n, c, i, j] = x[n, c, src_h[i], src_w[j]].

    The source index is computed per pixel with NumPy float32 scalars (and PyTorch's
    two CPU shortcuts), independently of ``source_index``'s vectorised form.
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    (Ho, Wo), (s_h, s_w) = interpolate_output_size("upsample_nearest2d", x.shape, size,
                                                   scale_factor)

    def src(dst, n_in, n_out, s):
        if n_out == n_in:
            return dst
        if n_out == 2 * n_in:
            return dst // 2
        scale = np.float32(1.0 / s if s is not None else n_in / n_out)
        return min(int(math.floor(np.float32(dst) * scale)), n_in - 1)

    out = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, src(i, H, Ho, s_h), src(j, W, Wo, s_w)]
    return out


def upsample_nearest2d_forward(x, scale_factor=None, size=None):
    """Nearest-neighbour resize: out[n, c, i, j] = x[n, c, src_h[i], src_w[j]].

    Follows ``F.interpolate(x, scale_factor=..., size=..., mode="nearest")``; exactly
    one of ``scale_factor`` and ``size`` is given.

    Args:
        x: (N, C, H, W).
        scale_factor: a number or a pair (s_h, s_w); output (floor(H s_h), floor(W s_w)).
        size: an int or a pair (Ho, Wo).
    Returns:
        out: (N, C, Ho, Wo).
        cache: an ``UpsampleNearest2dCache``.
    """
    xp = get_xp(x)
    H, W = x.shape[-2:]
    (Ho, Wo), (s_h, s_w) = interpolate_output_size("upsample_nearest2d", x.shape, size,
                                                   scale_factor)
    src_h = source_index(H, Ho, s_h)
    src_w = source_index(W, Wo, s_w)
    k_h, k_w = _integer_factor(src_h, H, Ho), _integer_factor(src_w, W, Wo)
    if k_h is not None and k_w is not None:
        # each pixel copied into a k_h x k_w block (the FPN's x2): repeat along W,
        # then whole rows along H (contiguous copies; cheaper than the gathers below)
        out = xp.repeat(xp.repeat(x, k_w, axis=3), k_h, axis=2)
    else:  # (N, C, H, W) -> (N, C, Ho, W) -> (N, C, Ho, Wo)
        out = xp.take(xp.take(x, xp.asarray(src_h), axis=2), xp.asarray(src_w), axis=3)
    return out, UpsampleNearest2dCache(tuple(x.shape), src_h, src_w, k_h, k_w)


def _sum_copies(g, axis: int, src, n_in: int, factor):
    """Sum ``g`` along ``axis`` over output indices that share a source index.

    ``g`` has n_out entries along ``axis``; the result has n_in. With an integer
    factor k the copies of input i are the k consecutive entries i*k .. i*k + k-1,
    a reshape and a sum; otherwise a scatter-add over ``src``.
    """
    xp = get_xp(g)
    if factor is not None:
        shape = g.shape[:axis] + (n_in, factor) + g.shape[axis + 1 :]
        return g.reshape(shape).sum(axis=axis + 1)  # (.., n_in*k, ..) -> (.., n_in, ..)
    moved = xp.moveaxis(g, axis, 0)  # (n_out, ...): scatter along the first axis
    acc = xp.zeros((n_in,) + moved.shape[1:], dtype=g.dtype)
    scatter_add(acc, xp.asarray(src), moved)
    return xp.moveaxis(acc, 0, axis)


def upsample_nearest2d_backward(dout, cache: UpsampleNearest2dCache):
    """Gradient of ``upsample_nearest2d_forward``.

    dx[n, c, h, w] = sum over {i: src_h[i] = h} and {j: src_w[j] = w} of dout[n, c, i, j],
    done one axis at a time (the map is separable).

    Args:
        dout: (N, C, Ho, Wo).
    Returns:
        dx: (N, C, H, W).
    """
    H, W = cache.x_shape[-2:]
    g = _sum_copies(dout, 2, cache.src_h, H, cache.factor_h)  # (N, C, Ho, Wo) -> (N, C, H, Wo)
    return _sum_copies(g, 3, cache.src_w, W, cache.factor_w)  # -> (N, C, H, W)


class Upsample(Module):
    """``torch.nn.Upsample(mode="nearest")`` over the functional pair (no parameters)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor

    def forward(self, x):
        out, cache = upsample_nearest2d_forward(x, self.scale_factor, self.size)
        self.push(cache)
        return out

    def backward(self, dout):
        return upsample_nearest2d_backward(dout, self.pop())
