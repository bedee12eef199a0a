"""The keypoint model (Keypoint R-CNN, paper section 5): the same ``MaskRCNN`` page with the
keypoint branch on — gradient check, losses at initialisation, edge cases, backends, the
mask switch, and parity with torchvision's ``keypointrcnn_resnet50_fpn``."""

import math
from pathlib import Path

import numpy as np
import pytest
from test_mask_rcnn import (  # the scene, the gradient check's step and the backend parity
    as_dtype,
    best_step_error,
    fixed_step,
    make_scene,
    step_on_backends,
)

from npmaskrcnn.boxes.ops import box_iou
from npmaskrcnn.config import KeypointConfig, keypoint_mask_r50_fpn, keypoint_r50_fpn, tiny
from npmaskrcnn.model.keypoint_head import (
    gaussian_heatmap_targets,
    keypoint_heatmap_loss,
    keypoint_positions,
    keypoint_soft_heatmap_loss,
    keypoints_to_heatmap,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN
from npmaskrcnn.model.targets import batch_ground_truth

COCO_MINI = Path(__file__).parents[2] / ".." / "shared" / "data" / "coco_mini"


def tiny_keypoints(masks=True, num_keypoints=5):
    """``tiny()`` with a two-layer keypoint head of 8 channels (and the mask branch)."""
    cfg = tiny()
    cfg.roi_heads.mask_on = masks
    cfg.keypoint = KeypointConfig(on=True, num_keypoints=num_keypoints, layers=(8, 8))
    return cfg


def keypoint_scene(seed, num_keypoints=5, dtype=np.float64):
    """``make_scene`` with keypoints: every object gets ``num_keypoints`` points inside its
    box (off the pixel grid), one of them unlabelled."""
    img, t = as_dtype(*make_scene(seed), dtype)
    rng = np.random.default_rng(seed)
    kps = np.zeros((len(t["boxes"]), num_keypoints, 3), dtype)
    for g, (x1, y1, x2, y2) in enumerate(t["boxes"]):
        kps[g, :, 0] = rng.uniform(x1 + 0.3, x2 - 0.3, num_keypoints)
        kps[g, :, 1] = rng.uniform(y1 + 0.3, y2 - 0.3, num_keypoints)
        kps[g, :, 2] = 2
        kps[g, g % num_keypoints] = 0  # not labelled: x = y = v = 0, as COCO
    return img, {**t, "keypoints": kps}


def test_losses_at_initialisation():
    """The keypoint loss starts near ln(56^2): a softmax over 3136 positions, near uniform."""
    model = MaskRCNN(tiny_keypoints(), dtype=np.float32)
    img, t = keypoint_scene(0, dtype=np.float32)
    losses = model.forward([img], [t])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                           "loss_box_reg", "loss_mask", "loss_keypoint"}
    assert abs(float(losses["loss_keypoint"]) - math.log(56 * 56)) < 0.5
    assert abs(float(losses["loss_mask"]) - math.log(2)) < 0.05


def test_whole_keypoint_model_gradient_check_float64():
    """Directional derivative of the total loss (box, mask and keypoint terms) vs the
    hand-written backward, for the input and every parameter, samples held fixed."""
    model = MaskRCNN(tiny_keypoints(), dtype=np.float64)
    batch, dbatch, grads, total, losses, samples = fixed_step(model, *keypoint_scene(1), 5)
    assert float(losses["loss_keypoint"]) > 0 and samples.roi.keypoint_valid.any()

    def check(arrays, grads_, seed):
        return best_step_error(total, arrays, grads_, seed)

    assert check([batch], [dbatch], 0) < 1e-5
    seen = {"roi_heads.keypoint_head": 0, "roi_heads.keypoint_predictor": 0,
            "roi_heads.mask": 0, "backbone.body": 0}
    for i, (name, p) in enumerate(model.parameters().items()):
        if name == "roi_heads.keypoint_predictor.kps_score_lowres.bias":
            # a constant added to a keypoint's 28x28 logits stays a constant after the
            # bilinear x2 (its weights sum to 1), and a softmax ignores constants: the
            # gradient is exactly 0, which finite differences can only see as noise
            assert np.abs(grads[name]).max() < 1e-12 * np.abs(dbatch).max()
            continue
        err = check([p], [grads[name]], i)
        assert err < 1e-5, f"{name}: rel error {err:.2e}"
        for g in seen:
            seen[g] += name.startswith(g)
    assert all(seen.values()), seen


