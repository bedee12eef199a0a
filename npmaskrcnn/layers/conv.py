"""2-D convolution: ``conv2d_forward`` / ``conv2d_backward`` and the ``Conv2d`` module.

Every convolution of Mask R-CNN (the ResNet stem and bottlenecks, the FPN's lateral 1x1
and output 3x3 convs, the RPN head, the mask head's four 3x3 convs and its 1x1
predictor) goes through this pair. It is one GEMM on im2col columns
(see ``im2col.py``)::

    out[n, f] = sum_{c, i, j} w[f, c, i, j] * x_pad[n, c, oh*sh + i, ow*sw + j] + b[f]
              = (W @ cols)[f, (n, oh, ow)] + b[f],     W = w.reshape(F, C*KH*KW)

and its gradients are two more GEMMs and a col2im::

    dW = dout_mat @ cols^T,   dcols = W^T @ dout_mat,   dx = col2im(dcols),
    db[f] = sum_{n, oh, ow} dout[n, f, oh, ow]

where ``dout_mat`` is ``dout`` as (F, N*OH*OW). A 1x1 stride-1 unpadded conv needs no
im2col at all: it is ``W @ x[n]`` with ``x[n]`` viewed as (C, H*W).

Speed (NumPy, float32): the GEMMs are BLAS's; the rest is memory traffic. So the
columns are built and consumed in chunks of a few MiB (``chunk_ranges``) that stay in
cache, each GEMM writes straight into its NCHW slice of the output, the columns are
recomputed in the backward instead of being kept, and the 3x3 pad-1 convs build their
columns from long contiguous runs (``im2col_same_width``).

Semantics of ``torch.nn.functional.conv2d`` (zero padding, floor output size,
``groups=1``, ``dilation=1``): ``OH = (H + 2*ph - KH) // sh + 1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import Generator, get_xp
from .im2col import (
    as_pair,
    chunk_ranges,
    col2im_add,
    conv_output_size,
    im2col_same_width,
    im2col_windows,
    pad_input,
    pad_rows_flat,
    same_width,
)
from .module import Module, kaiming_uniform


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs: the inputs. Columns are cheap to recompute chunk
    by chunk, and keeping them would cost C*KH*KW times the memory of x."""

    x: Any  # input (N, C, H, W): dW = dout cols(x)^T
    w: Any  # weight (F, C, KH, KW): dx from W^T dout
    stride: tuple  # (sh, sw)
    padding: tuple  # (ph, pw)
    has_bias: bool  # whether to return db or None


def _path(kernel, stride, padding) -> str:
    """Which of the three ways to compute a conv applies.

    - ``"pointwise"``: 1x1, stride 1, no padding: ``W @ x[n]``, no columns at all.
    - ``"same_width"``: stride 1, OW == W, ph < KH (every 3x3 pad-1 conv): columns by
      contiguous runs (``im2col_same_width``); the backward works on the columns of
      dout and needs no col2im (see ``_same_width_backward``).
    - ``"general"``: strided window columns (``im2col_windows``); col2im for dx.
    """
    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return "pointwise"
    if same_width(kernel, stride, padding) and padding[0] < kernel[0]:
        return "same_width"
    return "general"


def _chunk_views(cols, out, n0, n1, r0, r1):
    """A chunk's columns and its slice of the output, as stacks of per-image matrices.

    ``cols`` (K, images*rows*OW) becomes (images, K, rows*OW); ``out`` (N, M, OH, OW)
    becomes its (images, M, rows*OW) slice. Every per-image matrix has unit inner
    stride, so ``xp.matmul(a, cols3, out=out3)`` runs one GEMM per image that writes
    straight into NCHW, with no transpose afterwards.
    """
    n, m, h, w = out.shape
    cols3 = cols.reshape(cols.shape[0], n1 - n0, (r1 - r0) * w).transpose(1, 0, 2)
    return cols3, out.reshape(n, m, h * w)[n0:n1, :, r0 * w : r1 * w]


