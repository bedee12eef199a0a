"""The multi-level pooler: level mapping, routing of RoIs and gradients, torchvision parity."""

import numpy as np
import pytest

from npmaskrcnn.backend import Generator, asnumpy
from npmaskrcnn.config import r50_fpn, shapes
from npmaskrcnn.data.shapes import alignment_settings, generate_shapes_image
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.layers.roi_align import roi_align_backward, roi_align_forward
from npmaskrcnn.layers.roi_pool import roi_pool_forward
from npmaskrcnn.layers.roi_warp import roi_warp_forward
from npmaskrcnn.model.poolers import MultiScaleRoIPooler, level_mapper
from npmaskrcnn.model.roi_heads import RoIHeads

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def square(side, x0=0.0):
    return [x0, x0, x0 + side, x0 + side]


def pyramid(rng, image, channels=2, n_images=2):
    return [rng.standard_normal((n_images, channels, image // s, image // s)) for s in
            (4, 8, 16, 32)]


def random_rois(rng, R, image, n_images=2):
    """RoIs of every size from 8 to 800 pixels (log-uniform), so all levels are used."""
    wh = np.exp(rng.uniform(np.log(8), np.log(image), (R, 2)))
    xy = rng.uniform(0, image - wh)
    return np.concatenate([rng.integers(0, n_images, (R, 1)), xy, xy + wh], axis=1)


def test_level_mapper_hand_computed(xp):
    boxes = xp.asarray([square(224), square(112), square(111.9), square(448), square(447.9),
                        square(1000), square(10), [0, 0, 448, 112], [5, 5, 5, 300]])
    # 224 -> 4, 112 -> 3 (exactly: +eps), just below -> 2, 448 -> 5, huge -> 5 (clamped),
    # tiny -> 2 (clamped), 448 x 112 = 224^2 -> 4, zero area -> 2
    assert asnumpy(level_mapper(boxes, 2, 5)).tolist() == [4, 3, 2, 5, 4, 5, 2, 4, 2]


def test_level_mapper_float32_and_canonical(xp):
    boxes = xp.asarray([square(224), square(112)], dtype=np.float32)
    assert asnumpy(level_mapper(boxes, 2, 5)).tolist() == [4, 3]
    # another canonical choice: 112 px at level 4
    assert asnumpy(level_mapper(boxes, 2, 5, canonical_scale=112)).tolist() == [5, 4]


def shapes_gt_boxes(n_images=40, **settings):
    """The ground-truth boxes (x1, y1, x2, y2) of ``n_images`` generated 128-px shapes images."""
    boxes = []
    for i in range(n_images):
        _, masks, _ = generate_shapes_image(np.random.default_rng([7, i]), 128, 4, **settings)
        for m in masks:  # each mask's pixel extent
            cols, rows = np.nonzero(m.any(0))[0], np.nonzero(m.any(1))[0]
            boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return np.array(boxes, np.float64)


@pytest.mark.parametrize("settings", [{}, alignment_settings(16)], ids=["default", "align16"])
def test_shapes_preset_spreads_shapes_rois_over_the_levels(settings):
    """With its canonical size scaled with its anchors (56 px), the shapes preset pools the
    ground-truth RoIs of generated shapes data from several FPN levels; torchvision's 224
    would send every one of them to P2 (the confound of issue 16)."""
    boxes = shapes_gt_boxes(**settings)
    scale = shapes().roi_heads.canonical_scale
    counts = np.bincount(level_mapper(boxes, 2, 5, canonical_scale=scale), minlength=6)[2:]
    print(f"RoIs on P2..P5 with canonical {scale}: {counts.tolist()}")
    assert scale == 56 and (counts > 0).sum() >= 3
    assert counts[0] < 0.85 * len(boxes)
    tv = np.bincount(level_mapper(boxes, 2, 5, canonical_scale=224), minlength=6)[2:]
    assert tv.tolist() == [len(boxes), 0, 0, 0]


@pytest.mark.parametrize("preset, scale", [(shapes, 56), (r50_fpn, 224)])
def test_roi_heads_pass_the_canonical_scale_to_both_poolers(preset, scale):
    cfg = preset()
    heads = RoIHeads(cfg.roi_heads, 8, 3, SCALES, Generator(0, backend="numpy"), np.float32)
    assert heads.box_roi_pool.canonical_scale == heads.mask_roi_pool.canonical_scale == scale
    rois = np.array([[0, *square(40)], [0, *square(60)]], np.float32)
    expected = level_mapper(rois[:, 1:], 2, 5, canonical_scale=scale) - 2
    np.testing.assert_array_equal(heads.mask_roi_pool.levels(rois), expected)


def test_single_level_is_the_op_itself(xp):
    rng = np.random.default_rng(0)
    feature = xp.asarray(rng.standard_normal((2, 3, 12, 12)))
    rois = xp.asarray(random_rois(rng, 6, 192))
    for op, fn, kwargs in [("align", roi_align_forward, dict(sampling_ratio=2)),
                           ("pool", roi_pool_forward, {}),
                           ("warp", roi_warp_forward, dict(sampling_ratio=2))]:
        pooler = MultiScaleRoIPooler(7, [1 / 16], op=op, aggregation="max")
        if op != "pool":
            kwargs["aggregation"] = "max"
        expected, _ = fn(feature, rois, 7, 1 / 16, **kwargs)
        assert rel_error(pooler([feature], rois), expected) == 0.0
        assert asnumpy(pooler.levels(rois)).tolist() == [0] * 6


def test_each_roi_is_pooled_from_its_level_and_gradients_go_back_there(xp):
    rng = np.random.default_rng(1)
    features = [xp.asarray(f) for f in pyramid(rng, 512)]
    rois = xp.asarray(random_rois(rng, 24, 512))
    pooler = MultiScaleRoIPooler((7, 5), SCALES)
    out = pooler(features, rois)
    levels = asnumpy(pooler.levels(rois))
    assert out.shape == (24, 2, 7, 5) and len(set(levels.tolist())) >= 3
    dout = xp.asarray(rng.standard_normal(out.shape))
    dfeatures = pooler.backward(dout)
    for level, (feature, scale) in enumerate(zip(features, SCALES)):
        idx = xp.asarray(np.flatnonzero(levels == level))
        if idx.shape[0] == 0:
            assert float(abs(dfeatures[level]).sum()) == 0.0
            continue
        expected, cache = roi_align_forward(feature, rois[idx], (7, 5), scale, 2)
        assert rel_error(out[idx], expected) < 1e-12
        assert rel_error(dfeatures[level], roi_align_backward(dout[idx], cache)) < 1e-12


def test_unused_levels_get_zeros(xp):
    rng = np.random.default_rng(2)
    features = [xp.asarray(f) for f in pyramid(rng, 256)]
    rois = xp.asarray([[0, 10.0, 10.0, 40.0, 40.0], [1, 5.0, 5.0, 50.0, 45.0]])  # level 2
    pooler = MultiScaleRoIPooler(3, SCALES, op="pool")
    out = pooler(features, rois)
    dfeatures = pooler.backward(xp.ones_like(out))
    assert [float(abs(d).sum()) > 0 for d in dfeatures] == [True, False, False, False]
    assert all(d.shape == f.shape for d, f in zip(dfeatures, features))


@pytest.mark.parametrize("op", ["align", "pool", "warp"])
def test_gradient_through_the_pooler(xp, op):
    """Centred differences on every element of two small levels (float64)."""
    rng = np.random.default_rng(3)
    features = [xp.asarray(rng.standard_normal((1, 1, 6, 6))),
                xp.asarray(rng.standard_normal((1, 1, 3, 3)))]
    rois = xp.asarray([[0, 1.3, 2.1, 9.7, 11.2], [0, 0.6, 0.4, 20.9, 22.3]])
    pooler = MultiScaleRoIPooler(2, [1 / 4, 1 / 8], op=op, canonical_scale=16,
                                 canonical_level=3)
    assert asnumpy(pooler.levels(rois)).tolist() == [0, 1]
    dout = xp.asarray(rng.standard_normal((2, 1, 2, 2)))
    pooler(features, rois)
    dfeatures = pooler.backward(dout)
    pooler.eval()  # no caches pushed by the probes
    for level in range(2):
        num = numerical_gradient(lambda: float((pooler(features, rois) * dout).sum()),
                                 features[level])
        err = rel_error(num, dfeatures[level])
        print(f"pooler {op} level {level}: rel error {err:.2e}")
        assert err < 1e-6


def test_empty_rois(xp):
    features = [xp.zeros((1, 2, 8, 8)), xp.zeros((1, 2, 4, 4))]
    pooler = MultiScaleRoIPooler(7, [1 / 4, 1 / 8])
    out = pooler(features, xp.zeros((0, 5)))
    assert out.shape == (0, 2, 7, 7)
    assert [d.shape for d in pooler.backward(out)] == [(1, 2, 8, 8), (1, 2, 4, 4)]


def test_rejects_unknown_op_and_mismatched_levels():
    with pytest.raises(ValueError):
        MultiScaleRoIPooler(7, SCALES, op="crop")
    with pytest.raises(ValueError):
        MultiScaleRoIPooler(7, SCALES)([np.zeros((1, 1, 4, 4))], np.zeros((0, 5)))


def test_matches_torchvision_multiscale_roi_align():
    """Level mapping equals LevelMapper; outputs and gradients equal MultiScaleRoIAlign
    (7x7, sampling 2, aligned False) to 1e-12 in float64."""
    torch = pytest.importorskip("torch")
    tv_poolers = pytest.importorskip("torchvision.ops.poolers")
    rng = np.random.default_rng(4)
    image = 800
    features = pyramid(rng, image)
    rois = random_rois(rng, 60, image)
    batch = rois[:, 0].astype(int)

    mapper = tv_poolers.LevelMapper(2, 5)
    boxes = [torch.from_numpy(rois[batch == i, 1:]) for i in range(2)]
    order = np.argsort(batch, kind="stable")  # torchvision concatenates image by image
    expected_levels = mapper(boxes).numpy() + 2
    np.testing.assert_array_equal(level_mapper(rois[order, 1:], 2, 5), expected_levels)

    pooler = MultiScaleRoIPooler(7, SCALES, sampling_ratio=2)
    out = pooler(features, rois)
    dout = rng.standard_normal(out.shape)
    dfeatures = pooler.backward(dout)
    tv = tv_poolers.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    tfeatures = {str(i): torch.from_numpy(f).requires_grad_() for i, f in enumerate(features)}
    ref = tv(tfeatures, boxes, [(image, image)] * 2)
    ref.backward(torch.from_numpy(dout[order]))
    np.testing.assert_allclose(out[order], ref.detach().numpy(), atol=1e-12, rtol=0)
    for i in range(4):
        np.testing.assert_allclose(dfeatures[i], tfeatures[str(i)].grad.numpy(), atol=1e-12,
                                   rtol=0)