def test_keypoint_loss_weight_scales_only_its_gradient():
    """dloss["loss_keypoint"] = 0 leaves the keypoint head without gradient and the rest
    as it is; 2 doubles the keypoint head's gradient."""
    model = MaskRCNN(tiny_keypoints(), dtype=np.float64)
    img, t = keypoint_scene(2)
    batch, sizes, targets = model.transform([img], [t])
    gt = batch_ground_truth(targets, batch.dtype)
    _, samples = model.forward_batch(batch, sizes, gt)
    grads = {}
    for w in (0.0, 1.0, 2.0):
        model.zero_grad()
        model.forward_batch(batch, sizes, gt, samples)
        model.backward({**model.cfg.loss_weights, "loss_keypoint": w})
        grads[w] = {k: v.copy() for k, v in model.gradients().items()}
    head = [k for k in grads[1.0] if k.startswith("roi_heads.keypoint")]
    assert all(np.abs(grads[0.0][k]).max() == 0 for k in head)
    for k in head:
        np.testing.assert_allclose(grads[2.0][k], 2 * grads[1.0][k], rtol=1e-12)
    box = "roi_heads.box_predictor.cls_score.weight"
    np.testing.assert_allclose(grads[0.0][box], grads[1.0][box], rtol=1e-12)


def test_no_objects_or_no_labelled_keypoint_gives_zero_keypoint_loss():
    model = MaskRCNN(tiny_keypoints())
    img, t = keypoint_scene(3, dtype=np.float32)
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, 64, 64), np.uint8), "keypoints": np.zeros((0, 5, 3))}
    unlabelled = {**t, "keypoints": np.zeros_like(t["keypoints"])}
    for target in (empty, unlabelled):
        losses = model.forward([img], [target])
        assert float(losses["loss_keypoint"]) == 0.0
        assert all(np.isfinite(float(v)) for v in losses.values())
        model.backward()
        assert all(np.isfinite(g).all() for g in model.gradients().values())


def test_keypoint_only_model_has_no_mask_branch():
    cfg = tiny_keypoints(masks=False)
    model = MaskRCNN(cfg)
    assert not any(k.startswith("roi_heads.mask") for k in model.state_dict())
    img, t = keypoint_scene(4, dtype=np.float32)
    losses = model.forward([img], [{k: v for k, v in t.items() if k != "masks"}])
    assert "loss_mask" not in losses and "loss_keypoint" in losses
    model.backward()
    pred = model.predict([img, img[:, :48]])
    for p, (h, w) in zip(pred, ((64, 64), (48, 64))):
        assert "masks" not in p
        d = len(p["boxes"])
        assert p["keypoints"].shape == (d, 5, 3) and p["keypoints_scores"].shape == (d, 5)
        # keypoints lie in their boxes (the argmax of a map resized to the box)
        x, y = p["keypoints"][..., 0], p["keypoints"][..., 1]
        assert (x >= p["boxes"][:, None, 0] - 1e-4).all() and (x <= p["boxes"][:, None, 2] +
                                                                1e-4).all()
        assert (y >= 0).all() and (y <= h).all() and (x <= w).all()


