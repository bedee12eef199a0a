"""Tests for npmaskrcnn/model/keypoint_head.py: the keypoint head and predictor, the heatmap
targets and the keypoint loss."""

import math

import numpy as np
import pytest

from npmaskrcnn.backend import Generator, asnumpy
from npmaskrcnn.gradcheck import (
    directional_check,
    numerical_gradient,
    rel_error,
    sparse_gradient_check,
)
from npmaskrcnn.model.keypoint_head import (
    KeypointRCNNHeads,
    KeypointRCNNPredictor,
    gaussian_heatmap_targets,
    keypoint_heatmap_loss,
    keypoint_positions,
    keypoint_soft_heatmap_loss,
    keypointrcnn_loss,
    keypoints_to_heatmap,
)


def _small_head(dtype=np.float64, layers=(4, 5), in_channels=3, k=2, seed=0):
    rng = Generator(seed)
    return (KeypointRCNNHeads(in_channels, layers, rng, dtype),
            KeypointRCNNPredictor(layers[-1], k, rng, dtype))


def _random_keypoints(rng, boxes, k, p_visible=0.8):
    """(P, K, 3) keypoints spread over each box and a margin around it."""
    p = len(boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x = boxes[:, None, 0] + rng.uniform(-0.2, 1.2, (p, k)) * w[:, None]
    y = boxes[:, None, 1] + rng.uniform(-0.2, 1.2, (p, k)) * h[:, None]
    v = np.where(rng.random((p, k)) < p_visible, 2.0, 0.0)
    return np.stack([x, y, v], axis=2)


# ----------------------------------------------------------------------------- targets
def test_heatmap_hand_computed(xp):
    # RoI (10, 20)-(18, 36): 8 wide, 16 high, s = 4 -> bins 2 px wide and 4 px high
    rois = xp.asarray([[10.0, 20.0, 18.0, 36.0]])
    kps = xp.asarray([[
        [10.0, 20.0, 2],   # top-left corner: bin (0, 0)
        [13.9, 27.0, 1],   # x bin floor(3.9/2) = 1, y bin floor(7/4) = 1; occluded but labelled
        [18.0, 36.0, 2],   # exactly on x2 and y2: the last bin, (3, 3)
        [18.01, 30.0, 2],  # just right of x2: outside
        [12.0, 24.0, 0],   # not labelled: invalid wherever it is
        [9.99, 30.0, 2],   # just left of x1: outside
    ]])
    heatmaps, valid = keypoints_to_heatmap(kps, rois, 4)
    assert asnumpy(valid).tolist() == [[True, True, True, False, False, False]]
    assert asnumpy(heatmaps).tolist() == [[0, 1 * 4 + 1, 3 * 4 + 3, 0, 0, 0]]
    assert heatmaps.dtype == np.int64


def test_heatmap_accepts_rois_with_batch_index_and_zero_width(xp):
    kps = xp.asarray([[[5.0, 5.0, 2.0]], [[5.0, 5.0, 2.0]]])
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 5.0, 10.0]])  # second: zero width
    rois = xp.concatenate([xp.asarray([[0.0], [1.0]]), boxes], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h4, v4 = keypoints_to_heatmap(kps, boxes, 56)
        h5, v5 = keypoints_to_heatmap(kps, rois, 56)
    np.testing.assert_array_equal(asnumpy(h4), asnumpy(h5))
    np.testing.assert_array_equal(asnumpy(v4), asnumpy(v5))
    # the zero-width RoI: x == x2 gives the last column, y the middle row
    assert asnumpy(h4).tolist() == [[28 * 56 + 28], [28 * 56 + 55]]
    with pytest.raises(ValueError, match="boxes"):
        keypoints_to_heatmap(kps, boxes[:, :3], 56)


def test_heatmap_torchvision_parity():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import keypoints_to_heatmap as tv_k2h

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (40, 2, 2))
    boxes = np.concatenate([xy.min(1), xy.max(1) + 1], axis=1).astype(np.float32)
    kps = _random_keypoints(rng, boxes, 17).astype(np.float32)
    kps[:5, 3, 0] = boxes[:5, 2]  # on the right edge
    kps[5:10, 4, 1] = boxes[5:10, 3]  # on the bottom edge
    kps[10:12, 5, :2] = boxes[10:12, 2:]  # on both
    for dtype in (np.float32, np.float64):
        h, v = keypoints_to_heatmap(kps.astype(dtype), boxes.astype(dtype), 56)
        th, tv = tv_k2h(torch.tensor(kps.astype(dtype)), torch.tensor(boxes.astype(dtype)), 56)
        np.testing.assert_array_equal(h, th.numpy())
        np.testing.assert_array_equal(v.astype(np.int64), tv.numpy())
        print(f"keypoints_to_heatmap {np.dtype(dtype).name}: {int(v.sum())} valid of {v.size}, "
              "all bins equal to torchvision's")
        assert 0.3 < v.mean() < 0.9


