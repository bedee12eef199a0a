"""Bilinear upsampling (``align_corners=False``), forward and backward.

The keypoint predictor (paper section 5; torchvision's ``KeypointRCNNPredictor``) ends
with a 4x4 stride-2 deconvolution to 28x28 and then *bilinear* upscaling by 2 to 56x56:

    F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False,
                  recompute_scale_factor=False)

The upscaling is part of the network, so it needs a backward pass. Semantics are those
of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. Along one
axis, output index d samples the input at

    s = max(scale * (d + 0.5) - 0.5, 0)           (pixel centres at half-integers)
    i0 = min(floor(s), in - 1),  i1 = min(i0 + 1, in - 1),  l1 = s - i0,  l0 = 1 - l1

where ``scale = 1 / scale_factor`` when a scale factor is given (PyTorch's
``compute_scales_value``; the output size is floor(in * scale_factor)) and
``scale = in / out`` when a size is given. As in PyTorch's CPU kernel:

- ``scale`` is a number of the input's dtype (for float32, ``float32(1 / 2.0)`` or
  ``float32(in) / float32(out)``), and ``scale * (d + 0.5) - 0.5`` is rounded once to that
  dtype, as the compiled fused multiply-add does: the neighbours and weights are PyTorch's
  bit for bit in float32 (within an ulp in float64);
- an axis whose output length equals its input length is copied (weights 1 and 0), even
  when the scale factor is not 1.

The map is linear and separable: with the (out, in) interpolation matrices A_h and A_w
(row d holds l0 at column i0 and l1 at column i1; the two add up when i0 = i1),

    out = A_h @ x @ A_w^T        and so        dx = A_h^T @ dout @ A_w.

Both passes are these matrix products: the forward one GEMM over every row of every map
(``x @ A_w^T``) and one small batched product per map (``A_h @ .``), the backward their
transposes. The matrices are mostly zeros (two entries a row), so a pair of weighted
gathers would do a fraction of the multiply-adds, but on a CPU each gather pass and each
product of two whole arrays is a trip through memory, and the GEMMs are several times
faster (the keypoint predictor's (44, 17, 28, 28) -> 56 x 56: 2 ms against 18 ms on a
2-core machine). The zeros add nothing, so the terms and weights are PyTorch's; PyTorch's
kernel adds them in another order, so outputs and gradients agree with PyTorch's and with
the loop reference to rounding (an ulp).

Not ``torch.nn.UpsamplingBilinear2d``, which uses ``align_corners=True``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, scatter_add
from .module import Module
from .sizes import interpolate_output_size


def bilinear_source_index(in_size: int, out_size: int, scale_factor, dtype, xp):
    """Neighbours and weights of 1-D linear interpolation along one axis (no gradient).

    Args:
        in_size, out_size: lengths of the axis before and after.
        scale_factor: the factor given to ``F.interpolate`` (the source step is its
            inverse), or None when the output size was given (step in/out).
        dtype: the input's float dtype, in which PyTorch computes the source positions.
    Returns:
        i0, i1: (out_size,) int64 input indices; l0, l1: (out_size,) their weights in
        ``dtype`` (l0 + l1 = 1).
    """
    dtype = np.dtype(dtype)
    if out_size == in_size:  # PyTorch's copy shortcut
        i = xp.arange(out_size, dtype=np.int64)
        return i, i, xp.ones(out_size, dtype=dtype), xp.zeros(out_size, dtype=dtype)
    if scale_factor is not None:
        scale = dtype.type(1.0 / scale_factor)  # compute_scales_value: 1/s, then cast
    else:
        scale = dtype.type(in_size) / dtype.type(out_size)
    dst = xp.arange(out_size, dtype=np.float64)
    # scale * (d + 0.5) - 0.5 rounded once to dtype (the kernel's fused multiply-add;
    # exact in float64 when scale is a float32)
    src = (float(scale) * (dst + 0.5) - 0.5).astype(dtype)
    src = xp.maximum(src, 0)  # the first half pixel reads the first centre
    i0 = xp.minimum(xp.floor(src).astype(np.int64), in_size - 1)
    l1 = xp.clip(src - i0.astype(dtype), 0, 1)
    i1 = i0 + (i0 < in_size - 1).astype(np.int64)  # at the last pixel: itself (edge clamp)
    return i0, i1, 1 - l1, l1


def interpolation_matrix(i0, i1, l0, l1, in_size: int):
    """The (out, in) matrix A of one axis: ``A[d, i0[d]] += l0[d]``, ``A[d, i1[d]] += l1[d]``."""
    xp = get_xp(i0)
    out_size = i0.shape[0]
    a = xp.zeros((out_size, in_size), dtype=l0.dtype)
    rows = xp.arange(out_size, dtype=np.int64)
    scatter_add(a, (rows, i0), l0)
    scatter_add(a, (rows, i1), l1)  # adds to the same entry at the edge, where i0 == i1
    return a


class UpsampleBilinear2dCache(NamedTuple):
    """What ``upsample_bilinear2d_backward`` needs. The map is linear in x, so x is not
    kept: only its shape and the two small interpolation matrices."""

    x_shape: tuple  # (N, C, H, W) of the input
    a_h: Any  # (Ho, H): A_h, the rows' interpolation matrix
    a_w: Any  # (Wo, W): A_w, the columns'


def upsample_bilinear2d_naive(x, size=None, scale_factor=None):
    """Loop reference for the forward: one output pixel at a time.

    The neighbours and weights of each pixel are computed with NumPy scalars of x's
    dtype, independently of ``bilinear_source_index``'s vectorised form::

        out[.., i, j] = (1-ly) ((1-lx) x[.., y0, x0] + lx x[.., y0, x1])
                        + ly   ((1-lx) x[.., y1, x0] + lx x[.., y1, x1])
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    (Ho, Wo), (s_h, s_w) = interpolate_output_size("upsample_bilinear2d", x.shape, size,
                                                   scale_factor)
    t = np.dtype(x.dtype).type

    def source(d, n_in, n_out, s):
        if n_in == n_out:
            return d, d, t(1), t(0)
        scale = t(1.0 / s) if s is not None else t(n_in) / t(n_out)
        pos = max(t(float(scale) * (d + 0.5) - 0.5), t(0))
        i0 = min(math.floor(pos), n_in - 1)
        lam = min(max(pos - t(i0), t(0)), t(1))
        return i0, min(i0 + 1, n_in - 1), t(1) - lam, lam

    out = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        y0, y1, hy, ly = source(i, H, Ho, s_h)
        for j in range(Wo):
            x0, x1, hx, lx = source(j, W, Wo, s_w)
            top = x[:, :, y0, x0] * hx + x[:, :, y0, x1] * lx
            bottom = x[:, :, y1, x0] * hx + x[:, :, y1, x1] * lx
            out[:, :, i, j] = top * hy + bottom * ly
    return out


