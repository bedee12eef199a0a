"""The whole model: gradient check, losses at initialisation, edge cases, learning."""

import math
import time
import warnings

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy, backend_name, get_xp, set_backend, to_backend
from npmaskrcnn.config import r50_fpn, shapes, tiny
from npmaskrcnn.gradcheck import directional_check
from npmaskrcnn.model.mask_rcnn import MaskRCNN
from npmaskrcnn.model.targets import batch_ground_truth


def make_scene(seed, size=64):
    """One image with a bright square and a disc (labels 1 and 2) on a dark background."""
    rng = np.random.default_rng(seed)
    img = 0.1 + 0.05 * rng.random((3, size, size))
    yy, xx = np.mgrid[:size, :size]
    s = int(rng.integers(14, 22))
    x0, y0 = int(rng.integers(2, 12)), int(rng.integers(2, size - s - 2))
    square = (xx >= x0) & (xx < x0 + s) & (yy >= y0) & (yy < y0 + s)
    r = int(rng.integers(7, 11))
    cx, cy = int(rng.integers(36 + r // 2, size - r - 1)), int(rng.integers(r + 1, size - r - 1))
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    disc &= ~square
    img[:, square] = np.array([0.9, 0.2, 0.2])[:, None]
    img[:, disc] = np.array([0.2, 0.9, 0.3])[:, None]
    masks = np.stack([square, disc]).astype(np.uint8)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {"boxes": np.array(boxes, np.float64), "labels": np.array([1, 2]), "masks": masks}
    return img, target


def as_dtype(img, target, dtype):
    return img.astype(dtype), {**target, "boxes": target["boxes"].astype(dtype)}


def test_losses_at_initialisation_are_ln2_and_lnK():
    cfg = tiny()
    model = MaskRCNN(cfg)
    img, t = as_dtype(*make_scene(0), np.float32)
    losses = model.forward([img], [t])
    print({k: float(v) for k, v in losses.items()})
    assert abs(float(losses["loss_objectness"]) - math.log(2)) < 0.05
    assert abs(float(losses["loss_classifier"]) - math.log(cfg.num_classes)) < 0.1
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert abs(float(losses["loss_mask"]) - math.log(2)) < 0.05  # logits near 0


def fixed_step(model, img, target, seed):
    """One training step of ``model`` on (img, target), for a gradient check.

    Returns (batch, dbatch, grads, total, losses, samples): the normalised input batch, its
    gradient, every parameter's gradient, and ``total()``, the same step's loss with its
    proposals and samples held fixed (a smooth function of the inputs). Noise moves the
    check away from kinks on purpose: flat colour regions give exact ties in the stem's max
    pool, and zero biases put ReLU inputs exactly at 0 where all their inputs are 0.
    """
    noise = np.random.default_rng(seed)
    img = img + 0.02 * noise.standard_normal(img.shape)
    for p in model.parameters().values():
        if p.ndim == 1:
            p += 0.05 * noise.standard_normal(p.shape)
    batch, sizes, targets = model.transform([img], [target])
    gt = batch_ground_truth(targets, batch.dtype)
    model.zero_grad()
    losses, samples = model.forward_batch(batch, sizes, gt)  # the step's proposals, samples
    dbatch = model.backward(input_grad=True)
    grads = {k: v.copy() for k, v in model.gradients().items()}

    def total():  # the same step, with the same samples
        model.zero_grad()
        return model.total_loss(model.forward_batch(batch, sizes, gt, samples)[0])

    return batch, dbatch, grads, total, losses, samples


def best_step_error(total, arrays, grads, seed):
    """The directional check's relative error at the best of three steps h.

    Two failure modes of finite differences pull h in opposite directions: a ReLU input or
    a max-pool tie within h of its kink spoils large steps, and float64 roundoff spoils
    small steps for tensors whose gradient is tiny (~1e-6). A wrong backward disagrees at
    every step, so the best of three is reported.
    """
    return min(directional_check(total, arrays, grads, h=h, seed=seed)
               for h in (1e-4, 1e-5, 1e-6))


def test_whole_model_gradient_check_float64():
    """Directional derivative of the total loss vs the hand-written backward, for the
    input batch and every parameter tensor, with proposals and sampling held fixed."""
    model = MaskRCNN(tiny(), dtype=np.float64)
    batch, dbatch, grads, total, _, _ = fixed_step(model, *as_dtype(*make_scene(1), np.float64),
                                                   5)
    worst = []
    err = best_step_error(total, [batch], [dbatch], 0)
    print(f"input batch: rel error {err:.2e}")
    assert err < 1e-5
    groups = ["backbone.body", "backbone.fpn", "rpn", "roi_heads.box", "roi_heads.mask"]
    seen = {g: 0 for g in groups}
    for i, (name, p) in enumerate(model.parameters().items()):
        err = best_step_error(total, [p], [grads[name]], i)
        worst.append((err, name))
        for g in groups:
            seen[g] += name.startswith(g)
        assert err < 1e-5, f"{name}: rel error {err:.2e}"
    worst.sort(reverse=True)
    print("worst relative errors:", [(f"{e:.1e}", n) for e, n in worst[:5]])
    assert all(seen.values()), seen


def test_image_without_objects_has_finite_losses_and_grads():
    model = MaskRCNN(tiny())
    img, _ = make_scene(2)
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64),
             "masks": np.zeros((0, 64, 64), np.uint8)}
    losses = model.forward([img.astype(np.float32)], [empty])
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_box_reg"]) == 0.0
    assert all(np.isfinite(float(v)) for v in losses.values())
    model.backward()
    assert all(np.isfinite(g).all() for g in model.gradients().values())


