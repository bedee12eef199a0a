"""Transposed 2-D convolution ("deconvolution"): the mask head's 2x upsampling.

The FPN mask head (paper Fig. 4, right; torchvision's ``MaskRCNNPredictor.conv5_mask``)
turns its 14x14x256 features into 28x28x256 with a 2x2 stride-2 ``ConvTranspose2d``;
the keypoint head (``KeypointRCNNPredictor.kps_score_lowres``) uses a 4x4 stride-2
padding-1 one. A transposed convolution is the adjoint (the input gradient) of a
convolution with the same kernel, stride and padding: every input pixel spreads
``x[n, c] * w[c]`` onto a KH x KW patch of the output, patches ``stride`` apart, summed
where they overlap, and the outer ``padding`` rows/columns are cropped::

    cols = W^T @ x_mat,         W = w.reshape(C_in, C_out*KH*KW), x_mat: (C_in, N*H*W)
    out  = col2im(cols) + b,    out: (N, C_out, OH, OW), OH = (H - 1)*sh - 2*ph + KH

Its gradients are those of a convolution read the other way round::

    dcols = im2col(dout),   dx_mat = W @ dcols,   dW = x_mat @ dcols^T,   db = sum dout

When the kernel equals the stride and there is no padding (the mask head's 2x2/2), the
patches tile the output without overlap, so col2im is one strided copy per kernel
offset and im2col a plain rearrangement. Both directions work through the batch a few
images at a time, so the (C_out*KH*KW, H*W) columns of each image stay in cache.

Semantics of ``torch.nn.functional.conv_transpose2d`` with ``output_padding=0``,
``groups=1``, ``dilation=1``; weight layout (C_in, C_out, KH, KW) as PyTorch's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp, on_device
from .conv import Conv2d
from .im2col import col2im_add, im2col_windows, pad_input
from .im2col_fast import chunk_ranges
from .sizes import as_pair


class ConvTranspose2dCache(NamedTuple):
    """What ``conv_transpose2d_backward`` needs: the inputs (dout's columns are built
    chunk by chunk in the backward)."""

    x: Any  # input (N, C_in, H, W): dW = x_mat dcols^T
    w: Any  # weight (C_in, C_out, KH, KW): dx_mat = W dcols
    stride: tuple  # (sh, sw)
    padding: tuple  # (ph, pw)
    has_bias: bool  # whether to return db or None


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``(size - 1) * stride - 2 * padding + kernel``, the transposed-conv output length."""
    return (size - 1) * stride - 2 * padding + kernel


def _is_tiling(kernel, stride, padding) -> bool:
    """Kernel == stride and no padding: the output patches tile the output exactly."""
    return kernel == stride and padding == (0, 0)


