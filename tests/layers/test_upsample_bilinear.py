"""Tests for npmaskrcnn/layers/upsample_bilinear.py: bilinear upsampling, align_corners=False."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers.upsample_bilinear import (
    UpsampleBilinear2d,
    bilinear_source_index,
    interpolation_matrix,
    upsample_bilinear2d_backward,
    upsample_bilinear2d_forward,
    upsample_bilinear2d_naive,
)

# (input H, W, keyword arguments): the keypoint predictor's x2, sizes, non-integer factors
# (source step 1/s, not in/out), downsampling, and an axis left unchanged by a factor != 1
CASES = [
    ((3, 4), dict(scale_factor=2.0)),
    ((3, 4), dict(size=(5, 7))),
    ((4, 5), dict(scale_factor=(1.7, 2.3))),
    ((6, 5), dict(size=(3, 2))),
    ((3, 7), dict(scale_factor=(1.2, 0.6))),  # 3 * 1.2 -> 3: PyTorch copies that axis
    ((1, 3), dict(size=(4, 1))),
]


def test_hand_computed_2x(xp):
    # 1-D [a, b] -> sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (edge: the last pixel):
    # [a, 0.75a + 0.25b, 0.25a + 0.75b, b]
    x = xp.asarray([[[[0.0, 4.0]]]])
    out, cache = upsample_bilinear2d_forward(x, scale_factor=(1, 2))
    np.testing.assert_array_equal(asnumpy(out)[0, 0], [[0.0, 1.0, 3.0, 4.0]])
    # backward: a collects 1*g0 + 0.75*g1 + 0.25*g2, b collects 0.25*g1 + 0.75*g2 + 1*g3
    dx = upsample_bilinear2d_backward(xp.asarray([[[[1.0, 10.0, 100.0, 1000.0]]]]), cache)
    np.testing.assert_array_equal(asnumpy(dx)[0, 0], [[1 + 7.5 + 25, 2.5 + 75 + 1000]])


def test_hand_computed_2d(xp):
    # out[i, j] = 2 c[i] + c[j] with c = [0, 0.25, 0.75, 1] for the input [[0, 1], [2, 3]]
    x = xp.asarray([[[[0.0, 1.0], [2.0, 3.0]]]])
    c = np.array([0.0, 0.25, 0.75, 1.0])
    out, _ = upsample_bilinear2d_forward(x, scale_factor=2.0)
    np.testing.assert_array_equal(asnumpy(out)[0, 0], 2 * c[:, None] + c[None, :])


def test_source_index_scale_factor_is_not_the_size_ratio(xp):
    # 4 -> floor(4 * 1.7) = 6: PyTorch steps by 1/1.7, not by 4/6
    i0, i1, l0, l1 = bilinear_source_index(4, 6, 1.7, np.float32, xp)
    step = np.float32(1 / 1.7)
    expected = np.maximum((np.arange(6) + 0.5) * float(step) - 0.5, 0)
    np.testing.assert_allclose(asnumpy(i0) + asnumpy(l1), expected, rtol=1e-6)
    assert asnumpy(i0).tolist() == [0, 0, 0, 1, 2, 2]
    by_ratio = bilinear_source_index(4, 6, None, np.float32, xp)
    assert not np.allclose(asnumpy(by_ratio[3]), asnumpy(l1))
    # every output's weights add up to 1; a matrix row holds them
    a = asnumpy(interpolation_matrix(i0, i1, l0, l1, 4))
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)


def _factors(kw):
    """The (s_h, s_w) scale factors of CASES' keyword arguments (None, None for a size)."""
    s = kw.get("scale_factor")
    return (None, None) if s is None else (s, s) if np.isscalar(s) else s


@pytest.mark.parametrize("hw, kw", CASES)
def test_fast_equals_naive(xp, hw, kw):
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((2, 3) + hw))
    out, cache = upsample_bilinear2d_forward(x, **kw)
    # the same terms, added in another order: an ulp (float64)
    err = rel_error(out, upsample_bilinear2d_naive(x, **kw))
    print(f"bilinear fast vs naive {hw} {kw}: rel error {err:.1e}")
    assert err < 1e-15
    # the backward against the adjoint written out pixel by pixel, with the neighbours
    # and weights of bilinear_source_index
    d = rng.standard_normal(out.shape)
    dx = asnumpy(upsample_bilinear2d_backward(xp.asarray(d), cache))
    H, W = hw
    r0, r1, lr0, lr1 = (asnumpy(a) for a in bilinear_source_index(H, out.shape[2],
                                                                  _factors(kw)[0], x.dtype, xp))
    c0, c1, lc0, lc1 = (asnumpy(a) for a in bilinear_source_index(W, out.shape[3],
                                                                  _factors(kw)[1], x.dtype, xp))
    ref = np.zeros(x.shape)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for r, wr in ((r0[i], lr0[i]), (r1[i], lr1[i])):
                for c, wc in ((c0[j], lc0[j]), (c1[j], lc1[j])):
                    ref[:, :, r, c] += wr * wc * d[:, :, i, j]
    assert np.abs(dx - ref).max() < 1e-12


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(H=st.integers(1, 6), W=st.integers(1, 6), Ho=st.integers(1, 13), Wo=st.integers(1, 13),
       by_factor=st.booleans())
