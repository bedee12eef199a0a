import math

import numpy as np

from npmaskrcnn.backend import Generator
from npmaskrcnn.config import RPNConfig
from npmaskrcnn.gradcheck import directional_check, sparse_gradient_check
from npmaskrcnn.model.rpn import (
    RegionProposalNetwork,
    RPNHead,
    flatten_predictions,
    unflatten_gradients,
)
from npmaskrcnn.model.targets import batch_ground_truth


def test_flatten_orders_rows_by_position_then_anchor():
    n, a, h, w = 1, 3, 2, 2
    logits = np.arange(n * a * h * w, dtype=float).reshape(n, a, h, w)
    deltas = np.arange(n * 4 * a * h * w, dtype=float).reshape(n, 4 * a, h, w)
    fl, fd = flatten_predictions([logits], [deltas])
    # row r = (y*W + x)*A + anchor
    assert fl[0][0, 1 * a + 2] == logits[0, 2, 0, 1]
    np.testing.assert_array_equal(fd[0][0, 3 * a + 1], deltas[0, 4:8, 1, 1])
    ul, ud = unflatten_gradients(fl[0], fd[0], [logits.shape])
    np.testing.assert_array_equal(ul[0], logits)
    np.testing.assert_array_equal(ud[0], deltas)


def test_rpn_head_gradients_over_two_levels():
    rng = Generator(0, backend="numpy")
    head = RPNHead(4, 3, rng, np.float64)
    r = np.random.default_rng(0)
    feats = [r.standard_normal((1, 4, 6, 6)), r.standard_normal((1, 4, 3, 3))]
    douts = None

    def f():
        lg, dl = head(feats)
        for m in (head.conv[0][0], head.cls_logits, head.bbox_pred, head.conv[0][1]):
            m._caches.clear()
        return float(sum((a * b).sum() for a, b in zip(lg + dl, douts)))

    lg, dl = head(feats)
    douts = [r.standard_normal(x.shape) for x in lg + dl]
    dfeats = head.backward(douts[:2], douts[2:])
    for x, dx in zip(feats, dfeats):
        err = sparse_gradient_check(f, x, dx, num_checks=15)
        print("rpn head dfeature rel error", err)
        assert err < 1e-7
    head.zero_grad()
    head(feats)
    head.backward(douts[:2], douts[2:])
    params, grads = head.parameters(), head.gradients()
    err = directional_check(f, list(params.values()), [grads[k].copy() for k in params])
    print("rpn head params rel error", err)
    assert err < 1e-7


def test_rpn_losses_at_init_and_proposals_are_inside_the_image():
    cfg = RPNConfig(anchor_sizes=((8,), (16,)), batch_size_per_image=32,
                    pre_nms_top_n_train=50, post_nms_top_n_train=20)
    rpn = RegionProposalNetwork(cfg, 4, Generator(0, backend="numpy"), np.float32)
    r = np.random.default_rng(1)
    feats = [r.standard_normal((1, 4, 8, 8)).astype(np.float32),
             r.standard_normal((1, 4, 4, 4)).astype(np.float32)]
    gt = batch_ground_truth([{"boxes": np.array([[4.0, 4.0, 14.0, 12.0]], np.float32),
                              "labels": np.array([1])}], np.float32)
    proposals, losses, samples = rpn((32, 32), [(30, 28)], feats, gt)
    assert abs(float(losses["loss_objectness"]) - math.log(2)) < 0.02
    p = proposals.boxes[0][proposals.valid[0]]
    assert 0 < len(p) <= 20
    assert p[:, 0].min() >= 0 and p[:, 2].max() <= 28 and p[:, 3].max() <= 30
    assert samples.positive.sum() >= 1 and (samples.positive | samples.negative).sum() == 32
    dfeats = rpn.backward({"loss_objectness": 1.0, "loss_rpn_box_reg": 1.0})
    assert [d.shape for d in dfeats] == [f.shape for f in feats]


