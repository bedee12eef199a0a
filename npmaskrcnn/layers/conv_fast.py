"""The convolution engine the model runs (``conv.py`` teaches im2col + GEMM).

The same numbers as ``conv2d_im2col_forward`` / ``_backward``, with the memory traffic
cut. The one backend choice (``on_device``) picks the engine:

**CPU** (NumPy): the GEMMs are BLAS's; the rest is memory traffic, so three paths

- ``"pointwise"`` -- 1x1, stride 1, no padding: ``W @ x[n]``, no columns at all;
- ``"same_width"`` -- stride 1, OW == W (every 3x3 pad-1 conv): columns copied as whole
  contiguous runs (``im2col_fast.im2col_same_width``), and a backward that works on the
  columns of dout and needs no col2im (``_same_width_backward``);
- ``"general"`` -- strided window columns, col2im for dx;

each building and consuming its columns in chunks of a few MiB that stay in cache
(``im2col_fast.chunk_ranges``), each GEMM writing straight into its NCHW slice of the
output, the columns recomputed in the backward instead of being kept.

**GPU** (``_forward_device`` / ``_backward_device``): every convolution is one batched
GEMM over whole images -- columns (N, C*KH*KW, OH*OW), ``W @ cols`` -- and so is the input
gradient, as a convolution of the (dilated) output gradient with the rotated kernel. A
handful of launches per convolution whatever its size, and no col2im (whose KH*KW
strided additions would each be a launch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp, on_device
from .im2col import col2im_add, im2col_windows, pad_input
from .im2col_fast import chunk_ranges, im2col_same_width, pad_rows_flat, same_width
from .sizes import as_pair, conv_output_size


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs: the inputs, and on a GPU the columns. A CPU
    recomputes the columns chunk by chunk (keeping them would cost C*KH*KW times the
    memory of x and fall out of cache); a GPU keeps them, to save the launches."""

    x: Any  # input (N, C, H, W): dW = dout cols(x)^T
    w: Any  # weight (F, C, KH, KW): dx from W^T dout
    stride: tuple  # (sh, sw)
    padding: tuple  # (ph, pw)
    has_bias: bool  # whether to return db or None
    cols: Any = None  # GPU: the forward's (N, C*KH*KW, OH*OW) columns


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


# a chunk whose images have fewer output pixels than this runs one GEMM over all its images
# and transposes the result into NCHW: BLAS is slow on the thin per-image matrices of
# small maps (RoI heads' 14x14: 2-core machine, 128 channels, 160 GFLOP/s per image
# against 220 for one GEMM and the copy); from about 2000 pixels per image on they are fast
# (3600: 245 against 230) and the per-image GEMMs write NCHW directly
SMALL_MAP = 2048


def _gemm_into(a, cols, out, n0, n1, r0, r1):
    """``out[n0:n1, :, r0:r1] = a @ cols`` for a chunk's columns (K, images*rows*OW).

    One GEMM over the chunk when its maps are small (``SMALL_MAP``), then a transposing
    copy into NCHW; else one GEMM per image straight into its slice (``_chunk_views``).
    """
    xp = get_xp(cols)
    cols3, out3 = _chunk_views(cols, out, n0, n1, r0, r1)
    images, _, pixels = cols3.shape
    if images > 1 and pixels < SMALL_MAP:
        prod = a @ cols  # (M, K) @ (K, images*pixels)
        out3[...] = prod.reshape(a.shape[0], images, pixels).transpose(1, 0, 2)
    else:
        xp.matmul(a, cols3, out=out3)  # (M, K) @ (images, K, pixels)
    return out3


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
    if on_device(xp):
        out, cols = _forward_device(x, w, b, stride, padding, (oh, ow))
        return out, cache._replace(cols=cols)
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
        # (F, C*KH*KW) @ (C*KH*KW, images*rows*OW) into out's (images, F, rows*OW) slice
        out3 = _gemm_into(w_mat, columns(n0, n1, r0, r1), out, n0, n1, r0, r1)
        if b is not None:
            out3 += b.reshape(1, f, 1)
    return out, cache