def test_property_naive_agreement_and_adjoint(xp, H, W, Ho, Wo, by_factor):
    rng = np.random.default_rng(H * 1000 + W * 100 + Ho * 10 + Wo)
    x = xp.asarray(rng.standard_normal((1, 2, H, W)))
    kw = dict(scale_factor=(Ho / H + 0.01, Wo / W + 0.01)) if by_factor else dict(size=(Ho, Wo))
    out, cache = upsample_bilinear2d_forward(x, **kw)
    assert rel_error(out, upsample_bilinear2d_naive(x, **kw)) < 1e-15
    # a convex combination of inputs: within their range; constants stay constant
    assert float(out.max()) <= float(x.max()) + 1e-12
    assert float(out.min()) >= float(x.min()) - 1e-12
    ones, _ = upsample_bilinear2d_forward(xp.ones_like(x), **kw)
    np.testing.assert_allclose(asnumpy(ones), 1.0, rtol=1e-12)
    # <dout, up(x)> = <down(dout), x>
    d = xp.asarray(rng.standard_normal(out.shape))
    dx = upsample_bilinear2d_backward(d, cache)
    assert float((d * out).sum()) == pytest.approx(float((dx * x).sum()), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("hw, kw", [CASES[0], CASES[1], CASES[2]])
def test_gradcheck(xp, seed, hw, kw):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal((1, 2) + hw))
    errs = check_layer(upsample_bilinear2d_forward, upsample_bilinear2d_backward, [x],
                       seed=seed, **kw)
    print(f"upsample_bilinear {kw} grad rel error", errs)
    assert max(errs) < 1e-8


def test_empty_batch_and_bad_arguments(xp):
    out, cache = upsample_bilinear2d_forward(xp.zeros((0, 4, 3, 5)), scale_factor=2.0)
    assert out.shape == (0, 4, 6, 10)
    assert upsample_bilinear2d_backward(out, cache).shape == (0, 4, 3, 5)
    with pytest.raises(ValueError, match="exactly one"):
        upsample_bilinear2d_forward(xp.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="exactly one"):
        upsample_bilinear2d_forward(xp.zeros((1, 1, 2, 2)), size=4, scale_factor=2.0)
    with pytest.raises(ValueError, match="non-empty"):
        upsample_bilinear2d_forward(xp.zeros((1, 1, 2, 2)), scale_factor=0.4)


def test_module(xp):
    m = UpsampleBilinear2d(scale_factor=2.0)
    x = xp.asarray(np.random.default_rng(0).standard_normal((1, 2, 3, 3)))
    out = m(x)
    assert out.shape == (1, 2, 6, 6) and m.state_dict() == {}
    # each input pixel passes on a total weight of 4 (every output's weights sum to 1)
    dx = asnumpy(m.backward(xp.ones(out.shape)))
    np.testing.assert_allclose(dx, np.full(x.shape, 4.0), rtol=1e-12)
    with pytest.raises(RuntimeError):
        m.backward(xp.ones(out.shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw, kw", CASES + [((28, 28), dict(scale_factor=2.0)),
                                            ((7, 9), dict(size=(25, 31))),
                                            ((13, 10), dict(scale_factor=1.37))])
def test_torch_parity(xp, dtype, hw, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + hw).astype(dtype)
    out, cache = upsample_bilinear2d_forward(xp.asarray(x), **kw)
    d = rng.standard_normal(out.shape).astype(dtype)
    dx = upsample_bilinear2d_backward(xp.asarray(d), cache)
    t = torch.tensor(x, requires_grad=True)
    extra = dict(recompute_scale_factor=False) if "scale_factor" in kw else {}
    ot = torch.nn.functional.interpolate(t, mode="bilinear", align_corners=False, **kw, **extra)
    ot.backward(torch.tensor(d))
    assert out.dtype == dtype and out.shape == tuple(ot.shape)
    # same neighbours and weights; the sums may be rounded in another order (an ulp)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    err, derr = rel_error(out, ot.detach().numpy()), rel_error(dx, t.grad.numpy())
    print(f"bilinear parity {hw} {kw} {np.dtype(dtype).name}: rel error out {err:.1e}, "
          f"dx {derr:.1e}")
    assert err < tol and derr < tol


def test_torch_parity_weights_bit_exact(xp):
    """One-hot inputs read PyTorch's interpolation weights out exactly (float32)."""
    torch = pytest.importorskip("torch")
    for n_in, kw in [(7, dict(scale_factor=1.7)), (5, dict(size=13)), (28, dict(scale_factor=2.0)),
                     (9, dict(scale_factor=0.55)), (37, dict(size=211))]:
        eye = np.eye(n_in, dtype=np.float32)[None, :, None, :]  # (1, n_in, 1, n_in)
        kw2 = {k: (1.0, v) if k == "scale_factor" else (1, v) for k, v in kw.items()}
        out, _ = upsample_bilinear2d_forward(xp.asarray(eye), **kw2)
        extra = dict(recompute_scale_factor=False) if "scale_factor" in kw else {}
        ref = torch.nn.functional.interpolate(torch.tensor(eye), mode="bilinear",
                                              align_corners=False, **kw2, **extra).numpy()
        np.testing.assert_array_equal(asnumpy(out), ref)
