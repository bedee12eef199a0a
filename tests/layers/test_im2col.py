from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import rel_error
from npmaskrcnn.layers import im2col_fast as im2col_module
from npmaskrcnn.layers.im2col import (
    col2im,
    col2im_naive,
    im2col,
    im2col_naive,
    im2col_windows,
    pad_input,
)
from npmaskrcnn.layers.im2col_fast import (
    chunk_ranges,
    im2col_same_width,
    pad_rows_flat,
    same_width,
)
from npmaskrcnn.layers.sizes import as_pair, conv_output_size


def test_as_pair_and_output_size():
    assert as_pair(3) == (3, 3)
    assert as_pair((2, 5)) == (2, 5)
    assert conv_output_size(7, 3, 2, 1) == 4  # (7 + 2 - 3) // 2 + 1
    assert conv_output_size(6, 3, 2, 0) == 2  # floor: the last row is never a window start
    assert conv_output_size(14, 3, 1, 1) == 14  # 'same' 3x3


def test_im2col_hand_computed(xp):
    # x = [[0 1 2], [3 4 5], [6 7 8]], 2x2 windows, stride 1: four windows, one per column.
    x = xp.arange(9, dtype=xp.float64).reshape(1, 1, 3, 3)
    expected = np.array(
        [
            [0, 1, 3, 4],  # (i, j) = (0, 0): the top-left element of each window
            [1, 2, 4, 5],  # (0, 1)
            [3, 4, 6, 7],  # (1, 0)
            [4, 5, 7, 8],  # (1, 1)
        ],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(asnumpy(im2col(x, 2)), expected)


def test_im2col_padding_stride_hand_computed(xp):
    # 1x2 image [a b] = [1 2], kernel 1x2, stride 2, padding (0, 1): padded [0 1 2 0],
    # windows start at columns 0 and 2: [0 1] and [2 0].
    x = xp.asarray([[[[1.0, 2.0]]]])
    cols = im2col(x, (1, 2), stride=2, padding=(0, 1))
    np.testing.assert_array_equal(asnumpy(cols), [[0.0, 2.0], [1.0, 0.0]])


def test_col2im_hand_computed_overlap(xp):
    # All-ones columns of a 2x2 kernel over a 3x3 image: col2im counts how many windows
    # cover each pixel (the centre is in all four).
    cols = xp.ones((4, 4))
    expected = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    np.testing.assert_array_equal(asnumpy(col2im(cols, (1, 1, 3, 3), 2))[0, 0], expected)


def test_pad_input(xp):
    x = xp.ones((1, 2, 2, 3))
    p = pad_input(x, (1, 2))
    assert p.shape == (1, 2, 4, 7)
    assert float(p.sum()) == 12.0 and float(p[0, 0, 1, 2]) == 1.0 and float(p[0, 0, 0, 0]) == 0.0
    assert pad_input(x, (0, 0)) is x


conv_geometry = st.tuples(
    st.integers(0, 2),  # N (0: an empty batch)
    st.integers(1, 3),  # C
    st.integers(1, 6),  # H
    st.integers(1, 6),  # W
    st.integers(1, 3),  # KH
    st.integers(1, 3),  # KW
    st.integers(1, 3),  # sh
    st.integers(1, 3),  # sw
    st.integers(0, 2),  # ph
    st.integers(0, 2),  # pw
).filter(lambda g: g[2] + 2 * g[8] >= g[4] and g[3] + 2 * g[9] >= g[5])


@settings(max_examples=40, deadline=None)
@given(geometry=conv_geometry, seed=st.integers(0, 2**16))
def test_im2col_col2im_match_loops(geometry, seed):
    n, c, h, w, kh, kw, sh, sw, ph, pw = geometry
    args = ((kh, kw), (sh, sw), (ph, pw))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, *args)
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    assert cols.shape == (c * kh * kw, n * oh * ow)
    assert cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, im2col_naive(x, *args))  # a copy: exact
    dcols = rng.standard_normal(cols.shape)
    back = col2im(dcols, x.shape, *args)
    assert back.shape == x.shape
    assert rel_error(back, col2im_naive(dcols, x.shape, *args)) < 1e-10


