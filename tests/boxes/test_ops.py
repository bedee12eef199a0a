"""Tests for npmaskrcnn/boxes/ops.py: area, IoU, clipping, small-box removal."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.ops import (
    box_area,
    box_iou,
    box_table,
    clip_boxes_to_image,
    remove_small_boxes,
    table_iou,
)


def iou_naive(a, b):
    """IoU by the definition, one pair at a time (float64, NumPy)."""
    out = np.zeros((len(a), len(b)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            h = max(0.0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - w * h
            out[i, j] = w * h / union if union > 0 else 0.0
    return out


def random_boxes(rng, n, size=100.0, max_wh=40.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_box_area_hand_computed(xp):
    boxes = xp.asarray([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.0, 9.0], [1.0, 1.0, 4.0, 5.0]])
    np.testing.assert_array_equal(asnumpy(box_area(boxes)), [50.0, 0.0, 12.0])


def test_box_iou_hand_computed(xp):
    a = xp.asarray([[0.0, 0.0, 10.0, 10.0]])
    b = xp.asarray([
        [0.0, 0.0, 10.0, 10.0],  # identical: 1
        [5.0, 0.0, 15.0, 10.0],  # half overlap: 50 / 150
        [20.0, 20.0, 30.0, 30.0],  # disjoint: 0
        [10.0, 0.0, 20.0, 10.0],  # touching edge: 0
        [2.0, 2.0, 4.0, 4.0],  # inside: 4 / 100
    ])
    np.testing.assert_allclose(asnumpy(box_iou(a, b)), [[1.0, 1 / 3, 0.0, 0.0, 0.04]],
                               rtol=1e-15)


def test_box_iou_exactly_at_thresholds():
    # 70 / 100 and 30 / 100 are the float32 roundings of 0.7 and 0.3, what torch gives
    a = np.asarray([[0, 0, 10, 10]], dtype=np.float32)
    b = np.asarray([[0, 0, 7, 10], [0, 0, 3, 10]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.dtype == np.float32
    assert iou[0, 0] == np.float32(0.7) and iou[0, 1] == np.float32(0.3)


def test_box_iou_empty(xp):
    none = xp.zeros((0, 4))
    three = xp.asarray(random_boxes(np.random.default_rng(0), 3))
    assert box_iou(none, three).shape == (0, 3)
    assert box_iou(three, none).shape == (3, 0)
    assert box_iou(none, none).shape == (0, 0)


def test_box_iou_zero_area_is_zero_not_nan(xp):
    degenerate = xp.asarray([[3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 8.0]])  # a point, a segment
    normal = xp.asarray([[0.0, 0.0, 10.0, 10.0]])
    iou = asnumpy(box_iou(degenerate, xp.concatenate([degenerate, normal])))
    assert not np.isnan(iou).any()
    np.testing.assert_array_equal(iou, np.zeros((2, 3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_iou_matches_definition(xp, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    got = asnumpy(box_iou(xp.asarray(a), xp.asarray(b)))
    np.testing.assert_allclose(got, iou_naive(a, b), rtol=1e-12, atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 12)] * 4), min_size=1, max_size=6),
       st.lists(st.tuples(*[st.integers(0, 12)] * 4), min_size=1, max_size=6))
def test_box_iou_properties(a, b):
    # integer corners, sorted into valid boxes: exact ties and touching edges are common
    def valid(rows):
        r = np.asarray(rows, dtype=np.float64)
        return np.stack([np.minimum(r[:, 0], r[:, 2]), np.minimum(r[:, 1], r[:, 3]),
                         np.maximum(r[:, 0], r[:, 2]), np.maximum(r[:, 1], r[:, 3])], axis=1)
    a, b = valid(a), valid(b)
    iou = box_iou(a, b)
    assert np.all((iou >= 0) & (iou <= 1))
    np.testing.assert_array_equal(iou, box_iou(b, a).T)
    np.testing.assert_allclose(iou, iou_naive(a, b), rtol=1e-12, atol=0)
    positive = box_area(a) > 0
    np.testing.assert_array_equal(np.diag(box_iou(a, a))[positive], 1.0)


def test_table_iou_broadcasts_like_box_iou():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 6).astype(np.float32), random_boxes(rng, 4).astype(np.float32)
    ta, tb = box_table(a), box_table(b)
    assert ta.shape == (5, 6)
    np.testing.assert_array_equal(ta[4], box_area(a))
    # (5, 2, 3, 1) against (5, 1, 1, 4): the same values, in another layout
    got = table_iou(ta.reshape(5, 2, 3)[..., None], tb[:, None, None, :])
    np.testing.assert_array_equal(got.reshape(6, 4), box_iou(a, b))


def test_table_iou_same_bits_on_both_engines():
    """The device's fused kernel and the CPU's in-place steps are one formula in one order:
    the same float32 bits, degenerate (zero-area) pairs included, and one launch."""
    from npmaskrcnn import cpupy

    rng = np.random.default_rng(5)
    a = random_boxes(rng, 40, size=300, max_wh=120).astype(np.float32)
    b = random_boxes(rng, 30, size=300, max_wh=120).astype(np.float32)
    a[:3, 2:] = a[:3, :2]  # zero-area boxes: IoU 0, not NaN
    b[:2, 2:] = b[:2, :2]
    ta, tb = box_table(a)[:, :, None], box_table(b)[:, None, :]
    want = table_iou(ta, tb)
    with cpupy.counting() as c:
        got = table_iou(cpupy.asarray(ta), cpupy.asarray(tb))
    print(f"device table_iou: {c.ops} launch(es); zero-area pairs: {(want[:3] == 0).all()}")
    assert c.ops == 1 and c.syncs == 0
    np.testing.assert_array_equal(asnumpy(got), want)
    assert not np.isnan(want).any() and (want[:3] == 0).all()


def test_box_iou_torchvision_parity_bitwise():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(4)
    a = random_boxes(rng, 200, size=800, max_wh=200).astype(np.float32)
    b = random_boxes(rng, 50, size=800, max_wh=200).astype(np.float32)
    want = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(box_iou(a, b), want)


def test_clip_boxes_to_image_hand_computed(xp):
    boxes = xp.asarray([[-5.0, -1.0, 20.0, 8.0], [3.0, 4.0, 5.0, 6.0], [12.0, 9.0, 30.0, 40.0]],
                       dtype=xp.float32)
    out = clip_boxes_to_image(boxes, (10, 15))  # height 10, width 15
    assert out.dtype == xp.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(asnumpy(out), [[0, 0, 15, 8], [3, 4, 5, 6], [12, 9, 15, 10]])
    assert float(boxes[0, 0]) == -5.0  # the input is not modified


def test_clip_boxes_to_image_any_leading_shape(xp):
    boxes = xp.asarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 5)
    out = asnumpy(clip_boxes_to_image(boxes, (7, 11)))
    assert out.shape == (2, 3, 4)
    assert out[..., 0::2].min() >= 0 and out[..., 0::2].max() <= 11
    assert out[..., 1::2].min() >= 0 and out[..., 1::2].max() <= 7


def test_clip_boxes_torchvision_parity():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes = random_boxes(np.random.default_rng(5), 30, size=120, max_wh=60).astype(np.float32) - 20
    want = torchvision.ops.clip_boxes_to_image(torch.from_numpy(boxes), (90, 100)).numpy()
    np.testing.assert_array_equal(clip_boxes_to_image(boxes, (90, 100)), want)


def test_remove_small_boxes_hand_computed(xp):
    boxes = xp.asarray([
        [0.0, 0.0, 2.0, 2.0],  # exactly min_size: kept
        [0.0, 0.0, 1.9, 5.0],  # too narrow
        [0.0, 0.0, 5.0, 1.0],  # too short
        [1.0, 1.0, 9.0, 4.0],  # kept
    ])
    keep = remove_small_boxes(boxes, 2.0)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(asnumpy(keep), [0, 3])


def test_remove_small_boxes_empty(xp):
    keep = remove_small_boxes(xp.zeros((0, 4)), 1e-3)
    assert keep.shape == (0,) and keep.dtype == np.int64