def test_keypoint_roi_scale_widens_the_keypoint_branchs_boxes():
    """``KeypointConfig.roi_scale``: the keypoint branch pools from, sets its targets on and
    decodes its heatmaps in each box scaled about its centre; 1.0 leaves the boxes alone
    (torchvision). Scaled by 1.5, a keypoint may land outside its detection's box."""
    cfg = tiny_keypoints(masks=False)
    cfg.keypoint.roi_scale = 1.5
    model = MaskRCNN(cfg, dtype=np.float64)
    img, t = keypoint_scene(2)
    batch, sizes, targets = model.transform([img], [t])
    gt = batch_ground_truth(targets, batch.dtype)
    _, samples = model.forward_batch(batch, sizes, gt)
    rois, wide = samples.roi.mask_rois, samples.roi.keypoint_rois
    assert rois.shape[0] > 0
    centre, half = (rois[:, 1:3] + rois[:, 3:5]) / 2, (rois[:, 3:5] - rois[:, 1:3]) / 2
    np.testing.assert_allclose(wide, np.concatenate(
        [rois[:, :1], centre - 1.5 * half, centre + 1.5 * half], axis=1), atol=1e-12)
    # the heatmap targets are the cells of the wide boxes: each positive's matched gt (the
    # gt of highest IoU, the matcher's rule) put through keypoints_to_heatmap on them
    matched = np.argmax(box_iou(rois[:, 1:], gt.boxes[0][gt.valid[0]]), axis=1)
    kps = gt.keypoints[0][gt.valid[0]][matched]
    cells, valid = keypoints_to_heatmap(kps, wide, 56)
    np.testing.assert_array_equal(samples.roi.keypoint_valid, valid)
    np.testing.assert_array_equal(samples.roi.keypoint_heatmaps[valid], cells[valid])
    assert not np.array_equal(keypoints_to_heatmap(kps, rois, 56)[0][valid], cells[valid])
    model.eval()
    pred = model.predict([img])[0]
    x, y = pred["keypoints"][..., 0], pred["keypoints"][..., 1]
    b = pred["boxes"][:, None]
    bc, bh = (b[..., :2] + b[..., 2:]) / 2, (b[..., 2:] - b[..., :2]) / 2
    assert len(b) > 0
    assert (np.abs(x - bc[..., 0]) <= 1.5 * bh[..., 0] + 1e-6).all()
    assert (np.abs(y - bc[..., 1]) <= 1.5 * bh[..., 1] + 1e-6).all()
    outside = (x < b[..., 0]) | (x > b[..., 2]) | (y < b[..., 1]) | (y > b[..., 3])
    assert outside.any()
    model1 = MaskRCNN(tiny_keypoints(masks=False), dtype=np.float64)
    assert model1.roi_heads.keypoint_rois(rois) is rois


def test_keypoint_rois_per_image_trains_on_a_subset_of_the_positives():
    """``KeypointConfig.rois_per_image``: the keypoint branch trains on each image's first
    positives in the sampler's random order, at most that many, with their own targets;
    None: on every positive (torchvision)."""
    img0, t0 = keypoint_scene(3)
    img1, t1 = keypoint_scene(0)
    kept = {}
    for cap in (None, 2):
        cfg = tiny_keypoints(masks=False)
        cfg.keypoint.rois_per_image = cap
        model = MaskRCNN(cfg, dtype=np.float64)
        batch, sizes, targets = model.transform([img0, img1], [t0, t1])
        gt = batch_ground_truth(targets, batch.dtype)
        losses, samples = model.forward_batch(batch, sizes, gt)
        assert np.isfinite(float(losses["loss_keypoint"]))
        kept[cap] = samples.roi
    every, some = kept[None], kept[2]
    assert every.keypoint_rois is every.mask_rois
    np.testing.assert_array_equal(some.mask_rois, every.mask_rois)  # same sampler draws
    image = every.mask_rois[:, 0]
    counts = [int((image == i).sum()) for i in (0, 1)]
    assert counts[0] > 2 and counts[1] > 2
    rows = np.concatenate([np.flatnonzero(image == i)[:2] for i in (0, 1)])
    np.testing.assert_array_equal(some.keypoint_rois, every.mask_rois[rows])
    np.testing.assert_array_equal(some.keypoint_valid, every.keypoint_valid[rows])
    np.testing.assert_array_equal(some.keypoint_heatmaps, every.keypoint_heatmaps[rows])