def test_zero_width_box_is_dropped_with_a_warning():
    model = MaskRCNN(tiny())
    img, t = as_dtype(*make_scene(3), np.float32)
    t["boxes"] = np.concatenate([t["boxes"], [[10, 10, 10, 30]]]).astype(np.float32)
    t["labels"] = np.array([1, 2, 1])
    t["masks"] = np.concatenate([t["masks"], np.zeros((1, 64, 64), np.uint8)])
    with pytest.warns(UserWarning, match="zero width"):
        losses = model.forward([img], [t])
    assert all(np.isfinite(float(v)) for v in losses.values())
    model.backward()
    assert all(np.isfinite(g).all() for g in model.gradients().values())


def test_batch_of_different_sizes_and_predict_shapes():
    model = MaskRCNN(tiny())
    a, ta = as_dtype(*make_scene(4), np.float32)
    b = a[:, :48, :]  # a 48x64 image, resized to short side 64 and padded
    tb = {"boxes": np.array([[5.0, 5.0, 20.0, 20.0]], np.float32), "labels": np.array([1]),
          "masks": np.zeros((1, 48, 64), np.uint8)}
    tb["masks"][0, 5:20, 5:20] = 1
    losses = model.forward([a, b], [ta, tb])
    assert all(np.isfinite(float(v)) for v in losses.values())
    model.backward()
    out = model.predict([a, b])
    assert out[0]["masks"].shape[1:] == (64, 64)
    assert out[1]["masks"].shape[1:] == (48, 64)
    for o in out:
        d = len(o["boxes"])
        assert o["scores"].shape == (d,) and o["labels"].shape == (d,)


def test_all_proposals_suppressed_still_trains():
    """An RPN NMS threshold of 0 keeps one proposal per level: the RoI heads then
    train on the GT boxes appended to the proposals."""
    cfg = tiny()
    cfg.rpn.nms_thresh = 0.0
    cfg.rpn.post_nms_top_n_train = 1
    model = MaskRCNN(cfg)
    img, t = as_dtype(*make_scene(5), np.float32)
    losses = model.forward([img], [t])
    assert all(np.isfinite(float(v)) for v in losses.values())
    model.backward()
    model.eval()
    assert isinstance(model.predict([img]), list)


def _box_iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tiny_model_overfits_two_images():
    """Losses fall by 10x and every object is found (box and mask IoU > 0.7)."""
    from npmaskrcnn.engine.optim import SGD

    cfg = tiny()
    cfg.backbone.width = 8
    cfg.fpn.out_channels = 16
    cfg.roi_heads.mask_layers = (16, 16)
    cfg.roi_heads.representation_size = 64
    model = MaskRCNN(cfg)
    scenes = [as_dtype(*make_scene(s), np.float32) for s in (10, 11)]
    images, targets = [s[0] for s in scenes], [s[1] for s in scenes]
    opt = SGD(model, lr=0.02, momentum=0.9, weight_decay=1e-4)
    start = time.perf_counter()
    first = None
    for it in range(300):
        model.zero_grad()
        losses = model.forward(images, targets)
        total = model.total_loss(losses)
        first = first or total
        model.backward()
        opt.clip_grad_norm(5.0)  # from scratch, batch of 2
        opt.set_lr(0.02 * min(1.0, (it + 1) / 20) * (0.1 if it >= 220 else 1.0))
        opt.step()
    elapsed = time.perf_counter() - start
    print(f"loss {first:.3f} -> {total:.3f} in {elapsed:.1f} s")
    assert total < first / 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = model.predict(images)
    for pred, t in zip(preds, targets):
        for gt_box, gt_label, gt_mask in zip(t["boxes"], t["labels"], t["masks"]):
            cands = [i for i in range(len(pred["boxes"])) if pred["labels"][i] == gt_label]
            assert cands, f"class {gt_label} not detected"
            best = max(cands, key=lambda i: _box_iou(pred["boxes"][i], gt_box))
            assert _box_iou(pred["boxes"][best], gt_box) > 0.7
            m = pred["masks"][best] >= 0.5
            miou = (m & (gt_mask > 0)).sum() / max((m | (gt_mask > 0)).sum(), 1)
            assert miou > 0.7, f"mask IoU {miou:.2f}"