def upsample_bilinear2d_forward(x, size=None, scale_factor=None):
    """Bilinear resize of the last two axes, as ``F.interpolate(mode="bilinear",
    align_corners=False)`` (``recompute_scale_factor`` unset or False).

    out[n, c, i, j] = sum over a in {r0, r1}, b in {c0, c1} of lr_a[i] lc_b[j] x[n, c, a, b]

    Args:
        x: (N, C, H, W), float.
        size: an int or a pair (Ho, Wo); or
        scale_factor: a number or a pair (s_h, s_w); output (floor(H s_h), floor(W s_w))
            and source step 1/s (the keypoint predictor's ``scale_factor=2.0``).
    Returns:
        out: (N, C, Ho, Wo), x's dtype.
        cache: an ``UpsampleBilinear2dCache``.
    Raises:
        ValueError: both or neither of size and scale_factor, or an empty input/output.
    """
    xp = get_xp(x)
    H, W = x.shape[-2:]
    (Ho, Wo), (s_h, s_w) = interpolate_output_size("upsample_bilinear2d", x.shape, size,
                                                   scale_factor)
    a_h = interpolation_matrix(*bilinear_source_index(H, Ho, s_h, x.dtype, xp), H)  # (Ho, H)
    a_w = interpolation_matrix(*bilinear_source_index(W, Wo, s_w, x.dtype, xp), W)  # (Wo, W)
    n, c = x.shape[:2]
    # along W: every row of every map at once, one (N*C*H, W) @ (W, Wo) GEMM
    cols = (xp.ascontiguousarray(x).reshape(-1, W) @ a_w.T).reshape(n, c, H, Wo)
    out = xp.matmul(a_h, cols)  # along H: (Ho, H) @ (N, C, H, Wo) -> (N, C, Ho, Wo)
    return out, UpsampleBilinear2dCache(tuple(x.shape), a_h, a_w)


def upsample_bilinear2d_backward(dout, cache: UpsampleBilinear2dCache):
    """Gradient of ``upsample_bilinear2d_forward``: ``dx = A_h^T @ dout @ A_w``.

    Each input pixel receives, from every output pixel that read it, that output's
    gradient times the weight it was read with.

    Args:
        dout: (N, C, Ho, Wo).
    Returns:
        dx: (N, C, H, W), dout's dtype.
    """
    xp = get_xp(dout)
    a_h = cache.a_h.astype(dout.dtype, copy=False)  # (Ho, H)
    a_w = cache.a_w.astype(dout.dtype, copy=False)  # (Wo, W)
    g = xp.matmul(dout, a_w)  # (N, C, Ho, Wo) @ (Wo, W) -> (N, C, Ho, W)
    return xp.matmul(a_h.T, g)  # (H, Ho) @ (N, C, Ho, W) -> (N, C, H, W)


class UpsampleBilinear2d(Module):
    """``torch.nn.Upsample(mode="bilinear", align_corners=False)`` over the pair (no
    parameters, so no state-dict entries)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor

    def forward(self, x):
        out, cache = upsample_bilinear2d_forward(x, self.size, self.scale_factor)
        self.push(cache)
        return out

    def backward(self, dout):
        return upsample_bilinear2d_backward(dout, self.pop())
