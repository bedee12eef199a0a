"""Tests for npmaskrcnn/model/fpn.py: the feature pyramid over C2..C5."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import Generator, backend_name, get_xp
from npmaskrcnn.gradcheck import directional_check, rel_error, sparse_gradient_check
from npmaskrcnn.model.backbone import ResNet
from npmaskrcnn.model.fpn import FeaturePyramidNetwork

F64 = np.float64


def _backend(xp) -> str:
    return backend_name(xp)


def _feats(xp, channels, sizes, n=1, seed=0):
    rng = np.random.default_rng(seed)
    return [xp.asarray(rng.standard_normal((n, c, h, w))) for c, (h, w) in zip(channels, sizes)]


def _random_biases(fpn, seed):
    """torchvision's init sets biases to 0; random ones make their gradient checks bite."""
    rng = np.random.default_rng(seed)
    for name, b in fpn.parameters().items():
        if name.endswith("bias"):
            b[...] = get_xp(b).asarray(rng.normal(0, 0.5, b.shape))


def test_hand_computed_two_levels():
    # 1 channel in and out; lateral weights 1, output convs the identity (center tap 1)
    fpn = FeaturePyramidNetwork([1, 1], 1, dtype=F64)
    for i in range(2):
        fpn.inner_blocks[i][0].params["weight"][...] = 1
        w = fpn.layer_blocks[i][0].params["weight"]
        w[...] = 0
        w[0, 0, 1, 1] = 1
    c_low = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    c_top = np.array([[[[5.0]]]])
    p_low, p_top, p6 = fpn([c_low, c_top])
    # last_low = c_low + upsample(5) everywhere; P6 = P_top[::2, ::2]
    np.testing.assert_allclose(p_low, [[[[6.0, 7.0], [8.0, 9.0]]]])
    np.testing.assert_allclose(p_top, [[[[5.0]]]])
    np.testing.assert_allclose(p6, [[[[5.0]]]])
    dc_low, dc_top = fpn.backward([np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)),
                                   np.ones((1, 1, 1, 1))])
    # d last_top = dP_top + dP6 + (sum of the 4 upsampled copies' gradients) = 1 + 1 + 4
    np.testing.assert_allclose(dc_low, np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(dc_top, [[[[6.0]]]])
    # the lateral conv's weight gradient: sum over pixels of d last * C
    np.testing.assert_allclose(fpn.inner_blocks[0][0].grads["weight"].ravel(), [10.0])
    np.testing.assert_allclose(fpn.inner_blocks[1][0].grads["weight"].ravel(), [30.0])


def test_names_and_init():
    fpn = FeaturePyramidNetwork([8, 16, 32, 64], 16, rng=Generator(3), dtype=F64)
    keys = list(fpn.state_dict())
    assert keys[:2] == ["inner_blocks.0.0.weight", "inner_blocks.0.0.bias"]
    assert "layer_blocks.3.0.weight" in keys and len(keys) == 16
    for i, c in enumerate([8, 16, 32, 64]):
        w_in = fpn.inner_blocks[i][0].params["weight"]
        w_out = fpn.layer_blocks[i][0].params["weight"]
        assert w_in.shape == (16, c, 1, 1) and w_out.shape == (16, 16, 3, 3)
        for w, fan_in in ((w_in, c), (w_out, 16 * 9)):
            bound = np.sqrt(3.0 / fan_in)  # kaiming_uniform(a=1)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
        assert np.all(fpn.inner_blocks[i][0].params["bias"] == 0)
        assert np.all(fpn.layer_blocks[i][0].params["bias"] == 0)
    big = FeaturePyramidNetwork([256], 256, rng=Generator(0), dtype=F64)
    w = big.layer_blocks[0][0].params["weight"]
    assert abs(w.std() / np.sqrt(1.0 / (256 * 9)) - 1) < 0.01  # U(-b, b) has std b/sqrt(3)
    with pytest.raises(ValueError, match="in_channels_list"):
        FeaturePyramidNetwork([8, 0], 4)
    with pytest.raises(ValueError, match="extra_block"):
        FeaturePyramidNetwork([8], 4, extra_block="conv")


@pytest.mark.parametrize(
    "sizes", [[(16, 16), (8, 8), (4, 4), (2, 2)], [(15, 13), (8, 7), (4, 4), (2, 2)]])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients(xp, sizes, seed):
    channels = [3, 4, 5, 6]
    fpn = FeaturePyramidNetwork(channels, 4, rng=Generator(seed), dtype=F64)
    _random_biases(fpn, seed)
    fpn.to(backend=_backend(xp))
    feats = _feats(xp, channels, sizes, n=2, seed=seed)
    outs = fpn(feats)
    assert [o.shape[-2:] for o in outs[:4]] == [tuple(s) for s in sizes]
    rng = np.random.default_rng(seed + 100)
    douts = [xp.asarray(rng.standard_normal(o.shape)) for o in outs]
    dfeats = fpn.backward(douts)
    fpn.eval()

    def f():
        return sum(float((o * d).sum()) for o, d in zip(fpn(feats), douts))

    errors = {f"C{i + 2}": sparse_gradient_check(f, c, d, num_checks=15, seed=seed + i)
              for i, (c, d) in enumerate(zip(feats, dfeats))}
    params, grads = fpn.parameters(), fpn.gradients()
    errors["params(direction)"] = directional_check(f, list(params.values()),
                                                    list(grads.values()), seed=seed)
    for name in ("inner_blocks.0.0.weight", "inner_blocks.3.0.bias",
                 "layer_blocks.1.0.weight", "layer_blocks.3.0.bias"):
        errors[name] = sparse_gradient_check(f, params[name], grads[name], num_checks=15,
                                             seed=seed)
    print(sizes, seed, errors)
    assert max(errors.values()) < 1e-6


def test_none_gradients_and_no_extra_block():
    channels, sizes = [2, 3, 4], [(8, 8), (4, 4), (2, 2)]
    fpn = FeaturePyramidNetwork(channels, 3, rng=Generator(1), dtype=F64)
    feats = _feats(np, channels, sizes)
    outs = fpn(feats)
    assert len(outs) == 4 and fpn.num_outputs == 4 and outs[3].shape == (1, 3, 1, 1)
    douts = [np.random.default_rng(i).standard_normal(o.shape) for i, o in enumerate(outs)]
    got = fpn.backward(douts[:3] + [None])
    g_none = {k: v.copy() for k, v in fpn.gradients().items()}
    fpn.zero_grad()
    fpn(feats)
    want = fpn.backward(douts[:3] + [np.zeros_like(outs[3])])
    assert all(rel_error(a, b) == 0 for a, b in zip(got, want))
    assert all(rel_error(g_none[k], g) == 0 for k, g in fpn.gradients().items())
    plain = FeaturePyramidNetwork(channels, 3, extra_block=None, rng=Generator(1), dtype=F64)
    p_outs = plain(feats)
    assert len(p_outs) == 3 and all(rel_error(a, b) == 0 for a, b in zip(p_outs, outs))
    d_plain = plain.backward(douts[:3])
    assert all(rel_error(a, b) == 0 for a, b in zip(d_plain, want))
    with pytest.raises(ValueError, match="expected 3 gradients"):
        plain(feats)
        plain.backward(douts)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        plain(feats[:2])


def test_single_level():
    fpn = FeaturePyramidNetwork([4], 2, rng=Generator(0), dtype=F64)
    (c,) = _feats(np, [4], [(5, 5)])
    p, p6 = fpn([c])
    assert p.shape == (1, 2, 5, 5) and p6.shape == (1, 2, 3, 3)
    assert rel_error(p6, p[:, :, ::2, ::2]) == 0
    (dc,) = fpn.backward([np.ones_like(p), np.ones_like(p6)])
    assert dc.shape == c.shape


def test_output_strides_with_resnet():
    net = ResNet(18, width=4, rng=Generator(0), dtype=F64)
    fpn = FeaturePyramidNetwork(net.out_channels, 8, rng=Generator(1), dtype=F64)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 192))
    outs = fpn(net(x))
    strides = [128 // o.shape[2] for o in outs]
    assert strides == [4, 8, 16, 32, 64]
    assert all(192 // o.shape[3] == s for o, s in zip(outs, strides))
    assert all(o.shape[1] == 8 for o in outs)
    dx = net.backward(fpn.backward([np.ones_like(o) for o in outs]))
    assert dx.shape == x.shape


def test_empty_batch():
    net = ResNet(50, width=2, gn_groups=2, rng=Generator(0), dtype=F64)
    fpn = FeaturePyramidNetwork(net.out_channels, 4, rng=Generator(1), dtype=F64)
    outs = fpn(net(np.zeros((0, 3, 64, 64))))
    assert [o.shape for o in outs] == [(0, 4, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)]
    dx = net.backward(fpn.backward([None] * 5))
    assert dx.shape == (0, 3, 64, 64)
    assert all(np.all(g == 0) for g in {**net.gradients(), **fpn.gradients()}.values())


@settings(max_examples=8, deadline=None)
@given(h=st.integers(33, 90), w=st.integers(33, 90))
def test_any_input_size_property(h, w):
    # sizes that do not divide by 32: each P_l takes its C_l's size (upsample to size=),
    # and P6 = ceil(P5 / 2)
    net = ResNet(18, width=2, gn_groups=2, rng=Generator(0), dtype=F64)
    fpn = FeaturePyramidNetwork(net.out_channels, 2, rng=Generator(1), dtype=F64)
    feats = net(np.ones((1, 3, h, w)))
    outs = fpn(feats)
    for c, p in zip(feats, outs):
        assert p.shape[-2:] == c.shape[-2:]
    assert outs[4].shape[-2:] == tuple((s + 1) // 2 for s in outs[3].shape[-2:])
    dfeats = fpn.backward([np.ones_like(o) for o in outs])
    assert [d.shape for d in dfeats] == [c.shape for c in feats]
    net.backward(dfeats)


def test_parity_torchvision_with_grads():
    torch = pytest.importorskip("torch")
    tvops = pytest.importorskip("torchvision.ops")
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # noqa: PLC0415

    channels, sizes = [4, 8, 16, 32], [(15, 13), (8, 7), (4, 4), (2, 2)]
    tv = tvops.FeaturePyramidNetwork(channels, 8, extra_blocks=LastLevelMaxPool()).double()
    ours = FeaturePyramidNetwork(channels, 8, dtype=F64)
    tv_sd = tv.state_dict()
    assert {k: tuple(v.shape) for k, v in tv_sd.items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()}
    with torch.no_grad():
        for k, v in tv.named_parameters():
            if k.endswith("bias"):
                v.normal_(0, 0.5)
    ours.load_state_dict({k: v.detach().numpy() for k, v in tv.state_dict().items()})
    feats = _feats(np, channels, sizes, n=2, seed=5)
    feats_t = [torch.from_numpy(c.copy()).requires_grad_(True) for c in feats]
    out_t = list(tv({str(i): c for i, c in enumerate(feats_t)}).values())
    outs = ours(feats)
    assert len(out_t) == len(outs) == 5
    rng = np.random.default_rng(6)
    douts = [rng.standard_normal(o.shape) for o in outs]
    torch.autograd.backward(out_t, [torch.from_numpy(d) for d in douts])
    dfeats = ours.backward(douts)
    errs = [rel_error(a, b.detach().numpy()) for a, b in zip(outs, out_t)]
    errs += [rel_error(a, b.grad.numpy()) for a, b in zip(dfeats, feats_t)]
    errs += [rel_error(ours.gradients()[k], p.grad.numpy()) for k, p in tv.named_parameters()]
    print("fpn torchvision parity", max(errs))
    assert max(errs) < 1e-10
