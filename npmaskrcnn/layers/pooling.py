"""2-D max pooling, forward and backward, with ``torch.nn.functional.max_pool2d`` semantics.

Two uses in Mask R-CNN: the ResNet stem (3x3 window, stride 2, padding 1) and the
FPN's extra level P6 (1x1 window, stride 2: a plain subsampling of P5, used only by
the RPN; torchvision's ``LastLevelMaxPool``).

Semantics, as PyTorch: the input is padded with -inf (a padded cell never wins),
the output size is floor((H + 2p - k) / s) + 1 (floor mode), the stride defaults to
the kernel size, and when a window holds several equal maxima the gradient goes to
the FIRST one in row-major window order. A NaN in a window propagates to the output
(which cell then receives the gradient is left unspecified).

The fast version loops over the k_h * k_w kernel offsets (9 for the stem), never
over pixels: each offset is one strided slice of the padded input. On a GPU (where
each slice would be a launch) the windows are gathered as one (.., kh*kw) array and
reduced once; the backward is one scatter-add.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_xp, on_device, scatter_add
from .module import Module
from .sizes import as_pair, conv_output_size


def _geometry(x_shape, kernel_size, stride, padding):
    """Kernel, stride, padding as pairs and the output size (floor mode)."""
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    ph, pw = as_pair(padding)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"max_pool2d: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}"
        )
    H, W = x_shape[-2:]
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    if Ho <= 0 or Wo <= 0:
        raise ValueError(f"max_pool2d: input {(H, W)} too small for kernel {(kh, kw)}")
    return (kh, kw), (sh, sw), (ph, pw), (Ho, Wo)


def _pad_neg_inf(x, ph, pw):
    """x (N, C, H, W) -> (N, C, H + 2ph, W + 2pw), the border filled with -inf."""
    xp = get_xp(x)
    if ph == 0 and pw == 0:
        return x
    N, C, H, W = x.shape
    xpad = xp.full((N, C, H + 2 * ph, W + 2 * pw), -np.inf, dtype=x.dtype)
    xpad[:, :, ph : ph + H, pw : pw + W] = x
    return xpad


class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_backward`` needs."""

    argmax: Any  # (N, C, Ho, Wo) int8/int32: winning kernel offset a*kw + b of each window
    x_shape: tuple  # (N, C, H, W) of the input
    kernel: tuple  # (kh, kw)
    stride: tuple  # (sh, sw)
    padding: tuple  # (ph, pw)


def max_pool2d_naive(x, kernel_size, stride=None, padding=0):
    """Loop reference for ``max_pool2d_forward`` (finite inputs); also returns the argmaxes.

    Returns:
        out: (N, C, Ho, Wo).
        pos: (N, C, Ho, Wo, 2) int, the (row, col) in the *unpadded* input of the
            first maximum of each window, scanning the window row by row.
    """
    xp = get_xp(x)
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x.shape, kernel_size, stride, padding)
    N, C, H, W = x.shape
    out = xp.zeros((N, C, Ho, Wo), dtype=x.dtype)
    pos = xp.zeros((N, C, Ho, Wo, 2), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best, best_rc = -np.inf, None
                    for a in range(kh):
                        for b in range(kw):
                            r, s = i * sh + a - ph, j * sw + b - pw
                            if not (0 <= r < H and 0 <= s < W):
                                continue  # a -inf padding cell never wins
                            v = float(x[n, c, r, s])
                            if best_rc is None or v > best:
                                best, best_rc = v, (r, s)
                    out[n, c, i, j] = best
                    pos[n, c, i, j, 0], pos[n, c, i, j, 1] = best_rc
    return out, pos


def max_pool2d_backward_naive(dout, pos, x_shape):
    """Loop reference for ``max_pool2d_backward``: dx[pos[n, c, i, j]] += dout[n, c, i, j]."""
    xp = get_xp(dout)
    N, C, Ho, Wo = dout.shape
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    r, s = int(pos[n, c, i, j, 0]), int(pos[n, c, i, j, 1])
                    dx[n, c, r, s] += dout[n, c, i, j]
    return dx


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, with_argmax=True):
    """Max over each k_h x k_w window, as ``torch.nn.functional.max_pool2d``.

    out[n, c, i, j] = max_{a < kh, b < kw} xpad[n, c, i*sh + a, j*sw + b],
    xpad being x padded by -inf; floor mode, dilation 1.

    Without ``with_argmax`` (inference: no backward will follow) the max is taken one
    axis at a time, ``max_a (max_b xpad[.., i*sh + a, j*sw + b])``, which is the same
    number with kh + kw - 2 elementwise maxima instead of kh*kw - 1 and no argmax.

    Args:
        x: (N, C, H, W).
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw); None means the kernel size.
        padding: int or (ph, pw), at most half the kernel (as PyTorch requires).
        with_argmax: record each window's winner for the backward.
    Returns:
        out: (N, C, Ho, Wo) with Ho = floor((H + 2ph - kh) / sh) + 1, same for Wo.
        cache: a ``MaxPool2dCache``, or None without ``with_argmax``.
    """
    xp = get_xp(x)
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = _geometry(x.shape, kernel_size, stride, padding)
    if (kh, kw) == (1, 1):  # a subsampling (the FPN's P6): the window is one cell
        out = xp.ascontiguousarray(x[:, :, ::sh, ::sw])
        argmax = xp.zeros(out.shape, dtype=np.int8) if with_argmax else None
        return out, (MaxPool2dCache(argmax, tuple(x.shape), (kh, kw), (sh, sw), (ph, pw))
                     if with_argmax else None)
    xpad = _pad_neg_inf(x, ph, pw)
    if on_device(xp) and with_argmax:  # GPU: every window's cells as one array, one argmax
        N, C = x.shape[:2]
        s_n, s_c, s_h, s_w = xpad.strides
        windows = xp.lib.stride_tricks.as_strided(  # (N, C, Ho, Wo, kh, kw), a view
            xpad, (N, C, Ho, Wo, kh, kw), (s_n, s_c, s_h * sh, s_w * sw, s_h, s_w))
        cells = xp.ascontiguousarray(windows).reshape(N, C, Ho, Wo, kh * kw)
        argmax = cells.argmax(axis=-1)  # the first maximum in row-major window order
        out = cells.max(axis=-1)  # max, not the argmax's cell: a NaN propagates
        return out, MaxPool2dCache(argmax, tuple(x.shape), (kh, kw), (sh, sw), (ph, pw))
    if not with_argmax:
        rows = sh * (Ho - 1) + 1  # window rows spanned by one kernel offset
        cols = xpad[..., 0 : sw * (Wo - 1) + 1 : sw].copy()  # (N, C, Hpad, Wo)
        for b in range(1, kw):  # max over each window's columns ...
            xp.maximum(cols, xpad[..., b : b + sw * (Wo - 1) + 1 : sw], out=cols)
        out = cols[:, :, 0:rows:sh].copy()  # (N, C, Ho, Wo)
        for a in range(1, kh):  # ... then over its rows
            xp.maximum(out, cols[:, :, a : a + rows : sh], out=out)
        return out, None
    out, argmax = None, None
    for a in range(kh):
        for b in range(kw):
            # the (a, b)-th element of every window at once: (N, C, Ho, Wo)
            win = xpad[:, :, a : a + sh * (Ho - 1) + 1 : sh, b : b + sw * (Wo - 1) + 1 : sw]
            if out is None:
                out = win.copy()
                # int8 suffices for windows of up to 127 cells (the stem's has 9)
                argmax = xp.zeros(win.shape, dtype=np.int8 if kh * kw <= 127 else np.int32)
                continue
            # strict '>' keeps the earlier offset on ties: the first max wins, as PyTorch.
            # The offsets grow, so a winner's index is the largest so far: max(argmax,
            # better * offset) records it without a branch per cell (copyto with where=
            # branches, and on a ReLU's output half the branches go the other way)
            better = win > out
            xp.maximum(argmax, better * argmax.dtype.type(a * kw + b), out=argmax)
            xp.maximum(out, win, out=out)  # in place; a NaN propagates, as in PyTorch
    return out, MaxPool2dCache(argmax, tuple(x.shape), (kh, kw), (sh, sw), (ph, pw))


