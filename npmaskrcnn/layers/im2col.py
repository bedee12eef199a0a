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

Two ways to build the columns: ``im2col_windows`` copies an ``as_strided`` view of all
windows (any kernel, stride, padding); ``im2col_same_width`` copies whole (OH, OW)
blocks as single contiguous runs when stride is 1 and OW == W (every 3x3 pad-1 conv),
which is several times faster for small maps. Both can build just a chunk of the
columns (some images, or some output rows of one image; ``chunk_ranges``) so that a
convolution never materialises the whole C*KH*KW x N*OH*OW matrix.

Output size (floor, as ``torch.nn.functional.conv2d``)::

    OH = (H + 2 * ph - KH) // sh + 1,    OW = (W + 2 * pw - KW) // sw + 1
"""

from __future__ import annotations

from ..backend import get_xp

# Size of the column matrix of one chunk, when a convolution works through its input
# piece by piece: im2col writes (rows x chunk) floats that the GEMM reads straight back.
# 2**21 float32 (8 MiB) stay in cache and are reused by the allocator, instead of a
# full-size matrix being page-faulted in fresh and streamed through memory on every
# call. Measured on the benchmark shapes: 2**19..2**21 are within noise of each other on
# one thread; on a busy machine fewer, larger GEMM calls fare better; 2**22 and more
# lose the cache.
CHUNK_ELEMENTS = 1 << 21


def as_pair(value) -> tuple[int, int]:
    """An int or a pair of ints as ``(height, width)``, like PyTorch's ``_pair``."""
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``(size + 2 * padding - kernel) // stride + 1``, the convolution output length."""
    return (size + 2 * padding - kernel) // stride + 1


def chunk_ranges(n: int, rows: int, row_len: int, col_rows: int) -> list[tuple]:
    """Split an (N, rows, row_len) output into pieces of about CHUNK_ELEMENTS / col_rows
    columns: ``(n0, n1, r0, r1)`` = images [n0, n1), rows [r0, r1). Whole images when
    one image fits, else bands of rows of one image.

    Args:
        col_rows: rows of the column matrix (C*KH*KW), what one column costs.
    """
    budget = max(1, CHUNK_ELEMENTS // max(col_rows, 1))
    per_image = max(rows * row_len, 1)
    if per_image <= budget:
        step = budget // per_image
        return [(n0, min(n0 + step, n), 0, rows) for n0 in range(0, n, step)]
    band = max(1, budget // row_len)
    return [(i, i + 1, r0, min(r0 + band, rows)) for i in range(n) for r0 in range(0, rows, band)]


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


def im2col(x, kernel_size, stride=1, padding=0):
    """Copy every convolution window of ``x`` into a column.

    Args:
        x: (N, C, H, W).
        kernel_size, stride, padding: ints or (height, width) pairs.
    Returns:
        cols: (C*KH*KW, N*OH*OW), ``cols[(c, i, j), (n, oh, ow)] =
        x_pad[n, c, oh*sh + i, ow*sw + j]`` (C-contiguous).
    """
    if same_width(kernel_size, stride, padding):
        return im2col_same_width(pad_rows_flat(x, padding), x.shape, kernel_size, padding)
    return im2col_windows(pad_input(x, padding), kernel_size, stride)


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


def same_width(kernel_size, stride, padding) -> bool:
    """Stride 1 and ``2*pw == KW - 1``: the output is exactly as wide as the input (OW == W).

    True for every 3x3 pad-1 conv of Mask R-CNN, and what ``im2col_same_width`` needs.
    """
    return as_pair(stride) == (1, 1) and 2 * as_pair(padding)[1] == as_pair(kernel_size)[1] - 1


def pad_rows_flat(x, padding):
    """``x`` (N, C, H, W) padded with ``ph`` zero rows above and below every map, flattened,
    with ``pw`` more zeros at both ends: the buffer ``im2col_same_width`` reads.

    Returns:
        flat: (pw + N*C*(H + 2*ph)*W + pw,).
    """
    xp = get_xp(x)
    ph, pw = as_pair(padding)
    n, c, h, w = x.shape
    size = n * c * (h + 2 * ph) * w
    flat = xp.zeros(size + 2 * pw, dtype=x.dtype)
    flat[pw : pw + size].reshape(n, c, h + 2 * ph, w)[:, :, ph : ph + h] = x
    return flat


def im2col_same_width(flat, x_shape, kernel_size, padding, images=None, rows=None):
    """``im2col`` of a same-width conv (see ``same_width``), for a chunk of the output.

    ``im2col_windows`` copies one window row (OW elements) at a time, and for the mask
    head's 14x14 maps that per-row overhead dominates. When OW == W, the whole (OH, OW)
    block of kernel offset (i, j) is *one contiguous run* of the row-padded input,
    shifted by ``i*W + j - pw`` elements::

        x_pad[n, c, oh + i, ow + j] = x_rowpad[n, c].flat[(oh + i)*W + ow + j - pw]

    The run wraps around the row ends exactly where the window pokes into the left or
    right zero padding, so those columns (``ow < pw - j``, or ``ow >= W - (j - pw)``) are
    zeroed afterwards.

    Args:
        flat: ``pad_rows_flat(x, padding)``.
        x_shape: (N, C, H, W) of ``x``.
        kernel_size, padding: ints or pairs, with ``2*pw == KW - 1``.
        images: (n0, n1), default all; rows: (r0, r1) output rows, default all.
    Returns:
        cols: (C*KH*KW, (n1 - n0)*(r1 - r0)*W), columns ordered (n, oh, ow).
    """
    xp = get_xp(flat)
    kh, kw = as_pair(kernel_size)
    ph, pw = as_pair(padding)
    n, c, h, w = x_shape
    plane = (h + 2 * ph) * w
    n0, n1 = (0, n) if images is None else images
    r0, r1 = (0, h + 2 * ph - kh + 1) if rows is None else rows
    item = flat.itemsize
    runs = xp.lib.stride_tricks.as_strided(  # (C, KH, KW, n1-n0, (r1-r0)*W): run (c,i,j,n)
        flat[n0 * c * plane + r0 * w :],
        shape=(c, kh, kw, n1 - n0, (r1 - r0) * w),
        strides=(plane * item, w * item, item, c * plane * item, item),
    )
    cols = xp.empty((c, kh, kw, (n1 - n0) * (r1 - r0), w), dtype=flat.dtype)
    cols.reshape(runs.shape)[...] = runs
    for j in range(kw):  # columns that wrapped into the neighbouring row: padding
        if j < pw:
            cols[:, :, j, :, : pw - j] = 0
        elif j > pw:
            cols[:, :, j, :, max(w - (j - pw), 0) :] = 0
    return cols.reshape(c * kh * kw, -1)  # (C*KH*KW, images*rows*W)


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