def conv2d_backward(dout, cache: Conv2dCache, input_grad: bool = True):
    """Gradients of ``conv2d_forward``, chunk by chunk like the forward.

    ``dW = dout_mat cols^T``, ``dx = col2im(W^T dout_mat)``, ``db = sum_{n,oh,ow} dout``,
    where ``dout_mat`` is dout as (F, N*OH*OW) and ``cols = im2col(x)`` is recomputed;
    see ``_same_width_backward`` for the same-width path.

    Args:
        dout: (N, F, OH, OW), upstream gradient.
        input_grad: False skips dx (the first layer's input needs no gradient).
    Returns:
        (dx, dw, db): shapes of x (N, C, H, W), w (F, C, KH, KW) and b (F,);
        ``db`` is None when the forward had no bias, ``dx`` when ``input_grad`` is False.
    """
    xp = get_xp(dout)
    x, w, stride, padding, has_bias, _ = cache
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = dout.shape[2:]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if on_device(xp):
        return (*_backward_device(dout, cache, input_grad), db)
    path = _path((kh, kw), stride, padding)
    if path == "same_width":
        return (*_same_width_backward(dout, x, w, padding, input_grad), db)
    if path == "pointwise":
        d3, x3 = dout.reshape(n, f, oh * ow), x.reshape(n, c, h * wd)
        dx = None
        if input_grad:
            dx = xp.matmul(w.reshape(f, c).T, d3).reshape(x.shape)  # (C, F) @ (N, F, HW)
        dw_t = xp.zeros((c, f), dtype=dout.dtype)  # dW^T
        for i in range(n):
            dw_t += x3[i] @ d3[i].T  # (C, HW) @ (HW, F)
        return dx, xp.ascontiguousarray(dw_t.T).reshape(w.shape), db
    w_mat = w.reshape(f, -1)  # (F, C*KH*KW)
    x_pad = pad_input(x, padding)
    dx_pad = xp.zeros(x_pad.shape, dtype=dout.dtype) if input_grad else None
    dw_t = xp.zeros((c * kh * kw, f), dtype=dout.dtype)  # dW^T
    for n0, n1, r0, r1 in chunk_ranges(n, oh, ow, c * kh * kw):
        cols = im2col_windows(x_pad, (kh, kw), stride, (n0, n1), (r0, r1))  # (C*KH*KW, L)
        # (images, F, rows*OW) -> (F, images*rows*OW); a view for a band of one image
        d_mat = dout.reshape(n, f, oh * ow)[n0:n1, :, r0 * ow : r1 * ow]
        d_mat = d_mat.transpose(1, 0, 2).reshape(f, -1)
        dw_t += cols @ d_mat.T  # (C*KH*KW, L) @ (L, F)
        if not input_grad:  # the stem: the image needs no gradient
            continue
        d_cols = w_mat.T @ d_mat  # (C*KH*KW, F) @ (F, L)
        blocks = d_cols.reshape(c, kh, kw, n1 - n0, r1 - r0, ow).transpose(3, 0, 1, 2, 4, 5)
        rows = slice(r0 * stride[0], (r1 - 1) * stride[0] + kh)  # the band's window rows
        col2im_add(dx_pad[n0:n1, :, rows], blocks, stride)
    dw = xp.ascontiguousarray(dw_t.T).reshape(w.shape)
    if not input_grad:
        return None, dw, db
    dx = dx_pad[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd]
    return xp.ascontiguousarray(dx), dw, db


