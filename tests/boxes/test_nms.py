"""Tests for npmaskrcnn/boxes/nms.py and nms_fast.py: the greedy loops and the engine."""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.nms import batched_nms, batched_nms_naive, nms, nms_naive, nms_padded

nms_module = importlib.import_module("npmaskrcnn.boxes.nms_fast")  # the engine

BOTH = [nms, nms_naive]


def uniform_boxes(rng, n, width=1067.0, height=800.0, max_wh=200.0):
    x1, y1 = rng.uniform(0, width, n), rng.uniform(0, height, n)
    w, h = rng.uniform(4, max_wh, n), rng.uniform(4, max_wh, n)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def clustered_boxes(rng, num_objects, per_object):
    """~per_object jittered copies of each object box: most of them are suppressed."""
    objects = uniform_boxes(rng, num_objects)
    wh = np.tile(objects[:, 2:] - objects[:, :2], 2)
    boxes = np.repeat(objects, per_object, axis=0)
    boxes += rng.normal(0, 0.06, boxes.shape) * np.repeat(wh, per_object, axis=0)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes


def per_group_reference(boxes, scores, idxs, iou_threshold):
    """batched NMS by definition: nms_naive per category, merged by score."""
    keep = [np.flatnonzero(idxs == g)[nms_naive(boxes[idxs == g], scores[idxs == g],
                                                iou_threshold)]
            for g in np.unique(idxs)]
    keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 and row chunks of 3, so small inputs cross every block boundary."""
    monkeypatch.setattr(nms_module, "_BLOCK", 8)
    monkeypatch.setattr(nms_module, "_ROW_CHUNK", 3)


@pytest.mark.parametrize("fn", BOTH)
def test_hand_computed(xp, fn):
    boxes = xp.asarray([
        [0.0, 0.0, 10.0, 10.0],  # 0: best
        [1.0, 1.0, 11.0, 11.0],  # 1: IoU 81/119 = 0.68 with box 0
        [50.0, 50.0, 60.0, 60.0],  # 2: alone
        [0.0, 0.0, 10.0, 9.0],  # 3: IoU 0.9 with box 0
    ])
    scores = xp.asarray([0.9, 0.8, 0.3, 0.95])
    keep = fn(boxes, scores, 0.5)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(asnumpy(keep), [3, 2])  # 3 suppresses 0 and 1
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.7)), [3, 1, 2])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.95)), [3, 0, 1, 2])


@pytest.mark.parametrize("fn", BOTH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iou_equal_to_threshold_is_not_suppressed(xp, fn, dtype):
    # IoU(0, 1) = 70 / 100 and IoU(0, 2) = 50 / 100, exactly the thresholds; IoU(1, 2) = 0.2
    boxes = xp.asarray([[0, 0, 10, 10], [0, 0, 7, 10], [5, 0, 10, 10]], dtype=dtype)
    scores = xp.asarray([3.0, 2.0, 1.0], dtype=dtype)
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.7)), [0, 1, 2])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.69)), [0, 2])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.5)), [0, 2])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.49)), [0])


@pytest.mark.parametrize("fn", BOTH)
def test_threshold_is_compared_as_a_double(fn):
    # float32(30 / 100) = 0.30000001 > 0.3: torchvision suppresses, a float32 compare would not
    boxes = np.asarray([[0, 0, 10, 10], [0, 0, 3, 10]], dtype=np.float32)
    scores = np.asarray([2.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(fn(boxes, scores, 0.3), [0])
    # in float64, 30 / 100 is the double 0.3 itself: kept
    np.testing.assert_array_equal(fn(boxes.astype(np.float64), scores, 0.3), [0, 1])


@pytest.mark.parametrize("fn", BOTH)
def test_score_ties_visit_lower_index_first(xp, fn):
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 0, 30, 10],
                        [0.0, 0.0, 10.0, 10.0]])
    scores = xp.asarray([0.5, 0.9, 0.5, 0.9])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.5)), [1, 2])


@pytest.mark.parametrize("fn", BOTH + [lambda b, s, t: batched_nms(b, s, s.astype(int) * 0, t)])
def test_empty(xp, fn):
    keep = fn(xp.zeros((0, 4)), xp.zeros((0,)), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64


@pytest.mark.parametrize("fn", BOTH)
def test_zero_area_boxes_never_suppress(xp, fn):
    boxes = xp.asarray([[5.0, 5.0, 5.0, 5.0]] * 3 + [[0.0, 0.0, 10.0, 10.0], [4, 4, 4, 9]])
    scores = xp.asarray([0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_array_equal(asnumpy(fn(boxes, scores, 0.0)), [0, 1, 2, 3, 4])


@pytest.mark.parametrize("fn", BOTH)
def test_single_box(xp, fn):
    keep = fn(xp.asarray([[1.0, 2.0, 3.0, 4.0]]), xp.asarray([0.1]), 0.5)
    np.testing.assert_array_equal(asnumpy(keep), [0])


def test_chain_needs_the_sequential_fallback(xp):
    # boxes [i, 0, i + 2, 1]: neighbours have IoU 1/3, so greedy keeps every other box.
    # The fixed point settles one position per round: 40 > _MAX_ROUNDS rounds.
    n = 40
    i = np.arange(n, dtype=np.float64)
    boxes = xp.asarray(np.stack([i, 0 * i, i + 2, 0 * i + 1], axis=1))
    scores = xp.asarray(1.0 - i / n)
    want = np.arange(0, n, 2)
    np.testing.assert_array_equal(asnumpy(nms_naive(boxes, scores, 0.3)), want)
    np.testing.assert_array_equal(asnumpy(nms(boxes, scores, 0.3)), want)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_fast_equals_naive_random_and_clustered(xp, seed, iou_threshold):
    rng = np.random.default_rng(seed)
    for boxes in (uniform_boxes(rng, 600), clustered_boxes(rng, 12, 40)):
        boxes = xp.asarray(boxes.astype(np.float32))
        scores = xp.asarray(rng.random(len(boxes)).astype(np.float32))
        np.testing.assert_array_equal(asnumpy(nms(boxes, scores, iou_threshold)),
                                      asnumpy(nms_naive(boxes, scores, iou_threshold)))


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_naive_across_block_boundaries(xp, small_blocks, seed):
    rng = np.random.default_rng(seed)
    boxes = xp.asarray(np.concatenate([clustered_boxes(rng, 4, 10), uniform_boxes(rng, 30)]))
    scores = xp.asarray(rng.random(len(boxes)))
    for t in (-0.1, 0.0, 0.4, 0.8):
        np.testing.assert_array_equal(asnumpy(nms(boxes, scores, t)),
                                      asnumpy(nms_naive(boxes, scores, t)))


def grid_boxes_and_scores():
    """Small boxes on an integer grid with integer scores: exact IoU ties and score ties."""
    corner = st.integers(0, 8)
    box = st.tuples(corner, corner, st.integers(0, 5), st.integers(0, 5))
    return st.lists(st.tuples(box, st.integers(0, 4)), min_size=1, max_size=25)


def to_arrays(rows, dtype=np.float32):
    boxes = np.asarray([[x, y, x + w, y + h] for (x, y, w, h), _ in rows], dtype=dtype)
    scores = np.asarray([s for _, s in rows], dtype=dtype)
    return boxes, scores


@settings(max_examples=150, deadline=None)
@given(grid_boxes_and_scores(), st.sampled_from([0.0, 0.25, 0.3, 0.5, 0.7]),
       st.integers(1, 3))
def test_fast_equals_naive_on_grids(rows, iou_threshold, num_groups):
    boxes, scores = to_arrays(rows)
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold),
                                  nms_naive(boxes, scores, iou_threshold))
    idxs = np.arange(len(rows)) % num_groups
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, iou_threshold),
                                  per_group_reference(boxes, scores, idxs, iou_threshold))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_equals_per_group_loop(xp, seed):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([uniform_boxes(rng, 300), clustered_boxes(rng, 8, 30)])
    scores = rng.random(len(boxes))
    idxs = rng.integers(0, 7, len(boxes))
    got = batched_nms(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.5)
    np.testing.assert_array_equal(asnumpy(got), per_group_reference(boxes, scores, idxs, 0.5))


def test_batched_small_blocks_and_one_box_groups(xp, small_blocks):
    rng = np.random.default_rng(5)
    boxes = clustered_boxes(rng, 5, 8)
    scores = rng.random(len(boxes))
    for idxs in (rng.integers(0, 3, len(boxes)), np.arange(len(boxes)), np.zeros(len(boxes))):
        got = batched_nms(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.5)
        np.testing.assert_array_equal(asnumpy(got),
                                      per_group_reference(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("top_k", [0, 1, 5, 40, 10_000])
def test_batched_top_k_equals_prefix_of_all(xp, small_blocks, top_k):
    """top_k decides only a best-scored prefix; it must equal the full result's head,
    score ties (rounded scores) included, also when fewer than top_k boxes survive."""
    rng = np.random.default_rng(11)
    boxes = np.concatenate([uniform_boxes(rng, 120), clustered_boxes(rng, 6, 25)])
    scores = np.round(rng.random(len(boxes)), 1)  # many ties
    idxs = rng.integers(0, 5, len(boxes))
    args = xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.5
    full = asnumpy(batched_nms(*args))
    got = asnumpy(batched_nms(*args, top_k=top_k))
    np.testing.assert_array_equal(got, full[:top_k])
    np.testing.assert_array_equal(got, per_group_reference(boxes, scores, idxs, 0.5)[:top_k])


def test_batched_never_suppresses_across_categories(xp):
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0]] * 4)
    scores = xp.asarray([0.1, 0.9, 0.5, 0.7])
    idxs = xp.asarray([0, 1, 0, 2])
    # category 0 keeps its best (index 2); output by decreasing score
    np.testing.assert_array_equal(asnumpy(batched_nms(boxes, scores, idxs, 0.5)), [1, 3, 2])
    np.testing.assert_array_equal(asnumpy(nms(boxes, scores, 0.5)), [1])


@settings(max_examples=100, deadline=None)
@given(grid_boxes_and_scores(), st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_torchvision_parity_with_ties_and_exact_thresholds(rows, iou_threshold):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes, scores = to_arrays(rows)
    want = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold)
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold), want.numpy())


@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_torchvision_parity_large(iou_threshold):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(7)
    boxes = np.concatenate([uniform_boxes(rng, 1500), clustered_boxes(rng, 30, 50)])
    boxes = boxes.astype(np.float32)
    # distinct scores: torchvision's batched_nms orders equal scores arbitrarily above 1000 boxes
    scores = (rng.permutation(len(boxes)) / len(boxes)).astype(np.float32)
    idxs = rng.integers(0, 5, len(boxes))
    tb, ts, ti = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs)
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold),
                                  torchvision.ops.nms(tb, ts, iou_threshold).numpy())
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, iou_threshold),
                                  torchvision.ops.batched_nms(tb, ts, ti, iou_threshold).numpy())
    small = slice(0, 600)  # under 1000 boxes torchvision uses its coordinate-offset trick
    np.testing.assert_array_equal(
        batched_nms(boxes[small], scores[small], idxs[small], iou_threshold),
        torchvision.ops.batched_nms(tb[small], ts[small], ti[small], iou_threshold).numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_naive_is_the_per_group_loop(xp, seed):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([uniform_boxes(rng, 60), clustered_boxes(rng, 4, 10)])
    scores = np.round(rng.random(len(boxes)), 1)  # ties
    idxs = rng.integers(0, 4, len(boxes))
    got = batched_nms_naive(xp.asarray(boxes), xp.asarray(scores), xp.asarray(idxs), 0.5)
    np.testing.assert_array_equal(asnumpy(got), per_group_reference(boxes, scores, idxs, 0.5))


def test_padded_problems_equal_nms_of_each(xp):
    """nms_padded: B independent problems with ragged valid rows, padding never kept."""
    rng = np.random.default_rng(3)
    B, m = 4, 90
    boxes = np.stack([clustered_boxes(rng, 3, 30) for _ in range(B)]).astype(np.float32)
    scores = np.round(rng.random((B, m)), 2).astype(np.float32)
    valid = rng.random((B, m)) < 0.8
    valid[2] = False  # a problem with no box at all
    keep = asnumpy(nms_padded(xp.asarray(boxes), xp.asarray(scores), xp.asarray(valid), 0.5))
    assert keep.shape == (B, m) and not keep[~valid].any()
    for b in range(B):
        members = np.flatnonzero(valid[b])
        want = np.zeros(m, bool)
        want[members[nms_naive(boxes[b, members], scores[b, members], 0.5)]] = True
        np.testing.assert_array_equal(keep[b], want)


def test_device_engine_needs_few_launches_and_syncs():
    """On a GPU (counted on the cpupy stand-in) NMS of 2000 clustered boxes is a handful
    of batched launches and a sync per few fixed-point rounds, not one per block."""
    from npmaskrcnn import cpupy

    rng = np.random.default_rng(0)
    boxes = cpupy.asarray(clustered_boxes(rng, 50, 40).astype(np.float32))
    scores = cpupy.asarray(rng.random(2000).astype(np.float32))
    with cpupy.counting() as c:
        keep = nms(boxes, scores, 0.5)
    print("nms of 2000 boxes on the device engine:", c.as_dict())
    assert c.ops <= 60 and c.syncs <= 4
    np.testing.assert_array_equal(asnumpy(keep), nms_naive(asnumpy(boxes), asnumpy(scores), 0.5))