def test_target_sigma_trains_on_gaussian_targets_at_the_exact_positions():
    """``KeypointConfig.target_sigma`` > 0: the same samples as with one-hot targets, plus
    each keypoint's exact position, and the loss is the soft cross-entropy against Gaussians
    centred there; 0 (torchvision) keeps the one-hot loss. A negative sigma is refused."""
    img, t = keypoint_scene(2)
    out = {}
    for sigma in (0.0, 1.5):
        cfg = tiny_keypoints(masks=False)
        cfg.keypoint.target_sigma = sigma
        model = MaskRCNN(cfg, dtype=np.float64)
        batch, sizes, targets = model.transform([img], [t])
        gt = batch_ground_truth(targets, batch.dtype)
        losses, samples = model.forward_batch(batch, sizes, gt)
        out[sigma] = (model, float(losses["loss_keypoint"]), samples.roi)
    (_, hard, s0), (model, soft, s1) = out[0.0], out[1.5]
    assert s0.keypoint_positions is None
    np.testing.assert_array_equal(s1.keypoint_heatmaps, s0.keypoint_heatmaps)  # same draws
    rois, pos, valid = s1.keypoint_rois, s1.keypoint_positions, s1.keypoint_valid
    matched = np.argmax(box_iou(rois[:, 1:], gt.boxes[0][gt.valid[0]]), axis=1)
    u, v = keypoint_positions(gt.keypoints[0][gt.valid[0]][matched], rois, 56)
    np.testing.assert_allclose(pos, np.stack([u, v], axis=-1), rtol=1e-12)
    assert valid.any()
    # the loss of the branch's logits on those targets
    features = model.backbone(batch)[: model.num_pooled_levels]
    logits = model.roi_heads.keypoint_branch(features, rois)
    want, _ = keypoint_soft_heatmap_loss(logits, gaussian_heatmap_targets(u, v, 56, 1.5), valid)
    assert soft == pytest.approx(float(want), rel=1e-10)
    # and the one-hot model (same seed, so the same weights and logits) the one-hot loss
    one_hot, _ = keypoint_heatmap_loss(logits, s0.keypoint_heatmaps, s0.keypoint_valid)
    assert hard == pytest.approx(float(one_hot), rel=1e-10)
    cfg = tiny_keypoints(masks=False)
    cfg.keypoint.target_sigma = -1.0
    with pytest.raises(ValueError, match="target_sigma"):
        MaskRCNN(cfg)


def test_keypoints_are_rescaled_to_the_original_image():
    """The same image at twice its size gives keypoints at twice the coordinates (the
    model resizes both to 64 px; postprocess scales back)."""
    model = MaskRCNN(tiny_keypoints(masks=False)).eval()
    img, _ = keypoint_scene(5, dtype=np.float32)
    big = img.repeat(2, axis=1).repeat(2, axis=2)
    small, large = model.predict([img])[0], model.predict([big])[0]
    assert len(small["boxes"]) > 0
    np.testing.assert_allclose(large["boxes"], 2 * small["boxes"], rtol=1e-3, atol=0.2)
    np.testing.assert_allclose(large["keypoints"][..., :2], 2 * small["keypoints"][..., :2],
                               rtol=1e-3, atol=0.5)


def test_keypoint_model_same_numbers_on_every_backend(xp):
    """Losses, every gradient and the predicted keypoints of one float64 step of the tiny
    keypoint model equal NumPy's (on CuPy: GPU vs CPU parity)."""
    img, t = keypoint_scene(6)
    p0, p1, _ = step_on_backends(tiny_keypoints(), img, t, xp)
    assert p0["keypoints"].shape == p1["keypoints"].shape and p0["keypoints"].shape[0] > 0
    np.testing.assert_allclose(p0["keypoints"], p1["keypoints"], atol=1e-6)
    np.testing.assert_allclose(p0["keypoints_scores"], p1["keypoints_scores"], atol=1e-6)


def test_keypoint_subset_and_wide_rois_same_numbers_on_every_backend(xp):
    """``rois_per_image``, ``roi_scale`` (host index, box scaling), the ``box_x_keypoints``
    score and the flip test on every backend: the step's losses, gradients, keypoints and
    scores equal NumPy's."""
    cfg = tiny_keypoints(num_keypoints=17)
    cfg.keypoint.rois_per_image, cfg.keypoint.roi_scale = 2, 1.25
    cfg.keypoint.score, cfg.keypoint.flip_test = "box_x_keypoints", True
    img, t = keypoint_scene(6, num_keypoints=17)
    p0, p1, _ = step_on_backends(cfg, img, t, xp)
    assert p0["keypoints"].shape == p1["keypoints"].shape and p0["keypoints"].shape[0] > 0
    np.testing.assert_allclose(p0["keypoints"], p1["keypoints"], atol=1e-6)
    np.testing.assert_allclose(p0["scores"], p1["scores"], rtol=1e-9)