def conv_transpose2d_naive(x, w, b, stride=1, padding=0):
    """The transposed convolution by its definition, loop by loop (``conv_transpose2d_forward``
    computes the same numbers with one GEMM and a col2im).

    Each input pixel adds ``x[n, c] * w[c]`` onto its KH x KW patch of the uncropped
    output; the padding is cropped at the end.
    """
    xp = get_xp(x, w, b)
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    n, c_in, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    full = xp.zeros((n, c_out, (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=x.dtype)
    for b_i in range(n):
        for c in range(c_in):
            for y in range(h):
                for z in range(wd):
                    rows, cols = slice(y * sh, y * sh + kh), slice(z * sw, z * sw + kw)
                    full[b_i, :, rows, cols] += x[b_i, c, y, z] * w[c]
    out = full[:, :, ph : full.shape[2] - ph, pw : full.shape[3] - pw]
    if b is not None:
        out = out + b.reshape(1, c_out, 1, 1)
    return out


def conv_transpose2d_backward_naive(dout, x, w, b, stride=1, padding=0):
    """Gradients of ``conv_transpose2d_naive``, loop by loop (``conv_transpose2d_backward``
    is the same with GEMMs).

    Returns:
        (dx, dw, db), ``db`` None when ``b`` is None.
    """
    xp = get_xp(dout, x, w)
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(padding)
    n, c_in, h, wd = x.shape
    _, _, kh, kw = w.shape
    # The uncropped output's gradient: dout with the cropped rows/columns put back as 0.
    dfull = xp.zeros((n, dout.shape[1], (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=dout.dtype)
    dfull[:, :, ph : dfull.shape[2] - ph, pw : dfull.shape[3] - pw] = dout
    dx, dw = xp.zeros_like(x), xp.zeros_like(w)
    for b_i in range(n):
        for c in range(c_in):
            for y in range(h):
                for z in range(wd):
                    patch = dfull[b_i, :, y * sh : y * sh + kh, z * sw : z * sw + kw]
                    dx[b_i, c, y, z] = (patch * w[c]).sum()
                    dw[c] += x[b_i, c, y, z] * patch
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Works through the batch a few images at a time: one GEMM per image gives the
    chunk's columns (C_out*KH*KW, H*W), which col2im (or, when the patches tile the
    output, one strided copy per kernel offset) puts in place while still in cache.

    Args:
        x: (N, C_in, H, W).
        w: (C_in, C_out, KH, KW), PyTorch's ``ConvTranspose2d.weight`` layout.
        b: (C_out,) or None.
        stride, padding: ints or (height, width) pairs.
    Returns:
        out: (N, C_out, OH, OW), ``OH = (H - 1)*sh - 2*ph + KH`` (likewise OW).
        cache: a ``ConvTranspose2dCache``.
    Raises:
        ValueError: channel counts disagree, or the output would be empty.
    """
    xp = get_xp(x, w, b)
    stride, padding = as_pair(stride), as_pair(padding)
    n, c_in, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    if w.shape[0] != c_in:
        raise ValueError(f"conv_transpose2d: x has {c_in} channels but w expects {w.shape[0]}")
    oh = conv_transpose_output_size(h, kh, stride[0], padding[0])
    ow = conv_transpose_output_size(wd, kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d: output size ({oh}, {ow}) is too small")
    w_t = w.reshape(c_in, -1).T  # (C_out*KH*KW, C_in)
    tiling = _is_tiling((kh, kw), stride, padding)
    out = xp.empty((n, c_out, oh, ow), dtype=x.dtype)
    for n0, n1, _, _ in chunk_ranges(n, 1, h * wd, c_out * kh * kw, on_device(xp)):
        cols = xp.matmul(w_t, x[n0:n1].reshape(n1 - n0, c_in, h * wd))  # (images, CKK, HW)
        blocks = cols.reshape(n1 - n0, c_out, kh, kw, h, wd)
        if tiling:
            # Output pixel (h*KH + i, w*KW + j) is written by input pixel (h, w) alone.
            out6 = out[n0:n1].reshape(n1 - n0, c_out, h, kh, wd, kw)
            for i in range(kh):
                for j in range(kw):
                    out6[:, :, :, i, :, j] = blocks[:, :, i, j]
        else:
            # Sum the patches into the uncropped output, then crop the padding.
            full = xp.zeros((n1 - n0, c_out, oh + 2 * padding[0], ow + 2 * padding[1]), x.dtype)
            col2im_add(full, blocks, stride)
            out[n0:n1] = full[:, :, padding[0] : padding[0] + oh, padding[1] : padding[1] + ow]
        if b is not None:
            out[n0:n1] += b.reshape(1, c_out, 1, 1)
    return out, ConvTranspose2dCache(x, w, stride, padding, b is not None)


def conv_transpose2d_backward(dout, cache: ConvTranspose2dCache, input_grad: bool = True):
    """Gradients of ``conv_transpose2d_forward``, a few images at a time.

    ``dcols = im2col(dout)``, ``dx = W dcols``, ``dW = x_mat dcols^T``,
    ``db = sum_{n,oh,ow} dout``: the forward of a convolution with the same kernel,
    stride and padding (for the tiling case, im2col is a plain rearrangement).

    Args:
        dout: (N, C_out, OH, OW), upstream gradient.
        input_grad: accepted for the ``Conv2d`` module interface; dx is always computed.
    Returns:
        (dx, dw, db): shapes of x (N, C_in, H, W), w (C_in, C_out, KH, KW) and b (C_out,);
        ``db`` is None when the forward had no bias.
    """
    xp = get_xp(dout)
    x, w, stride, padding, has_bias = cache
    n, c_in, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    w_mat = w.reshape(c_in, -1)  # (C_in, C_out*KH*KW)
    dout_pad = pad_input(dout, padding)
    dx = xp.empty(x.shape, dtype=dout.dtype)
    dw_t = xp.zeros((c_out * kh * kw, c_in), dtype=dout.dtype)  # dW^T
    for n0, n1, _, _ in chunk_ranges(n, 1, h * wd, c_out * kh * kw, on_device(xp)):
        d_cols = im2col_windows(dout_pad, (kh, kw), stride, (n0, n1))  # (CKK, images*H*W)
        d_cols3 = d_cols.reshape(c_out * kh * kw, n1 - n0, h * wd).transpose(1, 0, 2)
        # (C_in, C_out*KH*KW) @ (images, C_out*KH*KW, H*W), straight into NCHW
        xp.matmul(w_mat, d_cols3, out=dx[n0:n1].reshape(n1 - n0, c_in, h * wd))
        # (images, C_in, H*W) -> (C_in, images*H*W)
        x_mat = x[n0:n1].reshape(n1 - n0, c_in, h * wd).transpose(1, 0, 2).reshape(c_in, -1)
        dw_t += d_cols @ x_mat.T  # (C_out*KH*KW, L) @ (L, C_in)
    return dx, xp.ascontiguousarray(dw_t.T).reshape(w.shape), db


class ConvTranspose2d(Conv2d):
    """``torch.nn.ConvTranspose2d`` (output_padding=0, groups=1, dilation=1).

    Parameters ``weight`` (in_channels, out_channels, KH, KW) and ``bias``
    (out_channels,), both drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with PyTorch's
    fan_in for this layout, ``weight.size(1) * KH * KW`` = out_channels*KH*KW.
    """

    op_forward = staticmethod(conv_transpose2d_forward)
    op_backward = staticmethod(conv_transpose2d_backward)

    def weight_shape_and_fan_in(self):
        """(C_in, C_out, KH, KW) and PyTorch's fan_in for it, C_out*KH*KW."""
        kh, kw = self.kernel_size
        return (self.in_channels, self.out_channels, kh, kw), self.out_channels * kh * kw
