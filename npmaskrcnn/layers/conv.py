"""2-D convolution: the loops, im2col + GEMM, and the ``Conv2d`` module.

Every convolution of Mask R-CNN (the ResNet stem and bottlenecks, the FPN's lateral 1x1
and output 3x3 convs, the RPN head, the mask head's four 3x3 convs and its 1x1
predictor) is a cross-correlation plus a bias::

    out[n, f, oh, ow] = sum_{c, i, j} w[f, c, i, j] * x_pad[n, c, oh*sh + i, ow*sw + j] + b[f]

``conv2d_naive`` is that sum, one output pixel at a time. Its backward
(``conv2d_backward_naive``) follows from the chain rule: each output pixel sent its
dout to ``dx`` (through ``w[f]``, onto its window) and to ``dw[f]`` (through the window).

Vectorised: copy every window into a column (``im2col``), and the sum over (c, i, j) is
one matrix product with the kernel as a matrix::

    out = W @ cols + b,          W = w.reshape(F, C*KH*KW), cols: (C*KH*KW, N*OH*OW)

and its gradients are two more products and a col2im (the adjoint of im2col)::

    dW = dout_mat @ cols^T,   dcols = W^T @ dout_mat,   dx = col2im(dcols),
    db[f] = sum_{n, oh, ow} dout[n, f, oh, ow]

where ``dout_mat`` is ``dout`` as (F, N*OH*OW). ``conv2d_im2col_forward`` /
``conv2d_im2col_backward`` are exactly this. The model runs ``conv_fast.py`` (imported
below): the same products, arranged so that memory traffic stays low on a CPU and the
launches few on a GPU; the tests check all three against each other and against torch.

Semantics of ``torch.nn.functional.conv2d`` (zero padding, floor output size,
``groups=1``, ``dilation=1``): ``OH = (H + 2*ph - KH) // sh + 1``.
"""

from __future__ import annotations

import numpy as np

from ..backend import Generator, get_xp
from .im2col import col2im, im2col, pad_input
from .init import kaiming_uniform
from .module import Module
from .sizes import as_pair, conv_output_size


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


def conv2d_im2col_forward(x, w, b, stride=1, padding=0):
    """``out = W @ im2col(x) + b``: the vectorised convolution, in its plainest form.

    Args:
        x: (N, C, H, W); w: (F, C, KH, KW); b: (F,) or None; stride, padding: ints or pairs.
    Returns:
        out (N, F, OH, OW) and the cache ``(x, w, stride, padding, has_bias)``.
    """
    n = x.shape[0]
    f, _, kh, kw = w.shape
    oh = conv_output_size(x.shape[2], kh, as_pair(stride)[0], as_pair(padding)[0])
    ow = conv_output_size(x.shape[3], kw, as_pair(stride)[1], as_pair(padding)[1])
    cols = im2col(x, (kh, kw), stride, padding)  # (C*KH*KW, N*OH*OW)
    out = w.reshape(f, -1) @ cols  # (F, N*OH*OW), columns ordered (n, oh, ow)
    if b is not None:
        out += b[:, None]
    out = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)  # -> (N, F, OH, OW)
    return get_xp(out).ascontiguousarray(out), (x, w, stride, padding, b is not None)


def conv2d_im2col_backward(dout, cache):
    """Gradients of ``conv2d_im2col_forward``: ``dW = dout_mat cols^T``,
    ``dx = col2im(W^T dout_mat)``, ``db = sum dout``.

    Returns:
        (dx, dw, db), ``db`` None without a bias.
    """
    x, w, stride, padding, has_bias = cache
    f = w.shape[0]
    cols = im2col(x, w.shape[2:], stride, padding)  # recomputed: cheaper than keeping it
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*OH*OW)
    dw = (dout_mat @ cols.T).reshape(w.shape)
    dx = col2im(w.reshape(f, -1).T @ dout_mat, x.shape, w.shape[2:], stride, padding)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# ------------------------------------------------------------ the engine the model runs
from .conv_fast import Conv2dCache, conv2d_backward, conv2d_forward  # noqa: E402, F401


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

    def backward(self, dout, input_grad: bool = True):
        """(N, out_channels, OH, OW) -> dx (N, in_channels, H, W); accumulates grads.

        ``input_grad=False`` skips dx (and returns None) where nothing needs it, as
        the first layer of a network: its input is the image.
        """
        dx, dw, db = self.op_backward(dout, self.pop(), input_grad)
        self.accumulate("weight", dw)
        if self.has_bias:
            self.accumulate("bias", db)
        return dx
