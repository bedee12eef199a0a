"""Tests for npmaskrcnn/boxes/anchors.py: cell anchors and AnchorGenerator."""

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.anchors import AnchorGenerator, generate_anchors

# The 9 anchors of one cell for sizes (32, 64, 128) and ratios h/w = (0.5, 1, 2), by hand:
# ratio 0.5: w = s*sqrt(2), h = s/sqrt(2); half-sides 22.63 / 11.31, 45.25 / 22.63, 90.51 / 45.25
# ratio 1:   half-sides 16, 32, 64
# ratio 2:   w = s/sqrt(2), h = s*sqrt(2) (the 0.5 anchors transposed)
# each rounded to the nearest integer; ratio-major, size-minor order.
NINE_ANCHORS = [
    [-23, -11, 23, 11], [-45, -23, 45, 23], [-91, -45, 91, 45],
    [-16, -16, 16, 16], [-32, -32, 32, 32], [-64, -64, 64, 64],
    [-11, -23, 11, 23], [-23, -45, 23, 45], [-45, -91, 45, 91],
]


def test_nine_cell_anchors_hand_computed():
    cell = generate_anchors((32, 64, 128), (0.5, 1.0, 2.0))
    assert cell.dtype == np.float32
    np.testing.assert_array_equal(cell, NINE_ANCHORS)
    gen = AnchorGenerator(sizes=((32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),))
    np.testing.assert_array_equal(gen.cell_anchors[0], NINE_ANCHORS)
    assert gen.num_anchors_per_location() == [9]


def test_default_fpn_configuration():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location() == [3] * 5
    np.testing.assert_array_equal(gen.cell_anchors[0], [NINE_ANCHORS[i] for i in (0, 3, 6)])
    np.testing.assert_array_equal(gen.cell_anchors[4], [[-362, -181, 362, 181],
                                                        [-256, -256, 256, 256],
                                                        [-181, -362, 181, 362]])


def test_flat_arguments_are_normalised():
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(0.5, 1.0, 2.0))
    assert gen.sizes == ((32,), (64,))
    assert gen.aspect_ratios == ((0.5, 1.0, 2.0),) * 2
    assert gen.num_anchors_per_location() == [3, 3]


def test_rounding_is_half_to_even():
    # size 33, ratio 1: half-side 16.5 rounds to 16 (torch.round rounds half to even)
    np.testing.assert_array_equal(generate_anchors((33,), (1.0,)), [[-16, -16, 16, 16]])
    np.testing.assert_array_equal(generate_anchors((35,), (1.0,)), [[-18, -18, 18, 18]])


def test_grid_anchors_order_and_shifts(xp):
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    (anchors,) = gen.grid_anchors([(2, 3)], [(4, 8)], xp=xp)  # h=2, w=3, sy=4, sx=8
    assert anchors.shape == (2 * 3 * 3, 4)
    anchors = asnumpy(anchors).reshape(2, 3, 3, 4)  # (row, column, anchor, 4)
    cell = gen.cell_anchors[0]
    for y in range(2):
        for x in range(3):
            np.testing.assert_array_equal(anchors[y, x], cell + [8 * x, 4 * y, 8 * x, 4 * y])


def test_call_strides_by_integer_division(xp):
    gen = AnchorGenerator()
    image_size = (800, 1088)
    feature_sizes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    anchors = gen(image_size, feature_sizes, xp=xp)
    assert [a.shape for a in anchors] == [(h * w * 3, 4) for h, w in feature_sizes]
    assert all(a.dtype == np.float32 for a in anchors)
    # P6 is 13 x 17: strides 800 // 13 = 61 and 1088 // 17 = 64; the last cell is at (12, 16)
    last = asnumpy(anchors[4])[-3:]
    np.testing.assert_array_equal(last, gen.cell_anchors[4] + [16 * 64, 12 * 61] * 2)
    # P2's first anchors are the cell anchors themselves (centred on the origin)
    np.testing.assert_array_equal(asnumpy(anchors[0])[:3], gen.cell_anchors[0])


def test_dtype_argument(xp):
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    (anchors,) = gen((64, 64), [(4, 4)], xp=xp, dtype=np.float64)
    assert anchors.dtype == np.float64 and anchors.shape == (48, 4)


def test_mismatched_levels_raise():
    with pytest.raises(ValueError):
        AnchorGenerator().grid_anchors([(2, 2)], [(4, 4)])
    with pytest.raises(ValueError):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,),) * 3)


def test_torchvision_parity():
    torch = pytest.importorskip("torch")
    anchor_utils = pytest.importorskip("torchvision.models.detection.anchor_utils")
    image_list = pytest.importorskip("torchvision.models.detection.image_list")
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    theirs = anchor_utils.AnchorGenerator(sizes, ratios)
    ours = AnchorGenerator(sizes, ratios)
    for want, got in zip(theirs.cell_anchors, ours.cell_anchors):
        np.testing.assert_array_equal(got, want.numpy())

    image_size = (320, 416)  # padded batch; the feature maps below are /4 ... /64, rounded up
    feature_sizes = [(80, 104), (40, 52), (20, 26), (10, 13), (5, 7)]
    images = image_list.ImageList(torch.zeros(1, 3, *image_size), [image_size])
    features = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    want = theirs(images, features)[0].numpy()
    got = np.concatenate(ours(image_size, feature_sizes))
    np.testing.assert_array_equal(got, want)

    nine = anchor_utils.AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
    np.testing.assert_array_equal(nine.cell_anchors[0].numpy(), NINE_ANCHORS)
