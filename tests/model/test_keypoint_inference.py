"""Tests for npmaskrcnn/model/keypoint_inference.py: bicubic resize and heatmaps -> keypoints."""

import numpy as np
import pytest

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import rel_error
from npmaskrcnn.model.keypoint_head import keypoints_to_heatmap
from npmaskrcnn.model.keypoint_inference import (
    cubic_source_index,
    heatmaps_to_keypoints,
    keypoint_confidence,
    keypoint_confidence_naive,
    keypointrcnn_inference,
    resize_bicubic,
    resize_bicubic_naive,
)


# ----------------------------------------------------------------------------- bicubic
def test_cubic_weights_hand_computed(xp):
    # 2 -> 4: sources -0.25, 0.25, 0.75, 1.25. At t = 0.25 (a = -0.75) the Keys weights are
    # far(1.25), near(0.25), near(0.75), far(1.75), with near(x) = (1.25x - 2.25)x^2 + 1 and
    # far(x) = ((-0.75x + 3.75)x - 6)x + 3
    idx, w = cubic_source_index(2, 4, np.float64, xp)
    np.testing.assert_allclose(asnumpy(w)[:, 1],
                               [-0.10546875, 0.87890625, 0.26171875, -0.03515625], rtol=1e-15)
    # the first output samples at -0.25 (not clamped): i = -1, t = 0.75, neighbours -2..1
    # clamped to the axis 0..1
    assert asnumpy(idx)[:, 0].tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(asnumpy(w).sum(axis=0), 1.0, rtol=1e-14)  # a partition of unity
    # same size: the identity (weights 0, 1, 0, 0)
    idx, w = cubic_source_index(5, 5, np.float32, xp)
    np.testing.assert_array_equal(asnumpy(w), np.eye(4)[[1]].T.repeat(5, axis=1))


def test_bicubic_constants_ramps_and_overshoot(xp):
    # constants are kept (the weights add up to 1)
    out = resize_bicubic(xp.full((3, 5), 7.0), (8, 11))
    np.testing.assert_allclose(asnumpy(out), 7.0, rtol=1e-14)
    # a = -0.75 (sharper than a = -0.5) does not reproduce ramps: [0, 1, 2, 3] -> 8 samples
    # at 1.25 reads 1 + (0.10546875 + 0.26171875 - 2 * 0.03515625) = 1.296875, not 1.25
    ramp = resize_bicubic(xp.asarray([[0.0, 1.0, 2.0, 3.0]]), (1, 8))
    assert float(ramp[0, 3]) == pytest.approx(1.296875, rel=1e-14)
    # the negative lobes overshoot at a step, as PyTorch does (nothing is clamped)
    step = xp.asarray(np.repeat([[0.0] * 4 + [1.0] * 4], 2, axis=0))
    assert float(resize_bicubic(step, (2, 16)).max()) > 1.0


@pytest.mark.parametrize("in_hw, out_hw", [((5, 7), (11, 4)), ((56, 56), (9, 13)), ((3, 3), (3, 3)),
                                           ((4, 6), (13, 17)), ((1, 5), (3, 2))])
def test_bicubic_fast_equals_naive(xp, in_hw, out_hw):
    x = xp.asarray(np.random.default_rng(0).standard_normal((2,) + in_hw).astype(np.float32))
    fast, naive = resize_bicubic(x, out_hw), resize_bicubic_naive(x, out_hw)
    assert fast.shape == (2,) + out_hw and fast.dtype == np.float32
    np.testing.assert_array_equal(asnumpy(fast), asnumpy(naive))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_hw, out_hw", [((56, 56), (37, 81)), ((56, 56), (120, 45)),
                                           ((56, 56), (56, 90)), ((5, 7), (11, 4)),
                                           ((56, 56), (7, 5))])