def test_box_x_keypoints_score_is_box_score_times_keypoint_confidence(monkeypatch):
    """With ``KeypointConfig.score = "box_x_keypoints"`` the same weights give the same
    detections, each scored by its box score times the mean over its keypoints of
    ``keypoint_confidence_naive`` of its heatmaps, sorted by that score; "box" keeps the box
    classifier's scores (torchvision); anything else is refused by name."""
    from npmaskrcnn.model import keypoint_inference, roi_heads

    maps = []  # the heatmaps each prediction decoded
    decode = roi_heads.heatmaps_to_keypoints

    def keep_maps(logits, rois):
        maps.append(np.array(logits))
        return decode(logits, rois)

    monkeypatch.setattr(roi_heads, "heatmaps_to_keypoints", keep_maps)
    cfg = tiny_keypoints(masks=False)
    img, t = keypoint_scene(7, dtype=np.float64)
    box_model = MaskRCNN(cfg, dtype=np.float64)
    cfg.keypoint.score = "box_x_keypoints"
    rescored_model = MaskRCNN(cfg, dtype=np.float64)
    rescored_model.load_state_dict(box_model.state_dict())
    box, rescored = box_model.predict([img])[0], rescored_model.predict([img])[0]
    assert len(box["scores"]) >= 3 and len(maps) == 2
    confidence = keypoint_inference.keypoint_confidence_naive(maps[0]).mean(axis=1)  # (D,)
    expected = box["scores"] * confidence
    order = np.argsort(-expected, kind="stable")
    assert not np.array_equal(order, np.arange(len(order)))  # the ranking changed
    np.testing.assert_allclose(rescored["scores"], expected[order], rtol=1e-12)
    for key in ("boxes", "labels", "keypoints", "keypoints_scores"):
        np.testing.assert_array_equal(rescored[key], box[key][order])
    assert (np.diff(rescored["scores"]) <= 0).all() and (np.diff(box["scores"]) <= 0).all()
    cfg.keypoint.score = "keypoints"
    with pytest.raises(ValueError, match="KeypointConfig.score.*'keypoints'"):
        MaskRCNN(cfg)


