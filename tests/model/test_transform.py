"""Tests for npmaskrcnn/model/transform.py: resizes, the min/max size rule, batching,
target resizing and the way back (postprocess)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.model.postprocess import paste_masks_in_image
from npmaskrcnn.model.transform import (
    GeneralizedRCNNTransform,
    mirror_batch,
    resize_bilinear,
    resize_bilinear_naive,
    resize_boxes,
    resize_keypoints,
    resize_nearest,
    resized_image_size,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_target(rng, h, w, g=3):
    """A target dict with g boxes inside an (h, w) image, masks, keypoints and an id."""
    xs, ys = rng.uniform(0, w, (g, 2)), rng.uniform(0, h, (g, 2))
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    keypoints = np.concatenate(
        [rng.uniform(0, w, (g, 17, 1)), rng.uniform(0, h, (g, 17, 1)), np.ones((g, 17, 1))], 2
    )
    return {
        "boxes": boxes.astype(np.float32),
        "labels": rng.integers(1, 5, g).astype(np.int64),
        "masks": (rng.random((g, h, w)) > 0.5).astype(np.uint8),
        "keypoints": keypoints.astype(np.float32),
        "image_id": np.int64(7),
    }


# ----------------------------------------------------------------------------- resizes
def test_resize_bilinear_hand_2x2_to_4x4(xp):
    # 1-D: sources -0.25 -> 0 (clamped), 0.25, 0.75, 1.25 -> last pixel (edge clamp), so
    # [a, b] -> [a, 0.75a + 0.25b, 0.25a + 0.75b, b]; in 2-D out[i, j] = 2 c[i] + c[j]
    # with c = [0, 0.25, 0.75, 1] for the input [[0, 1], [2, 3]]
    x = xp.asarray([[0.0, 1.0], [2.0, 3.0]])
    expected = np.array(
        [
            [0.0, 0.25, 0.75, 1.0],
            [0.5, 0.75, 1.25, 1.5],
            [1.5, 1.75, 2.25, 2.5],
            [2.0, 2.25, 2.75, 3.0],
        ]
    )
    out = resize_bilinear(x, (4, 4))
    assert out.shape == (4, 4) and out.dtype == np.float64
    np.testing.assert_allclose(asnumpy(out), expected, atol=1e-12)
    np.testing.assert_allclose(asnumpy(resize_bilinear_naive(x, (4, 4))), expected, atol=1e-12)


def test_resize_nearest_hand(xp):
    # rows floor(d * 2/4) = [0, 0, 1, 1], cols floor(d * 3/2) = [0, 1]
    x = xp.arange(6, dtype=xp.uint8).reshape(2, 3)
    out = resize_nearest(x, (4, 2))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(asnumpy(out), [[0, 1], [0, 1], [3, 4], [3, 4]])


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((5, 7), (11, 4)), ((1, 1), (3, 5)), ((6, 6), (6, 6)), ((9, 3), (2, 1)), ((4, 8), (8, 16))],
)
def test_resize_bilinear_matches_naive(xp, in_hw, out_hw):
    x = xp.asarray(np.random.default_rng(0).random((2, 3) + in_hw))
    fast, naive = resize_bilinear(x, out_hw), resize_bilinear_naive(x, out_hw)
    err = float(abs(fast - naive).max())
    print(f"resize_bilinear {in_hw}->{out_hw}: max |fast - naive| = {err:.2e}")
    assert fast.shape == (2, 3) + out_hw and err < 1e-10


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.integers(1, 12),
    st.floats(-3, 3, allow_subnormal=False),  # a subnormal times a weight can flush to 0
)
def test_resize_bilinear_properties(h_in, w_in, h_out, w_out, c):
    x = np.random.default_rng(h_in * 13 + w_in).random((h_in, w_in))
    out = resize_bilinear(x, (h_out, w_out))
    # a convex combination of input pixels: within the input's range
    assert out.min() >= x.min() - 1e-12 and out.max() <= x.max() + 1e-12
    # constants stay constant; the same size is the identity
    np.testing.assert_allclose(resize_bilinear(np.full((h_in, w_in), c), (h_out, w_out)), c)
    np.testing.assert_allclose(resize_bilinear(x, (h_in, w_in)), x, atol=1e-15)


def test_resize_bilinear_integer_input_gives_float32(xp):
    out = resize_bilinear(xp.ones((2, 3), dtype=xp.uint8), (4, 5))
    assert out.dtype == np.float32
    np.testing.assert_allclose(asnumpy(out), 1.0)


def test_resize_bilinear_and_nearest_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    worst = {np.float32: 0.0, np.float64: 0.0}
    for _ in range(40):
        (h_in, w_in), (h, w) = rng.integers(1, 30, 2), rng.integers(1, 60, 2)
        size = (int(h), int(w))
        for dtype in worst:
            x = rng.random((2, 3, h_in, w_in)).astype(dtype)
            ref = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                align_corners=False).numpy()
            worst[dtype] = max(worst[dtype], float(np.abs(resize_bilinear(x, size) - ref).max()))
        masks = (rng.random((3, h_in, w_in)) > 0.5).astype(np.uint8)
        ref = F.interpolate(torch.from_numpy(masks)[:, None].float(), size=size)[:, 0].byte()
        np.testing.assert_array_equal(resize_nearest(masks, size), ref.numpy())
    print(f"resize_bilinear vs torch: max abs error {worst}")
    assert worst[np.float32] < 1e-6 and worst[np.float64] < 1e-12


# ----------------------------------------------------------------------------- sizes, boxes
def test_resized_image_size_hand():
    # the short side wins: min(100/200, 1000/300) = 0.5
    assert resized_image_size(300, 200, 100, 1000) == (150, 100)
    # the long side wins: min(100/200, 150/400) = 0.375 (exact in binary)
    assert resized_image_size(200, 400, 100, 150) == (75, 150)
    # floor, not round: scale 4/3, 5 * 4/3 = 6.67 -> 6
    assert resized_image_size(3, 5, 4, 100) == (4, 6)


def test_resize_boxes_and_keypoints_hand(xp):
    boxes = xp.asarray([[10.0, 20.0, 30.0, 40.0]], dtype=xp.float32)
    out = resize_boxes(boxes, (100, 200), (50, 400))  # h x 0.5, w x 2
    np.testing.assert_allclose(asnumpy(out), [[20.0, 10.0, 60.0, 20.0]])
    kps = xp.asarray([[[10.0, 20.0, 2.0]]], dtype=xp.float32)
    np.testing.assert_allclose(
        asnumpy(resize_keypoints(kps, (100, 200), (50, 400))), [[[20.0, 10.0, 2.0]]]
    )
    assert resize_boxes(xp.zeros((0, 4), dtype=xp.float32), (5, 5), (9, 9)).shape == (0, 4)


# ----------------------------------------------------------------------------- transform
def test_transform_pads_to_32_and_normalises(xp):
    rng = np.random.default_rng(1)
    images = [xp.asarray(rng.random((3, 40, 70)), dtype=xp.float32),
              xp.asarray(rng.random((3, 50, 30)), dtype=xp.float32)]
    t = GeneralizedRCNNTransform(60, 100, MEAN, STD).eval()
    batch, sizes, targets = t(images)
    assert targets is None
    # 40x70: min(60/40, 100/70) = 1.4286 -> (57, 100); 50x30: min(2, 2) = 2 -> (100, 60)
    assert sizes == [(57, 100), (100, 60)]
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == np.float32
    assert type(batch) is type(images[0])
    b = asnumpy(batch)
    assert np.all(b[0, :, 57:, :] == 0) and np.all(b[0, :, :, 100:] == 0)
    assert np.all(b[1, :, 100:, :] == 0) and np.all(b[1, :, :, 60:] == 0)
    # inside: the normalised, resized image
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    expected = (asnumpy(resize_bilinear(images[1], (100, 60))) - mean) / std
    np.testing.assert_allclose(b[1, :, :100, :60], expected, atol=1e-5)


def test_transform_targets(xp):
    rng = np.random.default_rng(2)
    target = random_target(rng, 40, 80)
    target_xp = {k: xp.asarray(v) for k, v in target.items()}
    t = GeneralizedRCNNTransform(20, 1000, MEAN, STD).eval()
    _, sizes, (out,) = t([xp.asarray(rng.random((3, 40, 80)), dtype=xp.float32)], [target_xp])
    assert sizes == [(20, 40)]
    np.testing.assert_allclose(asnumpy(out["boxes"]), target["boxes"] * 0.5, rtol=1e-6)
    np.testing.assert_allclose(asnumpy(out["keypoints"])[..., :2],
                               target["keypoints"][..., :2] * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(asnumpy(out["keypoints"])[..., 2], target["keypoints"][..., 2])
    # halving: nearest picks every second pixel
    assert out["masks"].dtype == np.uint8
    np.testing.assert_array_equal(asnumpy(out["masks"]), target["masks"][:, ::2, ::2])
    np.testing.assert_array_equal(asnumpy(out["labels"]), target["labels"])
    assert int(out["image_id"]) == 7
    # the caller's dict is untouched
    assert target_xp["masks"].shape == (3, 40, 80)


def test_transform_empty_targets_and_bad_inputs():
    t = GeneralizedRCNNTransform(32, 64, MEAN, STD).eval()
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "masks": np.zeros((0, 16, 16), np.uint8)}
    batch, sizes, (out,) = t([np.zeros((3, 16, 16), np.float32)], [target])
    assert batch.shape == (1, 3, 32, 32) and sizes == [(32, 32)]
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 32, 32)
    with pytest.raises(ValueError):
        t([np.zeros((16, 16), np.float32)])
    with pytest.raises(TypeError):
        t([np.zeros((3, 16, 16), np.uint8)])


def test_transform_train_picks_a_min_size_eval_uses_last():
    image = np.zeros((3, 10, 10), np.float32)
    t = GeneralizedRCNNTransform((20, 30, 40), 1000, MEAN, STD)
    seen = {t([image])[1][0] for _ in range(30)}
    assert seen == {(20, 20), (30, 30), (40, 40)}
    t.eval()
    assert t([image])[1] == [(40, 40)]
    t.train()
    dets = [{"boxes": np.ones((1, 4), np.float32)}]
    assert t.postprocess(dets, [(40, 40)], [(10, 10)]) is dets  # untouched in training


def test_postprocess_round_trip(xp):
    rng = np.random.default_rng(3)
    t = GeneralizedRCNNTransform(50, 90, MEAN, STD).eval()
    images = [xp.asarray(rng.random((3, 37, 61)), dtype=xp.float32),
              xp.asarray(rng.random((3, 64, 20)), dtype=xp.float32)]
    targets = [{k: xp.asarray(v) for k, v in random_target(rng, *im.shape[1:]).items()}
               for im in images]
    _, sizes, resized = t(images, targets)
    dets = [{"boxes": r["boxes"], "keypoints": r["keypoints"], "scores": r["labels"] * 0.1,
             "masks": xp.ones((3, 1, 28, 28), dtype=xp.float32)} for r in resized]
    originals = [tuple(im.shape[1:]) for im in images]
    back = t.postprocess(dets, sizes, originals)
    for b, tg, (h, w) in zip(back, targets, originals, strict=True):
        np.testing.assert_allclose(asnumpy(b["boxes"]), asnumpy(tg["boxes"]), atol=1e-4)
        np.testing.assert_allclose(asnumpy(b["keypoints"]), asnumpy(tg["keypoints"]), atol=1e-4)
        assert b["masks"].shape == (3, h, w)
        assert "scores" in b
    unpasted = t.postprocess(dets, sizes, originals, paste_masks=False)
    for u, b, (h, w) in zip(unpasted, back, originals, strict=True):
        assert u["masks"].shape == (3, 1, 28, 28)  # left over their boxes
        np.testing.assert_array_equal(asnumpy(u["boxes"]), asnumpy(b["boxes"]))
        one = paste_masks_in_image(u["masks"][1:2], u["boxes"][1:2], (h, w))  # one at a time
        np.testing.assert_array_equal(asnumpy(one[0]), asnumpy(b["masks"][1]))


def test_transform_and_postprocess_match_torchvision():
    torch = pytest.importorskip("torch")
    tv_transform = pytest.importorskip("torchvision.models.detection.transform")
    rng = np.random.default_rng(4)
    worst = 0.0
    for _ in range(3):
        min_size, max_size = int(rng.integers(40, 120)), int(rng.integers(120, 200))
        ours = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD).eval()
        ref = tv_transform.GeneralizedRCNNTransform(min_size, max_size, MEAN, STD).eval()
        images = [rng.random((3, *rng.integers(20, 150, 2))).astype(np.float32) for _ in range(2)]
        targets = [random_target(rng, *im.shape[1:]) for im in images]
        batch, sizes, out_targets = ours(images, targets)
        ref_list, ref_targets = ref([torch.from_numpy(im) for im in images],
                                    [{k: torch.as_tensor(v) for k, v in tg.items()}
                                     for tg in targets])
        assert batch.shape == tuple(ref_list.tensors.shape)
        assert sizes == [tuple(s) for s in ref_list.image_sizes]
        worst = max(worst, float(np.abs(batch - ref_list.tensors.numpy()).max()))
        for a, b in zip(out_targets, ref_targets, strict=True):
            for key in ("boxes", "keypoints", "masks", "labels"):
                np.testing.assert_array_equal(a[key], b[key].numpy(), err_msg=key)
        # back to the original sizes, with 28x28 mask probabilities pasted
        dets = [{"boxes": tg["boxes"], "keypoints": tg["keypoints"],
                 "masks": rng.random((3, 1, 28, 28)).astype(np.float32)} for tg in out_targets]
        originals = [tuple(im.shape[1:]) for im in images]
        back = ours.postprocess(dets, sizes, originals)
        ref_back = ref.postprocess([{k: torch.from_numpy(v) for k, v in d.items()} for d in dets],
                                   ref_list.image_sizes, originals)
        for a, b in zip(back, ref_back, strict=True):
            np.testing.assert_array_equal(a["boxes"], b["boxes"].numpy())
            np.testing.assert_array_equal(a["keypoints"], b["keypoints"].numpy())
            np.testing.assert_allclose(a["masks"], b["masks"][:, 0].numpy(), atol=1e-6)
    print(f"transform vs torchvision: max abs error of the batch {worst:.2e}")
    assert worst < 1e-5


def test_mirror_batch_mirrors_each_image_within_its_width(xp):
    """Each image mirrored left to right inside its own width; its padding (right and below)
    stays where it was; mirroring twice gives the batch back; one size or several."""
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, 3, 5, 8))
    for sizes in ([(5, 6), (5, 6)], [(4, 8), (5, 3)]):
        padded = batch.copy()
        for n, (h, w) in enumerate(sizes):
            padded[n, :, h:], padded[n, :, :, w:] = 0, 0
        out = asnumpy(mirror_batch(xp.asarray(padded), sizes))
        for n, (h, w) in enumerate(sizes):
            np.testing.assert_array_equal(out[n, :, :, :w], padded[n, :, :, w - 1::-1])
            assert not out[n, :, h:].any() and not out[n, :, :, w:].any()
        np.testing.assert_array_equal(asnumpy(mirror_batch(xp.asarray(out), sizes)), padded)