# ----------------------------------------------------------------------------- loss
def test_loss_hand_computed(xp):
    # uniform logits: every valid keypoint costs log(m^2); the gradient is (1/m^2 - onehot)/n
    m = 4
    logits = xp.zeros((2, 3, m, m))
    heatmaps = xp.asarray([[5, 0, 15], [7, 2, 9]])
    valid = xp.asarray([[True, False, True], [False, False, True]])
    loss, d = keypoint_heatmap_loss(logits, heatmaps, valid)
    assert float(loss) == pytest.approx(math.log(m * m), rel=1e-12)
    d = asnumpy(d)
    assert np.all(d[0, 1] == 0) and np.all(d[1, :2] == 0)  # invalid keypoints: no gradient
    expected = np.full((m, m), 1 / 16 / 3)
    expected.flat[5] -= 1 / 3
    np.testing.assert_allclose(d[0, 0], expected, rtol=1e-12)
    # a confident correct logit costs almost nothing
    peaked = xp.zeros((1, 1, m, m))
    peaked[0, 0, 1, 2] = 30.0
    loss, _ = keypoint_heatmap_loss(peaked, xp.asarray([[6]]), xp.asarray([[True]]))
    assert 0 <= float(loss) < 1e-10


def test_no_valid_keypoint_gives_zero_loss_not_nan(xp):
    logits = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5, 5)))
    rois = xp.asarray([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 9.0]])
    kps = xp.asarray(np.zeros((1, 3, 3)))
    kps[0, :, :2] = 50.0  # visible but outside every RoI
    kps[0, 0, 2] = 2
    kps[0, 1, :] = xp.asarray([7.0, 7.0, 0])  # inside, but not labelled
    loss, d = keypointrcnn_loss(logits, [rois], [kps], [xp.asarray([0, 0])])
    assert float(loss) == 0.0 and not math.isnan(float(loss))
    assert float(abs(d).max()) == 0.0 and d.shape == logits.shape
    # no positive RoI at all
    empty = xp.zeros((0, 3, 5, 5))
    loss, d = keypointrcnn_loss(empty, [xp.zeros((0, 4))], [kps], [xp.zeros(0, dtype=np.int64)])
    assert float(loss) == 0.0 and d.shape == (0, 3, 5, 5)
    loss, d = keypoint_heatmap_loss(empty, xp.zeros((0, 3), dtype=np.int64),
                                    xp.zeros((0, 3), dtype=bool))
    assert float(loss) == 0.0 and d.shape == (0, 3, 5, 5)