def test_bicubic_torch_parity(xp, dtype, in_hw, out_hw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((3, 1) + in_hw).astype(dtype)
    out = resize_bicubic(xp.asarray(x), out_hw)
    ref = torch.nn.functional.interpolate(torch.tensor(x), size=out_hw, mode="bicubic",
                                          align_corners=False).numpy()
    err = rel_error(out, ref)
    print(f"bicubic parity {in_hw}->{out_hw} {np.dtype(dtype).name}: rel error {err:.1e}")
    assert err < (1e-6 if dtype == np.float32 else 1e-14)


# ----------------------------------------------------------------------------- keypoints
def test_heatmaps_to_keypoints_hand_computed(xp):
    # a 56 x 56 box: the resize is the identity, so the argmax cell (r, c) decodes to
    # (x1 + c + 0.5, y1 + r + 0.5) and the score is the logit there
    maps = xp.zeros((2, 2, 56, 56))
    maps[0, 0, 10, 20] = 5.0
    maps[0, 1, 55, 0] = 3.0
    maps[1, 0] -= 1.0  # all equal: the first cell wins, as torch.argmax
    maps[1, 1, 3, 4] = 2.0
    rois = xp.asarray([[100.0, 200.0, 156.0, 256.0], [0.0, 0.0, 56.0, 56.0]])
    kps, scores = heatmaps_to_keypoints(maps, rois)
    np.testing.assert_allclose(asnumpy(kps), [[[120.5, 210.5, 1], [100.5, 255.5, 1]],
                                              [[0.5, 0.5, 1], [4.5, 3.5, 1]]])
    np.testing.assert_allclose(asnumpy(scores), [[5.0, 3.0], [-1.0, 2.0]])


def test_heatmaps_to_keypoints_small_box_and_scaling(xp):
    # a 0.5 x 3.2 box: width clamped to 1 (one pixel), height 3.2 -> ceil 4 pixels of 0.8
    maps = xp.asarray(np.random.default_rng(0).standard_normal((1, 1, 56, 56)))
    rois = xp.asarray([[10.0, 20.0, 10.5, 23.2]])
    kps, _ = heatmaps_to_keypoints(maps, rois)
    x, y = asnumpy(kps)[0, 0, :2]
    assert x == pytest.approx(10.5)  # (0 + 0.5) * 1/1 + 10
    assert ((y - 20.0) / 0.8 - 0.5) % 1 == pytest.approx(0, abs=1e-9)  # a pixel centre
    assert 20.0 < y < 23.2


def test_round_trip_target_to_keypoint(xp):
    # a peaked logit map at each keypoint's target bin decodes back to the keypoint
    rng = np.random.default_rng(2)
    boxes = np.array([[10.0, 20.0, 70.0, 140.0], [0.0, 0.0, 30.0, 25.0]])
    kps = np.stack([boxes[:, None, 0] + rng.uniform(0, 1, (2, 5)) * 60,
                    boxes[:, None, 1] + rng.uniform(0, 1, (2, 5)) * 25,
                    np.full((2, 5), 2.0)], axis=2)
    kps[1, :, 0] = np.minimum(kps[1, :, 0], 29.0)
    heat, valid = keypoints_to_heatmap(xp.asarray(kps), xp.asarray(boxes), 56)
    assert bool(valid.all())
    maps = np.full((2, 5, 56 * 56), -10.0)
    np.put_along_axis(maps, asnumpy(heat)[..., None], 10.0, axis=2)
    out, _ = heatmaps_to_keypoints(xp.asarray(maps.reshape(2, 5, 56, 56)), xp.asarray(boxes))
    # the keypoint lies in its bin, at most half a bin from the bin's centre; the bicubic
    # peak sits on that centre and the argmax pixel's centre is at most half a pixel off
    side = boxes[:, 2:] - boxes[:, :2]  # (2, 2): box width, height
    bound = 0.5 * side / 56 + 0.5 * side / np.ceil(side)
    err = np.abs(asnumpy(out)[..., :2] - kps[..., :2])
    print("round trip error / bound: max", (err / bound[:, None, :]).max())
    assert np.all(err <= bound[:, None, :] + 1e-9)


def test_empty_and_per_image_split(xp):
    kps, scores = heatmaps_to_keypoints(xp.zeros((0, 17, 56, 56)), xp.zeros((0, 4)))
    assert kps.shape == (0, 17, 3) and scores.shape == (0, 17)
    maps = xp.asarray(np.random.default_rng(0).standard_normal((3, 2, 56, 56)))
    boxes = [xp.asarray([[0.0, 0.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]]), xp.zeros((0, 4)),
             xp.asarray([[1.0, 2.0, 3.0, 4.0]])]
    kp_list, sc_list = keypointrcnn_inference(maps, boxes)
    assert [k.shape for k in kp_list] == [(2, 2, 3), (0, 2, 3), (1, 2, 3)]
    whole, _ = heatmaps_to_keypoints(maps, xp.concatenate(boxes))
    np.testing.assert_array_equal(asnumpy(xp.concatenate(kp_list)), asnumpy(whole))


def test_heatmaps_to_keypoints_torchvision_parity(xp):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_h2k

    rng = np.random.default_rng(4)
    r, k = 12, 17
    xy = rng.uniform(0, 400, (r, 2))
    wh = np.concatenate([rng.uniform(0.3, 3, (2, 2)), rng.uniform(3, 300, (r - 2, 2))])
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    boxes[3, 2:] = np.floor(boxes[3, 2:]) + [40.0, 7.0]  # integer sides too
    boxes[3, :2] = np.floor(boxes[3, :2])
    maps = rng.standard_normal((r, k, 56, 56)).astype(np.float32)
    kps, scores = heatmaps_to_keypoints(xp.asarray(maps), xp.asarray(boxes))
    tkps, tscores = tv_h2k(torch.tensor(maps), torch.tensor(boxes))
    assert kps.dtype == np.float32 and scores.dtype == np.float32
    # the same argmax everywhere: coordinates equal bit for bit; the scores to rounding
    np.testing.assert_array_equal(asnumpy(kps), tkps.numpy())
    err = rel_error(scores, tscores.numpy())
    print(f"heatmaps_to_keypoints parity: {r * k} keypoints equal, scores rel error {err:.1e}")
    assert err < 1e-6


# ------------------------------------------------------------------ keypoint confidence
def test_keypoint_confidence_equals_naive_and_hand_cases(xp):
    """The softmax mass within 2 bins of each heatmap's maximum: equal to the loop
    reference on random maps; 1 for a one-hot heatmap; 25 bins of a flat heatmap in its
    middle (25 / m^2), and only the 9 bins left of the window at a corner (first maximum
    of a flat map: the corner (0, 0))."""
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, 4, 56, 56)) * 3
    maps[0, 1, 40, 55] = 60.0  # one-hot at the right border
    fast = asnumpy(keypoint_confidence(xp.asarray(maps)))
    slow = keypoint_confidence_naive(maps)
    print("keypoint_confidence vs naive, max |diff|:", np.abs(fast - slow).max())
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)
    assert fast.shape == (3, 4) and abs(fast[0, 1] - 1) < 1e-12
    assert ((0 < fast) & (fast <= 1)).all() and fast.min() < 0.5  # random maps are unsure
    flat = np.zeros((2, 1, 56, 56))
    flat[1, 0, 20, 30] = 1e-9  # a flat map with its maximum in the middle
    conf = asnumpy(keypoint_confidence(xp.asarray(flat)))
    np.testing.assert_allclose(conf[:, 0], [9 / 56**2, 25 / 56**2], rtol=1e-6)
    assert keypoint_confidence(xp.zeros((0, 17, 56, 56))).shape == (0, 17)