@settings(max_examples=30, deadline=None)
@given(geometry=conv_geometry, seed=st.integers(0, 2**16))
def test_col2im_is_adjoint_of_im2col(geometry, seed):
    # <im2col(x), D> = <x, col2im(D)> for every x and D: col2im is im2col's transpose.
    n, c, h, w, kh, kw, sh, sw, ph, pw = geometry
    args = ((kh, kw), (sh, sw), (ph, pw))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, *args)
    d = rng.standard_normal(cols.shape)
    lhs, rhs = float((cols * d).sum()), float((x * col2im(d, x.shape, *args)).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_chunk_ranges_hand_computed():
    with mock.patch.object(im2col_module, "CHUNK_ELEMENTS", 60):  # 60 // 3 = 20 columns
        # 3 images of 2 rows x 4 = 8 columns: two images per chunk
        assert chunk_ranges(3, 2, 4, 3) == [(0, 2, 0, 2), (2, 3, 0, 2)]
        # 1 image of 5 rows x 6 = 30 columns: bands of 20 // 6 = 3 rows
        assert chunk_ranges(1, 5, 6, 3) == [(0, 1, 0, 3), (0, 1, 3, 5)]
    assert chunk_ranges(0, 5, 6, 3) == []


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 4),
    rows=st.integers(1, 6),
    row_len=st.integers(1, 6),
    col_rows=st.integers(1, 20),
    chunk=st.integers(1, 400),
)
def test_chunk_ranges_partition_the_output(n, rows, row_len, col_rows, chunk):
    with mock.patch.object(im2col_module, "CHUNK_ELEMENTS", chunk):
        pieces = chunk_ranges(n, rows, row_len, col_rows)
    covered = np.zeros((n, rows), dtype=int)
    for n0, n1, r0, r1 in pieces:
        assert n1 > n0 and r1 > r0
        assert (r0, r1) == (0, rows) or n1 - n0 == 1  # whole images, or a band of one
        covered[n0:n1, r0:r1] += 1
        columns = (n1 - n0) * (r1 - r0) * row_len
        assert columns <= max(chunk // col_rows, row_len)  # within budget, or one row
    assert (covered == 1).all()


@settings(max_examples=30, deadline=None)
@given(geometry=conv_geometry, seed=st.integers(0, 2**16), split=st.integers(0, 3))
def test_chunks_of_columns_are_slices_of_the_whole(geometry, seed, split):
    n, c, h, w, kh, kw, sh, sw, ph, pw = geometry
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    whole = im2col_naive(x, (kh, kw), (sh, sw), (ph, pw)).reshape(c * kh * kw, n, oh, ow)
    n0, r0 = min(split, n), min(split, oh - 1)
    for images, rows in [((n0, n), (0, oh)), ((0, min(1, n)), (r0, oh))]:
        expected = whole[:, images[0] : images[1], rows[0] : rows[1]].reshape(len(whole), -1)
        chunk = im2col_windows(pad_input(x, (ph, pw)), (kh, kw), (sh, sw), images, rows)
        np.testing.assert_array_equal(chunk, expected)
        if same_width((kh, kw), (sh, sw), (ph, pw)):
            flat = pad_rows_flat(x, (ph, pw))
            chunk = im2col_same_width(flat, x.shape, (kh, kw), (ph, pw), images, rows)
            np.testing.assert_array_equal(chunk, expected)


@pytest.mark.parametrize("width", [1, 2, 3, 7])
def test_same_width_wide_kernel_narrow_input(width):
    # 5x5 pad 2: the runs of offsets j = 0, 1, 3, 4 wrap by 2 or 1 columns; with W < 3 a
    # whole row wraps, and every column of that offset must come out as padding.
    x = np.random.default_rng(width).standard_normal((2, 2, 4, width))
    assert same_width(5, 1, 2)
    np.testing.assert_array_equal(im2col(x, 5, 1, 2), im2col_naive(x, 5, 1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(xp, dtype):
    x = xp.ones((2, 3, 5, 5), dtype=dtype)
    cols = im2col(x, 3, 1, 1)
    assert cols.dtype == dtype
    assert col2im(cols, x.shape, 3, 1, 1).dtype == dtype


def test_backends_agree(xp):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    cols = im2col(xp.asarray(x), (3, 2), (2, 1), (1, 0))
    np.testing.assert_array_equal(asnumpy(cols), im2col_naive(x, (3, 2), (2, 1), (1, 0)))
    back = col2im(cols, x.shape, (3, 2), (2, 1), (1, 0))
    expected = col2im_naive(asnumpy(cols), x.shape, (3, 2), (2, 1), (1, 0))
    assert rel_error(back, expected) < 1e-10


@pytest.mark.parametrize("padding", [(1, 1), (2, 2), (0, 1), (2, 0)])
def test_pad_rows_flat_zeroes_its_padding_in_reused_memory(padding):
    """The buffer starts uninitialised (``empty``): every cell x does not fill must be
    written 0. Memory freed just before, full of NaN, is what the allocator hands back."""
    from npmaskrcnn.engine.memory import keep_freed_memory

    keep_freed_memory()  # freed blocks go back to the heap, to be reused by the next empty
    ph, pw = padding
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 6)).astype(np.float32)
    size = 2 * 3 * (5 + 2 * ph) * 6 + 2 * pw
    for _ in range(3):
        dirty = np.full(size, np.nan, dtype=np.float32)
        del dirty
        flat = pad_rows_flat(x, padding)
        expected = np.concatenate([np.zeros(pw, np.float32),
                                   np.pad(x, ((0, 0), (0, 0), (ph, ph), (0, 0))).ravel(),
                                   np.zeros(pw, np.float32)])
        np.testing.assert_array_equal(flat, expected)
