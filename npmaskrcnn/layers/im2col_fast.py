"""The convolution engine's column tricks (``im2col.py`` teaches the plain versions).

Two things make a NumPy convolution fast beyond "im2col + one GEMM", both about memory:

- **Chunks** (``chunk_ranges``): a full column matrix is C*KH*KW times the input, far
  larger than any cache; page-faulting it in and streaming it through memory costs more
  than the GEMM. So a CPU convolution builds the columns of a few images (or a band of
  rows of one image) at a time, ``CHUNK_ELEMENTS`` floats, which the GEMM reads back while
  they are still in cache. On a GPU the opposite holds -- each chunk is a kernel launch
  -- so there the whole matrix is one chunk (``on_device``).
- **Runs** (``im2col_same_width``): for a stride-1 convolution as wide as its input (every
  3x3 pad-1 conv), the (OH, OW) block of one kernel offset is one contiguous run of the
  row-padded input, copied in one go instead of row by row.
"""

from __future__ import annotations

from ..backend import get_xp
from .sizes import as_pair

# Size of the column matrix of one chunk, when a convolution works through its input
# piece by piece: im2col writes (rows x chunk) floats that the GEMM reads straight back.
# 2**21 float32 (8 MiB) stay in cache and are reused by the allocator, instead of a
# full-size matrix being page-faulted in fresh and streamed through memory on every
# call. Measured on the benchmark shapes: 2**19..2**21 are within noise of each other on
# one thread; on a busy machine fewer, larger GEMM calls fare better; 2**22 and more
# lose the cache.
CHUNK_ELEMENTS = 1 << 21


def chunk_ranges(n: int, rows: int, row_len: int, col_rows: int,
                 whole: bool = False) -> list[tuple]:
    """Split an (N, rows, row_len) output into pieces of about CHUNK_ELEMENTS / col_rows
    columns: ``(n0, n1, r0, r1)`` = images [n0, n1), rows [r0, r1). Whole images when
    one image fits, else bands of rows of one image.

    Args:
        col_rows: rows of the column matrix (C*KH*KW), what one column costs.
        whole: one piece for everything (a GPU: see the module docstring).
    """
    if whole:
        return [(0, n, 0, rows)] if n > 0 else []
    budget = max(1, CHUNK_ELEMENTS // max(col_rows, 1))
    per_image = max(rows * row_len, 1)
    if per_image <= budget:
        step = budget // per_image
        return [(n0, min(n0 + step, n), 0, rows) for n0 in range(0, n, step)]
    band = max(1, budget // row_len)
    return [(i, i + 1, r0, min(r0 + band, rows)) for i in range(n) for r0 in range(0, rows, band)]


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
    # empty, then zeros only where x does not go: one pass over the buffer, not two (a
    # (1, 256, 200, 272) map, the R50-FPN's P2 at 800 px: 16.5 -> 9.9 ms)
    flat = xp.empty(size + 2 * pw, dtype=x.dtype)
    flat[:pw] = 0
    flat[pw + size :] = 0
    maps = flat[pw : pw + size].reshape(n, c, h + 2 * ph, w)
    maps[:, :, :ph] = 0
    maps[:, :, ph + h :] = 0
    maps[:, :, ph : ph + h] = x
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
