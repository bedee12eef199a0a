"""Tests of npmaskrcnn.data.raster: supersampled discs, capsules and convex polygons."""

import math

import numpy as np

from npmaskrcnn.data.raster import (
    primitive_extent,
    primitive_inside,
    primitives_coverage,
    shift_primitive,
)


def test_coverage_hand_computed_and_areas():
    # a 2 x 2 square polygon on the pixel grid: exactly four pixels
    square = ("polygon", np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]))
    cov = primitives_coverage([square], (5, 5))
    expected = np.zeros((5, 5))
    expected[1:3, 1:3] = 1
    np.testing.assert_array_equal(cov, expected)
    # disc and capsule areas match geometry; overlapping primitives are not counted twice
    disc = ("disc", 20.3, 19.7, 8.0)
    capsule = ("capsule", 5.2, 30.1, 35.2, 30.1, 2.0)
    cov = primitives_coverage([disc], (64, 64), supersample=8)
    assert abs(cov.sum() - math.pi * 64) < 0.01 * math.pi * 64
    cov = primitives_coverage([capsule], (64, 64), supersample=8)
    area = 30 * 4 + math.pi * 4
    assert abs(cov.sum() - area) < 0.01 * area
    both = primitives_coverage([disc, disc], (64, 64))
    np.testing.assert_array_equal(both, primitives_coverage([disc], (64, 64)))
    assert primitives_coverage([("disc", -50.0, -50.0, 3.0)], (8, 8)).sum() == 0


def test_polygon_either_orientation_extent_and_shift():
    corners = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]])
    u, v = np.array([2.0, 2.0, 5.0]), np.array([1.0, -0.5, 1.0])
    for pts in (corners, corners[::-1]):
        assert primitive_inside(("polygon", pts), u, v).tolist() == [True, False, False]
    capsule = ("capsule", 1.0, 2.0, 5.0, -1.0, 0.5)
    assert primitive_extent(capsule) == (0.5, -1.5, 5.5, 2.5)
    moved = shift_primitive(capsule, np.array([10.0, 20.0]))
    assert moved == ("capsule", 11.0, 22.0, 15.0, 19.0, 0.5)
    moved = shift_primitive(("polygon", corners), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(moved[1], corners + 1)
    assert shift_primitive(("disc", 1.0, 2.0, 3.0), np.array([1.0, 1.0])) == ("disc", 2.0, 3.0, 3.0)