def conv2d_forward(x, w, b, stride=1, padding=0):
    """Cross-correlation of ``x`` with ``w`` plus a bias, as ``torch.nn.functional.conv2d``.

    ``out[:, :, rows] = W @ im2col(x)[:, chunk] + b``, chunk by chunk: each chunk's
    columns are written and read straight back by the GEMM while still in cache.

    Args:
        x: (N, C, H, W).
        w: (F, C, KH, KW), PyTorch's ``Conv2d.weight`` layout.
        b: (F,) or None.
        stride, padding: ints or (height, width) pairs; zero padding.
    Returns:
        out: (N, F, OH, OW), ``OH = (H + 2*ph - KH) // sh + 1`` (likewise OW).
        cache: a ``Conv2dCache``.
    Raises:
        ValueError: channel counts disagree, or the output would be empty.
    """
    xp = get_xp(x, w, b)
    stride, padding = as_pair(stride), as_pair(padding)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    if w.shape[1] != c:
        raise ValueError(f"conv2d: x has {c} channels but w expects {w.shape[1]}")
    oh = conv_output_size(h, kh, stride[0], padding[0])
    ow = conv_output_size(wd, kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: output size ({oh}, {ow}) is too small")
    cache = Conv2dCache(x, w, stride, padding, b is not None)
    w_mat = w.reshape(f, -1)  # (F, C*KH*KW)
    path = _path((kh, kw), stride, padding)
    if path == "pointwise":
        out = xp.matmul(w_mat, x.reshape(n, c, h * wd))  # (F, C) @ (N, C, HW) -> (N, F, HW)
        if b is not None:
            out += b.reshape(1, f, 1)
        return out.reshape(n, f, oh, ow), cache
    if path == "same_width":
        source = pad_rows_flat(x, padding)

        def columns(n0, n1, r0, r1):
            return im2col_same_width(source, x.shape, (kh, kw), padding, (n0, n1), (r0, r1))
    else:
        source = pad_input(x, padding)

        def columns(n0, n1, r0, r1):
            return im2col_windows(source, (kh, kw), stride, (n0, n1), (r0, r1))

    out = xp.empty((n, f, oh, ow), dtype=x.dtype)
    for n0, n1, r0, r1 in chunk_ranges(n, oh, ow, c * kh * kw):
        cols3, out3 = _chunk_views(columns(n0, n1, r0, r1), out, n0, n1, r0, r1)
        xp.matmul(w_mat, cols3, out=out3)  # (F, C*KH*KW) @ (images, C*KH*KW, rows*OW)
        if b is not None:
            out3 += b.reshape(1, f, 1)
    return out, cache


def conv2d_backward(dout, cache: Conv2dCache):
    """Gradients of ``conv2d_forward``, chunk by chunk like the forward.

    ``dW = dout_mat cols^T``, ``dx = col2im(W^T dout_mat)``, ``db = sum_{n,oh,ow} dout``,
    where ``dout_mat`` is dout as (F, N*OH*OW) and ``cols = im2col(x)`` is recomputed;
    see ``_same_width_backward`` for the same-width path.

    Args:
        dout: (N, F, OH, OW), upstream gradient.
    Returns:
        (dx, dw, db): shapes of x (N, C, H, W), w (F, C, KH, KW) and b (F,);
        ``db`` is None when the forward had no bias.
    """
    xp = get_xp(dout)
    x, w, stride, padding, has_bias = cache
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = dout.shape[2:]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    path = _path((kh, kw), stride, padding)
    if path == "same_width":
        return (*_same_width_backward(dout, x, w, padding), db)
    if path == "pointwise":
        d3, x3 = dout.reshape(n, f, oh * ow), x.reshape(n, c, h * wd)
        dx = xp.matmul(w.reshape(f, c).T, d3).reshape(x.shape)  # (C, F) @ (N, F, HW)
        dw_t = xp.zeros((c, f), dtype=dout.dtype)  # dW^T
        for i in range(n):
            dw_t += x3[i] @ d3[i].T  # (C, HW) @ (HW, F)
        return dx, xp.ascontiguousarray(dw_t.T).reshape(w.shape), db
    w_mat = w.reshape(f, -1)  # (F, C*KH*KW)
    x_pad = pad_input(x, padding)
    dx_pad = xp.zeros(x_pad.shape, dtype=dout.dtype)
    dw_t = xp.zeros((c * kh * kw, f), dtype=dout.dtype)  # dW^T
    for n0, n1, r0, r1 in chunk_ranges(n, oh, ow, c * kh * kw):
        cols = im2col_windows(x_pad, (kh, kw), stride, (n0, n1), (r0, r1))  # (C*KH*KW, L)
        # (images, F, rows*OW) -> (F, images*rows*OW); a view for a band of one image
        d_mat = dout.reshape(n, f, oh * ow)[n0:n1, :, r0 * ow : r1 * ow]
        d_mat = d_mat.transpose(1, 0, 2).reshape(f, -1)
        dw_t += cols @ d_mat.T  # (C*KH*KW, L) @ (L, F)
        d_cols = w_mat.T @ d_mat  # (C*KH*KW, F) @ (F, L)
        blocks = d_cols.reshape(c, kh, kw, n1 - n0, r1 - r0, ow).transpose(3, 0, 1, 2, 4, 5)
        rows = slice(r0 * stride[0], (r1 - 1) * stride[0] + kh)  # the band's window rows
        col2im_add(dx_pad[n0:n1, :, rows], blocks, stride)
    dx = dx_pad[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd]
    return xp.ascontiguousarray(dx), xp.ascontiguousarray(dw_t.T).reshape(w.shape), db


def _same_width_backward(dout, x, w, padding):
    """(dx, dw) of a same-width conv, from the columns of dout, chunk by chunk.

    With stride 1, dx is itself a convolution: of dout zero-padded by K-1-p, with the
    kernel rotated by 180 degrees and its channel axes swapped. Its columns D also give
    dW, so no col2im is needed::

        D = im2col(dout, K, stride 1, padding (KH-1-ph, KW-1-pw))   (F*KH*KW, N*H*W)
        dx_mat    = W_rot @ D,    W_rot[c, (f, i, j)] = w[f, c, KH-1-i, KW-1-j]
        dW_rot^T  = D @ x_mat^T,  dW[f, c, i, j] = dW_rot^T[(f, KH-1-i, KW-1-j), c]

    (KW-1-pw == pw here, so dout's convolution is same-width too.)
    """
    xp = get_xp(dout)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    d_padding = (kh - 1 - padding[0], kw - 1 - padding[1])
    # w (F, C, KH, KW) -> W_rot (C, F*KH*KW)
    w_rot = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
    flat = pad_rows_flat(dout, d_padding)
    dx = xp.empty(x.shape, dtype=dout.dtype)
    dw_rot_t = xp.zeros((f * kh * kw, c), dtype=dout.dtype)  # dW_rot^T
    for n0, n1, r0, r1 in chunk_ranges(n, h, wd, f * kh * kw):
        d_cols = im2col_same_width(flat, dout.shape, (kh, kw), d_padding, (n0, n1), (r0, r1))
        d_cols3, dx3 = _chunk_views(d_cols, dx, n0, n1, r0, r1)
        xp.matmul(w_rot, d_cols3, out=dx3)  # (C, F*KH*KW) @ (images, F*KH*KW, rows*W)
        # (images, C, rows, W) -> (C, images*rows*W); a view for a band of one image
        x_mat = x[n0:n1, :, r0:r1].transpose(1, 0, 2, 3).reshape(c, -1)
        dw_rot_t += d_cols @ x_mat.T  # (F*KH*KW, L) @ (L, C)
    dw = dw_rot_t.reshape(f, kh, kw, c).transpose(0, 3, 1, 2)[:, :, ::-1, ::-1]
    return dx, xp.ascontiguousarray(dw)


def conv2d_naive(x, w, b, stride=1, padding=0):
    """Loop version of ``conv2d_forward`` (reference for tests): one window at a time."""
    xp = get_xp(x, w, b)
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    x_pad = pad_input(x, (ph, pw))
    out = xp.zeros((n, f, oh, ow), dtype=x.dtype)
    for b_i in range(n):
        for k in range(f):
            for y in range(oh):
                for z in range(ow):
                    window = x_pad[b_i, :, y * sh : y * sh + kh, z * sw : z * sw + kw]
                    out[b_i, k, y, z] = (window * w[k]).sum() + (0 if b is None else b[k])
    return out


def conv2d_backward_naive(dout, x, w, b, stride=1, padding=0):
    """Loop version of ``conv2d_backward`` (reference for tests).

    Each output pixel adds ``dout * w[f]`` onto its window of ``dx_pad`` and
    ``dout * window`` onto ``dw[f]``.

    Returns:
        (dx, dw, db), ``db`` None when ``b`` is None.
    """
    xp = get_xp(dout, x, w)
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    x_pad = pad_input(x, (ph, pw))
    dx_pad = xp.zeros_like(x_pad)
    dw = xp.zeros_like(w)
    for b_i in range(n):
        for k in range(f):
            for y in range(dout.shape[2]):
                for z in range(dout.shape[3]):
                    g = dout[b_i, k, y, z]
                    rows, cols = slice(y * sh, y * sh + kh), slice(z * sw, z * sw + kw)
                    dx_pad[b_i, :, rows, cols] += g * w[k]
                    dw[k] += g * x_pad[b_i, :, rows, cols]
    dx = dx_pad[:, :, ph : ph + h, pw : pw + wd]
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return dx, dw, db


class Conv2d(Module):
    """``torch.nn.Conv2d`` (groups=1, dilation=1) over ``conv2d_forward`` / ``_backward``.

    Parameters ``weight`` (out_channels, in_channels, KH, KW) and ``bias``
    (out_channels,), both drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = in_channels*KH*KW, as PyTorch's default.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        bias: bool = True,
        rng: Generator | None = None,
        dtype=np.float32,
    ):
        super().__init__()
        rng = Generator(0) if rng is None else rng
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size)
        self.stride, self.padding = as_pair(stride), as_pair(padding)
        shape, fan_in = self.weight_shape_and_fan_in()
        self.add_param("weight", kaiming_uniform(rng, shape, fan_in, dtype))
        self.has_bias = bias
        if bias:
            self.add_param("bias", kaiming_uniform(rng, (out_channels,), fan_in, dtype))

    # the transposed conv reuses this class with its own layout and functional pair
    op_forward = staticmethod(conv2d_forward)
    op_backward = staticmethod(conv2d_backward)

    def weight_shape_and_fan_in(self):
        """(F, C, KH, KW) and PyTorch's fan_in = C*KH*KW."""
        kh, kw = self.kernel_size
        return (self.out_channels, self.in_channels, kh, kw), self.in_channels * kh * kw

    def forward(self, x):
        """(N, in_channels, H, W) -> (N, out_channels, OH, OW)."""
        b = self.params["bias"] if self.has_bias else None
        out, cache = self.op_forward(x, self.params["weight"], b, self.stride, self.padding)
        self.push(cache)
        return out

    def backward(self, dout):
        """(N, out_channels, OH, OW) -> dx (N, in_channels, H, W); accumulates grads."""
        dx, dw, db = self.op_backward(dout, self.pop())
        self.accumulate("weight", dw)
        if self.has_bias:
            self.accumulate("bias", db)
        return dx