@pytest.mark.parametrize("features", ["c4", "c5"])
def test_single_level_models_train_and_predict(features):
    """The ablation's C4 / C5 settings: one feature map, all 15 anchors on it."""
    cfg = tiny()
    cfg.backbone.features = features
    model = MaskRCNN(cfg)
    assert model.rpn.head.cls_logits.params["weight"].shape[0] == 15
    img, t = as_dtype(*make_scene(6), np.float32)
    losses = model.forward([img], [t])
    assert all(np.isfinite(float(v)) for v in losses.values())
    model.backward()
    assert len(model.predict([img])) == 1


@pytest.mark.parametrize("preset", [tiny, shapes, r50_fpn])
@pytest.mark.parametrize("default, wanted", [("numpy", "cpupy"), ("cpupy", "numpy")])
def test_model_arrays_live_on_its_backend_whatever_the_default(preset, default, wanted):
    """Every parameter, gradient and buffer of ``MaskRCNN(cfg, backend=X)`` is an X array,
    also when the default backend is another one (GroupNorm once used the default)."""
    set_backend(default)
    model = MaskRCNN(preset(), backend=wanted)
    arrays = {f"{prefix}.{kind}.{k}": v for prefix, m in model.modules()
              for kind in ("params", "grads", "buffers") for k, v in getattr(m, kind).items()}
    assert arrays
    wrong = sorted(k for k, v in arrays.items() if backend_name(get_xp(v)) != wanted)
    assert not wrong, f"{len(wrong)} arrays not on {wanted}: {wrong[:5]}"


def step_on_backends(cfg, img, t, xp):
    """One float64 training step and one inference of ``MaskRCNN(cfg)`` on NumPy and on
    ``xp``'s backend, with their losses and gradients asserted equal. Returns the NumPy
    and the other backend's predictions (host arrays), and the two models."""
    results, models = {}, []
    for name in ("numpy", backend_name(xp)):
        model = MaskRCNN(cfg, dtype=np.float64, backend=name)
        models.append(model)
        on = {k: to_backend(v, name) for k, v in t.items()}
        losses = model.forward([to_backend(img, name)], [on])
        model.backward()
        grads = {k: asnumpy(g) for k, g in model.gradients().items()}
        pred = model.eval().predict([to_backend(img, name)])[0]
        results[name] = ({k: float(v) for k, v in losses.items()}, grads,
                         {k: asnumpy(v) for k, v in pred.items()})
    (l0, g0, p0), (l1, g1, p1) = results["numpy"], results[backend_name(xp)]
    assert l0.keys() == l1.keys() and all(abs(l0[k] - l1[k]) < 1e-9 for k in l0)
    assert all(np.allclose(g0[k], g1[k], rtol=1e-7, atol=1e-10) for k in g0)
    return p0, p1, models


def test_whole_model_same_numbers_on_every_backend(xp):
    """Losses, every gradient and the predictions of one float64 training step and one
    inference equal NumPy's (on CuPy: GPU vs CPU parity of the whole model)."""
    img, t = as_dtype(*make_scene(4), np.float64)
    p0, p1, models = step_on_backends(tiny(), img, t, xp)
    assert all(type(g) is type(p) for model in models for g, p in
               zip(model.gradients().values(), model.parameters().values()))
    assert p0["boxes"].shape == p1["boxes"].shape and p0["boxes"].shape[0] > 0
    np.testing.assert_allclose(p0["boxes"], p1["boxes"], atol=1e-6)
    np.testing.assert_allclose(p0["masks"], p1["masks"], atol=1e-6)


def test_gradients_with_a_pyramid_level_the_rpn_does_not_look_at():
    """P2 without anchors (``anchor_sizes`` ``()`` there): its gradient comes from the RoI
    heads alone (the RPN gives None). Directional check, float64, of the input batch, the
    FPN's P2 output conv and the RPN head's conv."""
    cfg = tiny()
    cfg.rpn.anchor_sizes = ((),) + tuple(cfg.rpn.anchor_sizes[1:])
    model = MaskRCNN(cfg, dtype=np.float64)
    assert model.rpn.levels == (1, 2, 3, 4)
    batch, dbatch, grads, total, _, _ = fixed_step(model, *as_dtype(*make_scene(2), np.float64),
                                                   6)
    params = model.parameters()
    names = ["backbone.fpn.layer_blocks.0.0.weight", "rpn.head.conv.0.0.weight"]
    for i, (arrays, g, what) in enumerate([([batch], [dbatch], "input batch")] + [
            ([params[n]], [grads[n]], n) for n in names]):
        err = best_step_error(total, arrays, g, i)
        print(f"{what}: rel error {err:.2e}")
        assert err < 1e-5, what
    assert np.abs(grads[names[0]]).max() > 0
