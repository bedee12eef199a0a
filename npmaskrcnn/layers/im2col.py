"""im2col / col2im: the rearrangements that turn a convolution into one matrix product.

A 2-D convolution of ``x`` (N, C, H, W) with a (F, C, KH, KW) kernel reads, for every
output pixel, a C x KH x KW window of the zero-padded input. ``im2col`` copies every
window into one column of a matrix

    cols[(c, i, j), (n, oh, ow)] = x_pad[n, c, oh * sh + i, ow * sw + j]

of shape (C*KH*KW, N*OH*OW), so that the convolution is the single GEMM
``w.reshape(F, C*KH*KW) @ cols``. ``col2im`` is its adjoint: it adds every column back
onto the window it came from (windows overlap when the stride is smaller than the
kernel, so the additions accumulate). It is what turns the gradient of the columns into
the gradient of the input, and it is the whole of a transposed convolution.

Layout: the rows are ordered (c, i, j) so that they match ``w.reshape(F, -1)``; the
columns are ordered (n, oh, ow), so that the GEMM output of one image, (F, OH*OW), is
already NCHW.

How: ``im2col`` takes an ``as_strided`` *view* of all windows of the padded input (no
copy: a step along a window or along the output just moves the pointer by a row or a
column) and copies it once; ``col2im`` adds the KH*KW blocks of the columns, one per
kernel offset, as strided slices. ``im2col_naive`` / ``col2im_naive`` at the bottom are
the definitions, one element at a time. ``im2col_fast.py`` holds the engine's tricks
(working chunk by chunk, copying whole runs for 3x3 convolutions).

Output size (floor, as ``torch.nn.functional.conv2d``)::

    OH = (H + 2 * ph - KH) // sh + 1,    OW = (W + 2 * pw - KW) // sw + 1
"""

from __future__ import annotations

from ..backend import get_xp
from .sizes import as_pair, conv_output_size


def im2col(x, kernel_size, stride=1, padding=0):
    """Copy every convolution window of ``x`` into a column.

    Args:
        x: (N, C, H, W).
        kernel_size, stride, padding: ints or (height, width) pairs.
    Returns:
        cols: (C*KH*KW, N*OH*OW), ``cols[(c, i, j), (n, oh, ow)] =
        x_pad[n, c, oh*sh + i, ow*sw + j]`` (C-contiguous).
    """
    return im2col_windows(pad_input(x, padding), kernel_size, stride)


def pad_input(x, padding):
    """Zero-pad the two spatial axes of ``x`` (N, C, H, W) by ``padding`` = (ph, pw).

    Allocating zeros and writing the interior is cheaper than ``xp.pad``. Returns a
    C-contiguous array; without padding that is ``x`` itself when it already is one.
    """
    xp = get_xp(x)
    ph, pw = as_pair(padding)
    if ph == 0 and pw == 0:
        return xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    x_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    x_pad[:, :, ph : ph + h, pw : pw + w] = x
    return x_pad


def im2col_windows(x_pad, kernel_size, stride=1, images=None, rows=None):
    """``im2col`` of an already padded input, for output rows [r0, r1) of images [n0, n1).

    Args:
        x_pad: (N, C, Hp, Wp), zero-padded and C-contiguous (``pad_input``).
        images: (n0, n1), default all; rows: (r0, r1) output rows, default all.
    Returns:
        cols: (C*KH*KW, (n1 - n0)*(r1 - r0)*OW), columns ordered (n, oh, ow).
    """
    xp = get_xp(x_pad)
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(stride)
    n, c, hp, wp = x_pad.shape
    ow = (wp - kw) // sw + 1
    n0, n1 = (0, n) if images is None else images
    r0, r1 = (0, (hp - kh) // sh + 1) if rows is None else rows
    # A read-only view (C, KH, KW, images, rows, OW) of the padded input: a step along
    # i or oh moves down input rows (i by 1, oh by sh), along j or ow across columns.
    # Nothing is copied until the assignment below makes the columns contiguous.
    s_n, s_c, s_h, s_w = x_pad.strides
    windows = xp.lib.stride_tricks.as_strided(
        x_pad[n0:n1, :, r0 * sh :],
        shape=(c, kh, kw, n1 - n0, r1 - r0, ow),
        strides=(s_c, s_h, s_w, s_n, s_h * sh, s_w * sw),
    )
    cols = xp.empty(windows.shape, dtype=x_pad.dtype)
    cols[...] = windows
    return cols.reshape(c * kh * kw, -1)  # (C*KH*KW, images*rows*OW)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """Add every column back onto its window: the adjoint of ``im2col``.

    ``x[n, c, oh*sh + i - ph, ow*sw + j - pw] += cols[(c, i, j), (n, oh, ow)]``, summed
    over all columns whose window covers a pixel; entries that fall in the padding are
    dropped.

    Args:
        cols: (C*KH*KW, N*OH*OW).
        x_shape: (N, C, H, W), the shape of the image the columns were taken from.
        kernel_size, stride, padding: ints or (height, width) pairs.
    Returns:
        x: (N, C, H, W), C-contiguous.
    """
    xp = get_xp(cols)
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(stride)
    ph, pw = as_pair(padding)
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    x_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    blocks = cols.reshape(c, kh, kw, n, oh, ow)
    col2im_add(x_pad, blocks.transpose(3, 0, 1, 2, 4, 5), stride)
    if ph == 0 and pw == 0:
        return x_pad
    return xp.ascontiguousarray(x_pad[:, :, ph : ph + h, pw : pw + w])


def col2im_add(x_pad, blocks, stride=1):
    """``x_pad[n, c, oh*sh + i, ow*sw + j] += blocks[n, c, i, j, oh, ow]``, in place.

    The core of ``col2im``: KH*KW strided slice additions, one per kernel offset (i, j),
    each adding the (N, C, OH, OW) block of that offset, so no scatter-add is needed.
    ``x_pad`` may be a view (a band of rows of a larger padded image).

    Args:
        x_pad: (N, C, Hp, Wp), the padded image region the windows start in.
        blocks: (N, C, KH, KW, OH, OW), any strides.
    """
    sh, sw = as_pair(stride)
    _, _, kh, kw, oh, ow = blocks.shape
    for i in range(kh):
        for j in range(kw):
            # The pixels that offset (i, j) of every window lands on: rows i, i+sh, ...
            x_pad[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += (
                blocks[:, :, i, j]
            )


def im2col_naive(x, kernel_size, stride=1, padding=0):
    """Loop version of ``im2col`` (reference for tests): one element at a time."""
    xp = get_xp(x)
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(stride)
    ph, pw = as_pair(padding)
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = xp.zeros((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for b in range(n):
                    for y in range(oh):
                        for z in range(ow):
                            r, s = y * sh + i - ph, z * sw + j - pw  # unpadded coordinates
                            if 0 <= r < h and 0 <= s < w:
                                cols[row, (b * oh + y) * ow + z] = x[b, ci, r, s]
    return cols


def col2im_naive(cols, x_shape, kernel_size, stride=1, padding=0):
    """Loop version of ``col2im`` (reference for tests): one element at a time."""
    xp = get_xp(cols)
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(stride)
    ph, pw = as_pair(padding)
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    x = xp.zeros((n, c, h, w), dtype=cols.dtype)
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for b in range(n):
                    for y in range(oh):
                        for z in range(ow):
                            r, s = y * sh + i - ph, z * sw + j - pw
                            if 0 <= r < h and 0 <= s < w:
                                x[b, ci, r, s] += cols[row, (b * oh + y) * ow + z]
    return x