def max_pool2d_backward(dout, cache: MaxPool2dCache):
    """Gradient of ``max_pool2d_forward``: each window's dout goes to its (first) max.

    For each kernel offset (a, b), the windows won by that offset add their dout to
    one strided slice of the padded gradient. Within one offset the slice's cells are
    distinct, so plain ``+=`` is exact; overlapping windows (stride < kernel) are
    summed across offsets. The padding is cropped off at the end.

    Args:
        dout: (N, C, Ho, Wo).
    Returns:
        dx: (N, C, H, W).
    """
    xp = get_xp(dout)
    N, C, H, W = cache.x_shape
    (kh, kw), (sh, sw), (ph, pw) = cache.kernel, cache.stride, cache.padding
    Ho, Wo = dout.shape[-2:]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if (kh, kw) == (1, 1):  # a subsampling: each output came from one input cell
        dx = xp.zeros((N, C, H, W), dtype=dout.dtype)
        dx[:, :, ::sh, ::sw] = dout
        return dx
    if on_device(xp):  # GPU: one scatter-add of every window's dout at its winner
        # the winner's flat position in the padded gradient, (N, C, Ho, Wo)
        rows = xp.arange(Ho)[:, None] * sh + cache.argmax // kw
        cols = xp.arange(Wo)[None, :] * sw + cache.argmax % kw
        planes = xp.arange(N * C).reshape(N, C, 1, 1) * (Hp * Wp)
        dxpad = xp.zeros((N * C * Hp * Wp,), dtype=dout.dtype)
        # overlapping windows (stride < kernel) may share a winner: accumulate
        scatter_add(dxpad, (planes + rows * Wp + cols).reshape(-1), dout.reshape(-1))
        dxpad = dxpad.reshape(N, C, Hp, Wp)
        return xp.ascontiguousarray(dxpad[:, :, ph : ph + H, pw : pw + W])
    dxpad = xp.zeros((N, C, Hp, Wp), dtype=dout.dtype)
    for a in range(kh):
        for b in range(kw):
            won = cache.argmax == a * kw + b  # (N, C, Ho, Wo) bool
            dxpad[:, :, a : a + sh * (Ho - 1) + 1 : sh, b : b + sw * (Wo - 1) + 1 : sw] += (
                dout * won
            )
    return dxpad[:, :, ph : ph + H, pw : pw + W]


class MaxPool2d(Module):
    """``torch.nn.MaxPool2d`` (floor mode, dilation 1) over the functional pair."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        out, cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                        with_argmax=self.training)
        self.push(cache)
        return out

    def backward(self, dout):
        return max_pool2d_backward(dout, self.pop())