def test_presets_have_torchvisions_architecture():
    """keypoint_r50_fpn: 2 classes, 17 keypoints, 8 x conv 512, no mask branch, the training
    scales of the paper; keypoint_mask_r50_fpn adds the mask branch."""
    sd = MaskRCNN(keypoint_r50_fpn()).state_dict()
    assert len(sd) == 313 and not any(k.startswith("roi_heads.mask") for k in sd)
    assert sd["roi_heads.keypoint_head.14.weight"].shape == (512, 512, 3, 3)
    assert sd["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape == (512, 17, 4, 4)
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape == (2, 1024)
    assert keypoint_r50_fpn().transform.min_size == (640, 672, 704, 736, 768, 800)
    both = MaskRCNN(keypoint_mask_r50_fpn()).state_dict()
    assert set(both) - set(sd) == {k for k in both if k.startswith("roi_heads.mask")}
    assert both["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape == (2, 256, 1, 1)


def test_state_dict_equals_torchvisions_keys_and_shapes():
    detection = pytest.importorskip("torchvision.models.detection")
    tv = detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    theirs = [(k, tuple(v.shape)) for k, v in tv.state_dict().items()
              if not k.endswith("num_batches_tracked")]
    ours = [(k, tuple(v.shape)) for k, v in MaskRCNN(keypoint_r50_fpn()).state_dict().items()]
    assert ours == theirs


def _coco_image(name):
    from PIL import Image

    if not COCO_MINI.is_dir():
        pytest.skip("shared coco_mini data not present")
    with Image.open(COCO_MINI / "images" / name) as im:
        return np.asarray(im.convert("RGB"), np.float64).transpose(2, 0, 1) / 255


def test_torchvision_keypointrcnn_weights_give_torchvisions_keypoints(tmp_path):
    """With the same (random) weights, loaded through the layout table, our keypoint model
    detects what torchvision's ``keypointrcnn_resnet50_fpn`` detects on real images, in
    float64: labels equal, boxes, scores, keypoints and keypoint scores to 1e-6."""
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    from npmaskrcnn.engine.weights import load_pretrained

    images = [_coco_image(n) for n in ("000000005802.jpg", "000000193271.jpg")]
    torch.manual_seed(0)
    size = 224  # smaller than 800 and fewer proposals: fast; the same settings on both sides
    tv = detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=size,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, box_score_thresh=0.0,
        box_detections_per_img=12)
    # BatchNorm off the identity (a swapped mean/var would show), and shrinking a little
    # (weight <= 1 <= var), so that 50 layers of it keep the activations in range
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for name, low, high in (("weight", 0.5, 1.0), ("bias", -0.2, 0.2),
                                        ("running_mean", -0.2, 0.2), ("running_var", 1.0, 2.0)):
                    r = torch.rand(getattr(m, name).shape, generator=g)
                    getattr(m, name).copy_(low + (high - low) * r)
    torch.save(tv.state_dict(), tmp_path / "keypointrcnn.pth")
    cfg = keypoint_r50_fpn()
    cfg.transform.min_size = cfg.transform.max_size = size
    cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test = 300, 100
    cfg.roi_heads.score_thresh, cfg.roi_heads.detections_per_img = 0.0, 12
    ours = MaskRCNN(cfg, dtype=np.float64)
    report = load_pretrained(ours, tmp_path / "keypointrcnn.pth")
    assert "Keypoint R-CNN" in report.kind and not report.fresh

    with torch.no_grad():
        want = tv.double().eval()([torch.from_numpy(im) for im in images])
    got = ours.predict(images)
    for g, w in zip(got, want):
        w = {k: v.numpy() for k, v in w.items()}
        assert len(w["labels"]) == 12
        np.testing.assert_array_equal(g["labels"], w["labels"])
        np.testing.assert_allclose(g["scores"], w["scores"], rtol=1e-6)
        np.testing.assert_allclose(g["boxes"], w["boxes"], rtol=1e-6)
        np.testing.assert_allclose(g["keypoints"], w["keypoints"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g["keypoints_scores"], w["keypoints_scores"], rtol=1e-6,
                                   atol=1e-6)


def test_flip_test_averages_the_heatmaps_of_the_image_and_its_mirror(monkeypatch):
    """``KeypointConfig.flip_test``: each detection's heatmap logits are the mean of the
    branch's logits for its box in the image and, recomputed here from the image mirrored
    by the data pipeline's ``hflip``, for the mirrored box in the mirrored image, mirrored
    back with left and right swapped. A model of 5 keypoints cannot have it (no swap)."""
    from npmaskrcnn.data.transforms import COCO_KEYPOINT_FLIP, hflip
    from npmaskrcnn.model import roi_heads

    seen = []  # (logits, rois) that each prediction decoded
    decode = roi_heads.heatmaps_to_keypoints

    def keep(logits, rois):
        seen.append((np.array(logits), np.array(rois)))
        return decode(logits, rois)

    monkeypatch.setattr(roi_heads, "heatmaps_to_keypoints", keep)
    cfg = tiny_keypoints(masks=False, num_keypoints=17)
    cfg.keypoint.flip_test = True
    model = MaskRCNN(cfg, dtype=np.float64).eval()
    img, _ = keypoint_scene(8, num_keypoints=17, dtype=np.float64)
    img = img[:, :, 5:]  # not square, so the resized width is not the padded width
    pred = model.predict([img])[0]
    (averaged, rois), = seen
    assert len(pred["boxes"]) >= 2 and rois.shape[1] == 5

    def branch(image, boxes):
        batch, sizes, _ = model.transform([image], None)
        features = model.backbone(batch)[: model.num_pooled_levels]
        return model.roi_heads.keypoint_branch(features, boxes), sizes[0]

    direct, (_, w) = branch(img, rois)
    assert w < model.transform([img], None)[0].shape[-1]  # padding at the right
    mirror_rois = rois.copy()
    mirror_rois[:, 1], mirror_rois[:, 3] = w - rois[:, 3], w - rois[:, 1]
    mirrored, _ = branch(hflip(img, {})[0], mirror_rois)
    mirrored = mirrored[:, list(COCO_KEYPOINT_FLIP), :, ::-1]
    assert np.abs(mirrored - direct).max() > 1e-3  # two different estimates
    np.testing.assert_allclose(averaged, (direct + mirrored) / 2, rtol=1e-7, atol=1e-9)
    cfg = tiny_keypoints(masks=False)
    cfg.keypoint.flip_test = True
    with pytest.raises(ValueError, match="flip_test.*num_keypoints is 5"):
        MaskRCNN(cfg)