def test_loss_rejects_non_square_maps():
    with pytest.raises(ValueError, match="square"):
        keypointrcnn_loss(np.zeros((1, 2, 4, 5)), [np.zeros((1, 4))], [np.zeros((1, 2, 3))],
                          [np.zeros(1, np.int64)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_gradcheck(xp, seed):
    rng = np.random.default_rng(seed)
    boxes = [np.array([[2.0, 3.0, 30.0, 25.0], [10.0, 10.0, 20.0, 40.0]]),
             np.array([[0.0, 0.0, 16.0, 16.0]])]
    gts = [_random_keypoints(rng, np.array([[0.0, 0.0, 32.0, 32.0]] * 2), 3),
           _random_keypoints(rng, np.array([[0.0, 0.0, 16.0, 16.0]]), 3)]
    midx = [np.array([1, 0]), np.array([0])]
    logits = xp.asarray(rng.standard_normal((3, 3, 4, 4)))
    args = ([xp.asarray(b) for b in boxes], [xp.asarray(g) for g in gts],
            [xp.asarray(m) for m in midx])
    loss, d = keypointrcnn_loss(logits, *args)
    num = numerical_gradient(lambda: float(keypointrcnn_loss(logits, *args)[0]), logits)
    err = rel_error(num, d)
    print(f"keypointrcnn_loss seed {seed}: loss {float(loss):.4f}, grad rel error {err:.2e}")
    assert err < 1e-7


# ------------------------------------------------------------------------- soft targets
def test_positions_floor_to_the_cells_and_soft_targets_centre_on_them(xp):
    rng = np.random.default_rng(3)
    boxes = np.array([[10.0, 20.0, 60.0, 110.0], [0.0, 0.0, 33.0, 17.0]])
    kps = xp.asarray(_random_keypoints(rng, boxes, 6))
    rois = xp.asarray(boxes)
    u, v = keypoint_positions(kps, rois, 56)
    cells, valid = keypoints_to_heatmap(kps, rois, 56)
    ok = asnumpy(valid)
    # the cell of keypoints_to_heatmap is the floor of the exact position
    np.testing.assert_array_equal((np.floor(asnumpy(v)) * 56 + np.floor(asnumpy(u)))[ok],
                                  asnumpy(cells)[ok])
    q = asnumpy(gaussian_heatmap_targets(u, v, 56, 1.5))
    assert q.shape == (2, 6, 56, 56)
    centres = np.arange(56) + 0.5
    for p, k in zip(*np.nonzero(ok)):
        np.testing.assert_allclose(q[p, k].sum(), 1.0, rtol=1e-12)
        # separable: the outer product of its marginals
        np.testing.assert_allclose(q[p, k], np.outer(q[p, k].sum(1), q[p, k].sum(0)),
                                   rtol=1e-10, atol=1e-300)
        # the most probable cell holds the keypoint (or touches it, at a cell border)
        iy, ix = np.unravel_index(q[p, k].argmax(), (56, 56))
        assert abs(centres[ix] - float(u[p, k])) <= 0.5 + 1e-9
        assert abs(centres[iy] - float(v[p, k])) <= 0.5 + 1e-9
        # away from the edges the mean position is the exact position, within the cell
        if 10 < float(u[p, k]) < 46 and 10 < float(v[p, k]) < 46:
            assert (q[p, k].sum(0) * centres).sum() == pytest.approx(float(u[p, k]), abs=1e-6)
            assert (q[p, k].sum(1) * centres).sum() == pytest.approx(float(v[p, k]), abs=1e-6)
    # far outside the grid every weight underflows: zeros, not NaN
    far = asnumpy(gaussian_heatmap_targets(xp.asarray([[1e4]]), xp.asarray([[5.0]]), 56, 1.0))
    assert np.all(far == 0)


def _soft_loss_naive(logits, targets, valid):
    """Loop reference: -sum q log softmax, averaged over the valid keypoints (0 if none)."""
    logits, targets, valid = asnumpy(logits), asnumpy(targets), asnumpy(valid)
    total, count = 0.0, 0
    for p in range(logits.shape[0]):
        for k in range(logits.shape[1]):
            if not valid[p, k]:
                continue
            z = logits[p, k].ravel()
            logp = z - z.max() - math.log(np.exp(z - z.max()).sum())
            total -= float((targets[p, k].ravel() * logp).sum())
            count += 1
    return total / count if count else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_loss_equals_naive_and_gradcheck(xp, seed):
    rng = np.random.default_rng(seed + 10)
    boxes = np.array([[2.0, 3.0, 30.0, 25.0], [10.0, 10.0, 20.0, 40.0], [0.0, 0.0, 9.0, 9.0]])
    kps = xp.asarray(_random_keypoints(rng, boxes, 4))
    u, v = keypoint_positions(kps, xp.asarray(boxes), 6)
    _, valid = keypoints_to_heatmap(kps, xp.asarray(boxes), 6)
    targets = gaussian_heatmap_targets(u, v, 6, 1.0)
    logits = xp.asarray(rng.standard_normal((3, 4, 6, 6)))
    loss, d = keypoint_soft_heatmap_loss(logits, targets, valid)
    assert float(loss) == pytest.approx(_soft_loss_naive(logits, targets, valid), rel=1e-12)
    num = numerical_gradient(
        lambda: float(keypoint_soft_heatmap_loss(logits, targets, valid)[0]), logits)
    err = rel_error(num, d)
    print(f"keypoint_soft_heatmap_loss seed {seed}: loss {float(loss):.4f}, "
          f"grad rel error {err:.2e}")
    assert err < 1e-7
    assert float(abs(d[~valid]).max()) == 0.0  # invalid keypoints: no gradient


def test_soft_loss_with_one_hot_targets_is_the_one_hot_loss(xp):
    rng = np.random.default_rng(4)
    logits = xp.asarray(rng.standard_normal((2, 3, 5, 5)))
    cells = xp.asarray(rng.integers(0, 25, (2, 3)))
    valid = xp.asarray([[True, False, True], [True, True, False]])
    one_hot = xp.zeros((2, 3, 25))
    one_hot[xp.arange(2)[:, None], xp.arange(3)[None, :], cells] = 1.0
    hard, d_hard = keypoint_heatmap_loss(logits, cells, valid)
    # the invalid rows' targets are NaN here: masked out, not multiplied
    one_hot[~valid] = np.nan
    soft, d_soft = keypoint_soft_heatmap_loss(logits, one_hot.reshape(2, 3, 5, 5), valid)
    assert float(soft) == pytest.approx(float(hard), rel=1e-12)
    assert rel_error(d_soft, d_hard) < 1e-12
    # nothing valid: 0, not NaN; no rows at all: 0
    none = xp.zeros((2, 3), dtype=bool)
    loss, d = keypoint_soft_heatmap_loss(logits, one_hot.reshape(2, 3, 5, 5), none)
    assert float(loss) == 0.0 and float(abs(d).max()) == 0.0
    loss, d = keypoint_soft_heatmap_loss(xp.zeros((0, 3, 5, 5)), xp.zeros((0, 3, 5, 5)),
                                         xp.zeros((0, 3), dtype=bool))
    assert float(loss) == 0.0 and d.shape == (0, 3, 5, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_torchvision_parity(dtype):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import keypointrcnn_loss as tv_loss

    rng = np.random.default_rng(3)
    proposals, gts, midx = [], [], []
    for p, g in ((5, 2), (0, 1), (7, 3)):  # an image without positives in the middle
        xy = rng.uniform(0, 300, (p, 2, 2))
        proposals.append(np.concatenate([xy.min(1), xy.max(1) + 2], 1).astype(dtype))
        midx.append(rng.integers(0, g, p))
        gt_boxes = np.array([[0.0, 0.0, 300.0, 300.0]] * g)
        gts.append(_random_keypoints(rng, gt_boxes, 17).astype(dtype))
    logits = rng.standard_normal((12, 17, 56, 56)).astype(dtype)
    loss, d = keypointrcnn_loss(logits, proposals, gts, midx)
    t = torch.tensor(logits, requires_grad=True)
    tl = tv_loss(t, [torch.tensor(p) for p in proposals], [torch.tensor(g) for g in gts],
                 [torch.tensor(m) for m in midx])
    tl.backward()
    lerr = abs(float(loss) - tl.item()) / tl.item()
    derr = rel_error(d, t.grad.numpy())
    print(f"keypointrcnn_loss parity {np.dtype(dtype).name}: loss {float(loss):.6f} vs "
          f"{tl.item():.6f} (rel {lerr:.1e}), dlogits rel error {derr:.1e}")
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert lerr < tol and derr < tol


# ----------------------------------------------------------------------------- modules
def test_names_and_shapes_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    torch.manual_seed(0)
    tv = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    expected = {k: tuple(v.shape) for k, v in tv.roi_heads.state_dict().items()
                if k.startswith(("keypoint_head.", "keypoint_predictor."))}
    rng = Generator(0)
    head = KeypointRCNNHeads(256, rng=rng)  # tv: in_channels 256, eight 512-channel convs
    predictor = KeypointRCNNPredictor(512, 17, rng)
    ours = {f"keypoint_head.{k}": tuple(v.shape) for k, v in head.state_dict().items()}
    ours.update({f"keypoint_predictor.{k}": tuple(v.shape)
                 for k, v in predictor.state_dict().items()})
    assert ours == expected
    assert len(ours) == 18 and "keypoint_head.14.weight" in ours
    # torchvision's init: kaiming_normal(fan_out), zero biases
    w = asnumpy(head.state_dict()["2.weight"])
    assert abs(w.std() / math.sqrt(2 / (512 * 9)) - 1) < 0.01
    assert abs(w.mean()) < 0.01 * w.std()
    deconv = asnumpy(predictor.state_dict()["kps_score_lowres.weight"])
    assert abs(deconv.std() / math.sqrt(2 / (512 * 16)) - 1) < 0.02
    assert not any(asnumpy(v).any() for k, v in head.state_dict().items() if k.endswith("bias"))


def test_forward_shapes_and_one_relu_per_use():
    head, predictor = _small_head(np.float32, layers=(8, 8, 8))
    relus = [m for _, m in head.children() if type(m).__name__ == "ReLU"]
    assert len(relus) == 3 and len({id(m) for m in relus}) == 3
    x = np.random.default_rng(0).standard_normal((4, 3, 14, 14)).astype(np.float32)
    out = predictor(head(x))
    assert out.shape == (4, 2, 56, 56) and out.dtype == np.float32
    dx = head.backward(predictor.backward(np.ones_like(out)))
    assert dx.shape == x.shape
    # no positives
    empty = predictor(head(np.zeros((0, 3, 14, 14), np.float32)))
    assert empty.shape == (0, 2, 56, 56)
    assert head.backward(predictor.backward(empty)).shape == (0, 3, 14, 14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_gradcheck(xp, seed):
    """float64: heads + predictor + keypoint loss, w.r.t. the input and every parameter."""
    head, predictor = _small_head(seed=seed)
    rng = np.random.default_rng(seed + 10)
    x = xp.asarray(rng.standard_normal((2, 3, 4, 4)))  # -> logits (2, 2, 16, 16)
    boxes = xp.asarray([[1.0, 2.0, 17.0, 20.0], [0.0, 0.0, 9.0, 9.0]])
    gt = xp.asarray(_random_keypoints(rng, asnumpy(boxes), 2, p_visible=1.0))
    midx = xp.asarray([0, 1])

    def loss_fn():
        return float(keypointrcnn_loss(predictor(head(x)), [boxes], [gt], [midx])[0])

    head.zero_grad()
    predictor.zero_grad()
    loss, dlogits = keypointrcnn_loss(predictor(head(x)), [boxes], [gt], [midx])
    dx = head.backward(predictor.backward(dlogits))
    err_x = sparse_gradient_check(loss_fn, x, dx, num_checks=20, seed=seed)
    params = list(head.parameters().values()) + list(predictor.parameters().values())
    grads = list(head.gradients().values()) + list(predictor.gradients().values())
    err_dir = directional_check(loss_fn, params, grads, seed=seed)
    w = predictor.kps_score_lowres.params["weight"]
    err_w = sparse_gradient_check(loss_fn, w, predictor.kps_score_lowres.grads["weight"],
                                  num_checks=20, seed=seed)
    print(f"keypoint head seed {seed}: loss {float(loss):.4f}, rel error dx {err_x:.1e}, "
          f"deconv weight {err_w:.1e}, all params (directional) {err_dir:.1e}")
    assert err_x < 1e-6 and err_w < 1e-6 and err_dir < 1e-6


def test_head_torch_parity():
    """Same weights: our forward, input gradient and parameter gradients equal torch's."""
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.keypoint_rcnn import (
        KeypointRCNNHeads as TvHeads,
    )
    from torchvision.models.detection.keypoint_rcnn import (
        KeypointRCNNPredictor as TvPredictor,
    )

    head, predictor = _small_head(layers=(6, 6, 6), in_channels=4, k=3)
    tv_head, tv_pred = TvHeads(4, [6, 6, 6]).double(), TvPredictor(6, 3).double()
    tv_head.load_state_dict({k: torch.tensor(v) for k, v in head.state_dict().items()})
    tv_pred.load_state_dict({k: torch.tensor(v) for k, v in predictor.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 7, 7))
    out = predictor(head(x))
    d = rng.standard_normal(out.shape)
    dx = head.backward(predictor.backward(d))
    tx = torch.tensor(x, requires_grad=True)
    tout = tv_pred(tv_head(tx))
    tout.backward(torch.tensor(d))
    assert rel_error(out, tout.detach().numpy()) < 1e-13
    assert rel_error(dx, tx.grad.numpy()) < 1e-13
    tv_grads = {f"h.{k}": p.grad for k, p in tv_head.named_parameters()}
    tv_grads.update({f"p.{k}": p.grad for k, p in tv_pred.named_parameters()})
    ours = {f"h.{k}": g for k, g in head.gradients().items()}
    ours.update({f"p.{k}": g for k, g in predictor.gradients().items()})
    assert set(ours) == set(tv_grads)
    worst = max(rel_error(ours[k], tv_grads[k].numpy()) for k in ours)
    print(f"keypoint head vs torchvision (float64): worst parameter-gradient rel error {worst:.1e}")
    assert worst < 1e-12
