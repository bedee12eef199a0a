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
    targets = [{"boxes": np.array([[4.0, 4.0, 14.0, 12.0]], np.float32)}]
    proposals, losses = rpn((32, 32), [(30, 28)], feats, targets)
    assert abs(float(losses["loss_objectness"]) - math.log(2)) < 0.02
    p = proposals[0]
    assert 0 < len(p) <= 20
    assert p[:, 0].min() >= 0 and p[:, 2].max() <= 28 and p[:, 3].max() <= 30
    dfeats = rpn.backward()
    assert [d.shape for d in dfeats] == [f.shape for f in feats]