def _same_width_backward(dout, x, w, padding, input_grad=True):
    """(dx, dw) of a same-width conv, from the columns of dout, chunk by chunk (dx None
    without ``input_grad``).

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
    dx = xp.empty(x.shape, dtype=dout.dtype) if input_grad else None
    dw_rot_t = xp.zeros((f * kh * kw, c), dtype=dout.dtype)  # dW_rot^T
    for n0, n1, r0, r1 in chunk_ranges(n, h, wd, f * kh * kw):
        d_cols = im2col_same_width(flat, dout.shape, (kh, kw), d_padding, (n0, n1), (r0, r1))
        if input_grad:
            _gemm_into(w_rot, d_cols, dx, n0, n1, r0, r1)  # (C, F*KH*KW) @ (F*KH*KW, L)
        # (images, C, rows, W) -> (C, images*rows*W); a view for a band of one image
        x_mat = x[n0:n1, :, r0:r1].transpose(1, 0, 2, 3).reshape(c, -1)
        dw_rot_t += d_cols @ x_mat.T  # (F*KH*KW, L) @ (L, C)
    dw = dw_rot_t.reshape(f, kh, kw, c).transpose(0, 3, 1, 2)[:, :, ::-1, ::-1]
    return dx, xp.ascontiguousarray(dw)


# ----------------------------------------------------------------------------- GPU engine


def _columns(x, kernel, stride, padding, out_hw):
    """(N, C*KH*KW, OH*OW) window columns of x, image by image: one padded copy and one
    strided copy, ready for a batched GEMM whose output is NCHW."""
    xp = get_xp(x)
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    x_pad = pad_input(x, padding)
    s_n, s_c, s_h, s_w = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(  # (N, C, KH, KW, OH, OW), a view
        x_pad, shape=(n, c, kh, kw, oh, ow), strides=(s_n, s_c, s_h, s_w, s_h * sh, s_w * sw))
    return xp.ascontiguousarray(windows).reshape(n, c * kh * kw, oh * ow)


def _forward_device(x, w, b, stride, padding, out_hw):
    """``out[n] = W @ cols[n] + b``, one batched GEMM (a 1x1 conv needs no columns);
    returns the output and the columns (kept for the backward)."""
    xp = get_xp(x)
    n, c = x.shape[:2]
    f, _, kh, kw = w.shape
    oh, ow = out_hw
    if (kh, kw) == (1, 1) and padding == (0, 0):
        cols = xp.ascontiguousarray(x[:, :, ::stride[0], ::stride[1]]).reshape(n, c, oh * ow)
    else:
        cols = _columns(x, (kh, kw), stride, padding, out_hw)
    out = xp.matmul(w.reshape(f, -1), cols)  # (F, CKK) @ (N, CKK, OH*OW) -> (N, F, OH*OW)
    if b is not None:
        out += b.reshape(1, f, 1)
    return out.reshape(n, f, oh, ow), cols


def _backward_device(dout, cache: Conv2dCache, input_grad):
    """(dx, dw) with batched GEMMs: ``dW = sum_n dout[n] @ cols[n]^T``, and dx from
    ``_input_grad_device`` (None without ``input_grad``)."""
    xp = get_xp(dout)
    x, w = cache.x, cache.w
    n, f, oh, ow = dout.shape
    d3 = dout.reshape(n, f, oh * ow)
    # (N, F, L) @ (N, L, CKK) -> (N, F, CKK), summed over the images
    dw = xp.matmul(d3, cache.cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if not input_grad:
        return None, dw
    return _input_grad_device(dout, x.shape, w, cache.stride, cache.padding), dw


def _input_grad_device(dout, x_shape, w, stride, padding):
    """dx of a convolution as one more convolution (GPU).

    The input gradient is itself a stride-1 convolution: dout dilated by the stride
    (zeros between its pixels), zero-padded by K - 1 - p (plus the rows the forward's
    floor division left uncovered), convolved with the kernel rotated by 180 degrees and
    its channel axes swapped::

        dx[n, c, y, x] = sum_{f, i, j} D[n, f, y + i, x + j] * w[f, c, KH-1-i, KW-1-j]

    A 1x1 convolution needs neither: ``dx = W^T @ dout``, put at every stride-th pixel.
    """
    xp = get_xp(dout)
    n, c, h, wd = x_shape
    f, _, kh, kw = w.shape
    oh, ow = dout.shape[2:]
    (sh, sw), (ph, pw) = stride, padding
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        d3 = dout.reshape(n, f, oh * ow)
        dx_s = xp.matmul(w.reshape(f, c).T, d3).reshape(n, c, oh, ow)  # (C, F) @ (N, F, L)
        if (sh, sw) == (1, 1):
            return dx_s
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        dx[:, :, ::sh, ::sw] = dx_s
        return dx
    # the dilated, padded output gradient D: dout[oh, ow] at (K-1-p + oh*s, K-1-p + ow*s)
    top, left = kh - 1 - ph, kw - 1 - pw
    rest_h = (h + 2 * ph - kh) - (oh - 1) * sh  # rows the last window did not reach
    rest_w = (wd + 2 * pw - kw) - (ow - 1) * sw
    D = xp.zeros((n, f, (oh - 1) * sh + 1 + 2 * top + rest_h,
                  (ow - 1) * sw + 1 + 2 * left + rest_w), dtype=dout.dtype)
    D[:, :, top:top + (oh - 1) * sh + 1:sh, left:left + (ow - 1) * sw + 1:sw] = dout
    # w (F, C, KH, KW) -> W_rot (C, F*KH*KW)
    w_rot = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
    d_cols = _columns(D, (kh, kw), (1, 1), (0, 0), (h, wd))  # (N, F*KH*KW, H*W)
    return xp.matmul(w_rot, d_cols).reshape(x_shape)


def conv2d_maps_forward(xs, w, b, padding):
    """One stride-1, same-size convolution of several maps of different sizes (GPU).

    The shared head of an FPN (the RPN's 3x3 conv over P2..P6) applies one kernel to
    every level: the levels' columns side by side make it one GEMM::

        out = W @ [cols(P2) | cols(P3) | ... ] + b        (N, F, sum_l H_l W_l)

    Args:
        xs: L maps (N, C, H_l, W_l); w: (F, C, KH, KW) with 2p = K - 1; b: (F,) or None.
        padding: (ph, pw).
    Returns:
        out (N, F, sum_l H_l W_l), levels one after another, and the cache.
    """
    xp = get_xp(*xs)
    kernel = tuple(w.shape[2:])
    cols = xp.concatenate([_columns(x, kernel, (1, 1), padding, tuple(x.shape[2:])) for x in xs],
                          axis=2)  # (N, C*KH*KW, sum_l H_l W_l)
    out = xp.matmul(w.reshape(w.shape[0], -1), cols)
    if b is not None:
        out += b.reshape(1, -1, 1)
    return out, ([tuple(x.shape) for x in xs], w, padding, cols)


def conv2d_maps_backward(dout, cache):
    """Gradients of ``conv2d_maps_forward``: (dxs L x (N, C, H_l, W_l), dw, db)."""
    xp = get_xp(dout)
    shapes, w, padding, cols = cache
    dw = xp.matmul(dout, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    db = dout.sum(axis=(0, 2))
    dxs, start = [], 0
    for shape in shapes:  # each level's dx: its slice of dout, convolved back
        n, _, h, wd = shape
        d = dout[:, :, start:start + h * wd].reshape(n, -1, h, wd)
        dxs.append(_input_grad_device(d, shape, w, (1, 1), padding))
        start += h * wd
    return dxs, dw, db
