"""torchvision's bilinear rule: the scalar helper, its 1-D vectorised factor, and the
per-RoI interpolation matrices built from it."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.layers.bilinear import bilinear_corners, bilinear_interpolate, linear_weights_1d
from npmaskrcnn.layers.roi_align_separable import interpolation_matrix


def test_bilinear_corners_follow_torchvision_rules():
    assert bilinear_corners(-1.5, 1.0, 4, 4) == []  # y < -1: outside
    assert bilinear_corners(1.0, 4.5, 4, 4) == []  # x > W: outside
    # -1 <= y <= 0 reads row 0; x = 1.25 mixes columns 1 and 2
    assert bilinear_corners(-0.5, 1.25, 4, 4) == [(0, 1, 0.75), (0, 2, 0.25), (1, 1, 0.0),
                                                   (1, 2, 0.0)]
    # H - 1 <= y <= H reads the last row only
    assert [c[:2] for c in bilinear_corners(3.7, 0.0, 4, 4)] == [(3, 0), (3, 1), (3, 0), (3, 1)]


def test_bilinear_interpolate_hand_computed(xp):
    plane = xp.asarray(np.arange(16.0).reshape(1, 4, 4))  # x[i, j] = 4 i + j
    assert float(bilinear_interpolate(plane, 1.5, 2.25)[0]) == 4 * 1.5 + 2.25
    assert float(bilinear_interpolate(plane, 3.5, 3.9)[0]) == 15.0  # clamped corner
    assert float(bilinear_interpolate(plane, -1.01, 1.0)[0]) == 0.0  # outside


@settings(max_examples=30, deadline=None)
@given(y=st.floats(-2.0, 6.0), x=st.floats(-2.0, 6.0))
def test_vectorised_weights_are_the_scalar_rule(y, x):
    """The 2-D corner weights are the products of the 1-D row and column weights."""
    corners = bilinear_corners(y, x, 4, 5)
    ry = linear_weights_1d(np.array([y]), 4)
    rx = linear_weights_1d(np.array([x]), 5)
    rows, cols = (int(ry[0][0]), int(ry[1][0])), (int(rx[0][0]), int(rx[1][0]))
    wy, wx = (float(ry[2][0]), float(ry[3][0])), (float(rx[2][0]), float(rx[3][0]))
    expected = {}
    for (a, b, w) in [(rows[i], cols[j], wy[i] * wx[j]) for i in (0, 1) for j in (0, 1)]:
        expected[(a, b)] = expected.get((a, b), 0.0) + w
    got = {}
    for a, b, w in corners:
        got[(a, b)] = got.get((a, b), 0.0) + w
    for key in set(expected) | set(got):
        assert abs(expected.get(key, 0.0) - got.get(key, 0.0)) < 1e-12


def test_interpolation_matrix_hand_computed(xp):
    # one RoI, 2 bins, samples at 0.25, 0.75 | 1.25, 1.75: rows 0, 1, 2 touched
    coords = xp.asarray([[[0.25, 0.75], [1.25, 1.75]]])
    index, A, count = interpolation_matrix(coords, xp.asarray([2]), 4)
    assert asnumpy(index).tolist() == [[0, 1, 2]] and int(count[0]) == 3
    np.testing.assert_allclose(asnumpy(A)[0], [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], atol=1e-12)
    # one row per sample, and a second RoI whose grid has 1 sample (the second is padding)
    coords = xp.asarray([[[0.25, 0.75]], [[5.5, 9.0]]])
    index, A, count = interpolation_matrix(coords, xp.asarray([2, 1]), 8, average=False)
    assert asnumpy(count).tolist() == [2, 2]
    assert asnumpy(index).tolist() == [[0, 1], [5, 6]]
    np.testing.assert_allclose(asnumpy(A), [[[0.75, 0.25], [0.25, 0.75]],
                                            [[0.5, 0.5], [0.0, 0.0]]], atol=1e-12)


def test_interpolation_matrix_of_rois_outside_the_map(xp):
    coords = xp.asarray([[[-3.0, 9.5]], [[-1.0, 4.0]]])  # all outside; then both borders
    index, A, count = interpolation_matrix(coords, xp.asarray([2, 2]), 4)
    # -1 reads row 0 (its neighbour row 1 is listed, with weight 0); 4 = H reads row 3
    assert asnumpy(count).tolist() == [0, 3]
    assert asnumpy(index)[1].tolist() == [0, 1, 3]
    np.testing.assert_allclose(asnumpy(A)[1, 0], [0.5, 0.0, 0.5], atol=1e-12)
    assert float(abs(A[0]).sum()) == 0.0
