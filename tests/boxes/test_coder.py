"""Tests for npmaskrcnn/boxes/coder.py: BoxCoder encode / decode."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.coder import BBOX_XFORM_CLIP, BoxCoder


def random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, 50, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_encode_hand_computed(xp):
    # proposal: centre (5, 5), size 10 x 10; gt: centre (10, 15), size 10 x 20
    proposals = xp.asarray([[0.0, 0.0, 10.0, 10.0]])
    gt = xp.asarray([[5.0, 5.0, 15.0, 25.0]])
    np.testing.assert_allclose(asnumpy(BoxCoder().encode(gt, proposals)),
                               [[0.5, 1.0, 0.0, math.log(2.0)]], rtol=1e-15)
    # the box head's weights scale each delta
    np.testing.assert_allclose(asnumpy(BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(gt, proposals)),
                               [[5.0, 10.0, 0.0, 5 * math.log(2.0)]], rtol=1e-15)


def test_decode_hand_computed(xp):
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0]])
    # two delta blocks (k = 2): the identity, and the deltas of the encode example
    codes = xp.asarray([[0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0, math.log(2.0)]])
    out = asnumpy(BoxCoder().decode(codes, boxes))
    assert out.shape == (1, 8)
    np.testing.assert_allclose(out, [[0, 0, 10, 10, 5, 5, 15, 25]], rtol=1e-14, atol=1e-14)


def test_decode_clamps_large_dw_dh(xp):
    boxes = xp.asarray([[0.0, 0.0, 16.0, 16.0]])
    codes = xp.asarray([[0.0, 0.0, 50.0, -1.0]])  # exp(50) would be absurd
    out = asnumpy(BoxCoder().decode(codes, boxes))[0]
    width, height = out[2] - out[0], out[3] - out[1]
    np.testing.assert_allclose(width, 1000.0, rtol=1e-12)  # 16 * exp(log(1000 / 16))
    np.testing.assert_allclose(height, 16 * math.exp(-1.0), rtol=1e-12)  # no lower clamp
    np.testing.assert_allclose([out[0] + out[2], out[1] + out[3]], [16.0, 16.0])  # centre kept
    assert BBOX_XFORM_CLIP == pytest.approx(math.log(1000.0 / 16))


def test_clamp_applies_after_dividing_by_weights(xp):
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes = xp.asarray([[0.0, 0.0, 10.0, 10.0]])
    # dw / 5 = 4 < clip: not clamped; dh / 5 = 6 > clip: clamped
    out = asnumpy(coder.decode(xp.asarray([[0.0, 0.0, 20.0, 30.0]]), boxes))[0]
    np.testing.assert_allclose(out[2] - out[0], 10 * math.exp(4.0), rtol=1e-12)
    np.testing.assert_allclose(out[3] - out[1], 1000.0 * 10 / 16, rtol=1e-12)


def test_empty_inputs(xp):
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert coder.encode(xp.zeros((0, 4)), xp.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(xp.zeros((0, 4)), xp.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(xp.zeros((0, 12)), xp.zeros((0, 4))).shape == (0, 12)


def test_dtypes_follow_the_inputs(xp):
    rng = np.random.default_rng(0)
    gt = xp.asarray(random_boxes(rng, 4), dtype=xp.float32)
    props = xp.asarray(random_boxes(rng, 4))  # float64, cast to the reference's dtype
    assert BoxCoder().encode(gt, props).dtype == xp.float32
    codes = xp.asarray(rng.normal(size=(4, 8)), dtype=xp.float32)
    assert BoxCoder().decode(codes, props).dtype == xp.float32


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0)]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), weights=st.sampled_from(WEIGHTS))
def test_encode_decode_round_trip(seed, weights):
    # gt at most ~20x the proposal's size, so no dw / dh reaches the clamp
    rng = np.random.default_rng(seed)
    proposals = random_boxes(rng, 8)
    gt = random_boxes(rng, 8)
    coder = BoxCoder(weights)
    deltas = coder.encode(gt, proposals)
    np.testing.assert_allclose(coder.decode(deltas, proposals), gt, rtol=1e-12, atol=1e-10)
    # and the other way: decode then encode gives back the deltas
    codes = rng.normal(0, 0.5, (8, 4)) * np.asarray(weights)
    np.testing.assert_allclose(coder.encode(coder.decode(codes, proposals), proposals), codes,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_torchvision_parity(weights):
    torch = pytest.importorskip("torch")
    tv_utils = pytest.importorskip("torchvision.models.detection._utils")
    rng = np.random.default_rng(1)
    proposals = random_boxes(rng, 50).astype(np.float32)
    gt = random_boxes(rng, 50).astype(np.float32)
    codes = (rng.normal(0, 2, (50, 12)) * np.tile(weights, 3)).astype(np.float32)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)

    want = theirs.encode_single(torch.from_numpy(gt), torch.from_numpy(proposals)).numpy()
    got = ours.encode(gt, proposals)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)

    want = theirs.decode_single(torch.from_numpy(codes), torch.from_numpy(proposals)).numpy()
    got = ours.decode(codes, proposals)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)