def test_all_levels_at_once_equals_the_level_loop(monkeypatch):
    """RPNHead.forward_flat on a GPU (one GEMM over every level; run here on NumPy) gives
    the loop's predictions, input gradients and parameter gradients, float64."""
    from npmaskrcnn.model import rpn_head

    r = np.random.default_rng(2)
    feats = [r.standard_normal((2, 4, 6, 5)), r.standard_normal((2, 4, 3, 3)),
             r.standard_normal((2, 4, 1, 2))]
    results = []
    for batched in (False, True):
        monkeypatch.setattr(rpn_head, "on_device", lambda xp, b=batched: b)
        head = RPNHead(4, 3, Generator(0, backend="numpy"), np.float64)
        obj, deltas, shapes = head.forward_flat(feats)
        dobj, ddel = (np.random.default_rng(3).standard_normal(a.shape) for a in (obj, deltas))
        dfeats = head.backward_flat(dobj, ddel, shapes)
        results.append((obj, deltas, dfeats, {k: g.copy() for k, g in head.gradients().items()},
                        shapes))
    (o0, d0, f0, g0, s0), (o1, d1, f1, g1, s1) = results
    assert [tuple(s) for s in s0] == [tuple(s) for s in s1] == [(2, 3, 6, 5), (2, 3, 3, 3),
                                                                (2, 3, 1, 2)]
    np.testing.assert_allclose(o1, o0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d1, d0, rtol=1e-12, atol=1e-14)
    for a, b in zip(f1, f0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert g0.keys() == g1.keys()
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-12, atol=1e-14)


def test_top_k_per_level_on_both_engines(monkeypatch):
    """The k best anchors of each level, best first; padding where a level has fewer."""
    from npmaskrcnn.model import rpn

    r = np.random.default_rng(4)
    objectness = r.standard_normal((2, 7 + 3 + 5))
    out = []
    for batched in (False, True):
        monkeypatch.setattr(rpn, "on_device", lambda xp, b=batched: b)
        index, valid = rpn.top_k_per_level(objectness, [7, 3, 5], 4)
        out.append((np.asarray(index), np.asarray(valid)))
    for index, valid in out:
        assert index.shape == valid.shape == (2, 3, 4)
        np.testing.assert_array_equal(valid[0], [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
        for i in range(2):
            for level, (start, num) in enumerate([(0, 7), (7, 3), (10, 5)]):
                want = start + np.argsort(-objectness[i, start:start + num])[:min(4, num)]
                np.testing.assert_array_equal(index[i, level][valid[i, level]], want)


def _two_level_features(seed):
    r = np.random.default_rng(seed)
    return [r.standard_normal((1, 4, 8, 8)).astype(np.float32),
            r.standard_normal((1, 4, 4, 4)).astype(np.float32)]


def test_a_level_without_anchor_sizes_is_not_looked_at():
    """anchor_sizes ((), (16,)) on (P, Q) is the one-level RPN ((16,),) on Q: the same
    proposals, losses and samples, Q's gradient the same, none for P, and P never read
    (NaN there changes nothing)."""
    kwargs = dict(batch_size_per_image=32, pre_nms_top_n_train=50, post_nms_top_n_train=20)
    skip = RegionProposalNetwork(RPNConfig(anchor_sizes=((), (16,)), **kwargs), 4,
                                 Generator(0, backend="numpy"), np.float32)
    one = RegionProposalNetwork(RPNConfig(anchor_sizes=((16,),), **kwargs), 4,
                                Generator(0, backend="numpy"), np.float32)
    assert skip.levels == (1,) and one.levels == (0,)
    p, q = _two_level_features(5)
    gt = batch_ground_truth([{"boxes": np.array([[4.0, 4.0, 20.0, 18.0]], np.float32),
                              "labels": np.array([1])}], np.float32)
    results = []
    for rpn, feats in ((skip, [np.full_like(p, np.nan), q]), (one, [q])):
        proposals, losses, samples = rpn((32, 32), [(32, 32)], feats, gt)
        dfeats = rpn.backward({"loss_objectness": 1.0, "loss_rpn_box_reg": 1.0})
        results.append((proposals, losses, samples, dfeats))
    (p0, l0, s0, d0), (p1, l1, s1, d1) = results
    np.testing.assert_array_equal(p0.boxes, p1.boxes)
    np.testing.assert_array_equal(p0.valid, p1.valid)
    for k in l1:
        assert float(l0[k]) == float(l1[k]) and np.isfinite(float(l0[k]))
    np.testing.assert_array_equal(s0.positive, s1.positive)
    assert s1.positive.sum() >= 1
    assert len(d0) == 2 and d0[0] is None
    np.testing.assert_array_equal(d0[1], d1[0])


def test_anchor_sizes_that_do_not_fit_the_features_are_refused():
    import pytest

    with pytest.raises(ValueError, match="no level has an anchor size"):
        RegionProposalNetwork(RPNConfig(anchor_sizes=((), ())), 4,
                              Generator(0, backend="numpy"), np.float32)
    rpn = RegionProposalNetwork(RPNConfig(anchor_sizes=((8,), (16,), (32,))), 4,
                                Generator(0, backend="numpy"), np.float32)
    rpn.eval()
    with pytest.raises(ValueError, match="2 feature maps but anchor sizes for 3 levels"):
        rpn((32, 32), [(32, 32)], _two_level_features(6))
