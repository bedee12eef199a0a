"""Tests for npmaskrcnn/model/backbone.py: residual blocks and the ResNet feature extractor."""

import numpy as np
import pytest

from npmaskrcnn.backend import Generator, backend_name, get_xp
from npmaskrcnn.gradcheck import (
    directional_check,
    numerical_gradient,
    rel_error,
    sparse_gradient_check,
)
from npmaskrcnn.layers.module import Sequential
from npmaskrcnn.layers.norm import FrozenBatchNorm2d, GroupNorm
from npmaskrcnn.model.backbone import (
    BasicBlock,
    Bottleneck,
    ResNet,
    gn_num_groups,
    make_layer,
    norm_factory,
)

F64 = np.float64


def _backend(xp) -> str:
    return backend_name(xp)


def _identity_norm(c):
    """FrozenBN with eps 0, mean 0, var 1, weight 1, bias 0: exactly y = x."""
    return FrozenBatchNorm2d(c, eps=0.0, dtype=F64)


def _randomize_norms(model, seed=0):
    """Random affine (and FrozenBN statistics), so that the norms are not near identity."""
    rng = np.random.default_rng(seed)
    for _, m in model.modules():
        if isinstance(m, (GroupNorm, FrozenBatchNorm2d)):
            store = m.params if isinstance(m, GroupNorm) else m.buffers
            c, xp = store["weight"].shape[0], get_xp(store["weight"])
            store["weight"][...] = xp.asarray(rng.uniform(0.5, 1.5, c))
            store["bias"][...] = xp.asarray(rng.normal(0.0, 0.3, c))
            if isinstance(m, FrozenBatchNorm2d):
                m.buffers["running_mean"][...] = xp.asarray(rng.normal(0.0, 0.3, c))
                m.buffers["running_var"][...] = xp.asarray(rng.uniform(0.5, 2.0, c))


def _as_list(out):
    return out if isinstance(out, list) else [out]


def _check_module(model, x, seed, param_names=(), full_x=False, num_checks=15):
    """Gradient-check a module for the loss sum_l <out_l, dout_l> (float64): analytic
    gradients from one training-mode forward/backward, numerical ones from eval-mode
    forwards (which keep no caches). Returns {"x" | "params(direction)" | name: error}.
    """
    rng, xp = np.random.default_rng(seed), get_xp(x)
    model.train()
    model.zero_grad()
    outs = _as_list(model(x))
    douts = [xp.asarray(rng.standard_normal(o.shape)) for o in outs]
    dx = model.backward(douts if isinstance(model, ResNet) else douts[0])
    model.eval()

    def f():
        return sum(float((o * d).sum()) for o, d in zip(_as_list(model(x)), douts))

    errors = {}
    if dx is not None:
        if full_x:
            errors["x"] = rel_error(numerical_gradient(f, x), dx)
        else:
            errors["x"] = sparse_gradient_check(f, x, dx, num_checks=num_checks, seed=seed)
    params = model.parameters(trainable_only=True)
    grads = model.gradients(trainable_only=True)
    if params:
        errors["params(direction)"] = directional_check(
            f, list(params.values()), list(grads.values()), seed=seed)
    for name in param_names:
        assert float(abs(grads[name]).max()) > 0, name  # a check of zeros proves nothing
        errors[name] = sparse_gradient_check(f, params[name], grads[name],
                                             num_checks=num_checks, seed=seed)
    model.train()
    return errors


# --------------------------------------------------------------------------- helpers


def test_gn_num_groups_rule():
    # gcd(requested, channels): the largest count dividing both
    assert gn_num_groups(32, 64) == 32
    assert gn_num_groups(32, 2048) == 32
    assert gn_num_groups(32, 8) == 8
    assert gn_num_groups(32, 48) == 16
    assert gn_num_groups(2, 6) == 2
    assert gn_num_groups(32, 3) == 1
    for c in (4, 8, 12, 48, 96, 256):
        assert c % norm_factory("group_norm", 32)(c).num_groups == 0
    with pytest.raises(ValueError, match="norm must be"):
        norm_factory("batch_norm")


# --------------------------------------------------------------------------- blocks


def test_basic_block_hand_computed():
    # identity 3x3 kernels and identity norms, bn1 shifted by -1:
    # out = relu(relu(x - 1) + x)
    blk = BasicBlock(1, 1, norm_layer=_identity_norm, dtype=F64)
    for conv in (blk.conv1, blk.conv2):
        conv.params["weight"][...] = 0
        conv.params["weight"][0, 0, 1, 1] = 1
    blk.bn1.buffers["bias"][...] = -1
    x = np.array([[[[-1.0, 2.0], [3.0, -4.0]]]])
    out = blk(x)
    np.testing.assert_allclose(out, [[[[0.0, 3.0], [5.0, 0.0]]]], atol=1e-12)
    # dout = 1: the final relu passes at (0,1), (1,0); both the branch (relu(x - 1) > 0
    # there too) and the identity deliver 1, so dx = 2 there, 0 elsewhere
    dx = blk.backward(np.ones_like(out))
    np.testing.assert_allclose(dx, [[[[0.0, 2.0], [2.0, 0.0]]]], atol=1e-12)


def test_bottleneck_hand_computed():
    # C = 4 channels, 1x1 image. conv1 sums the channels, conv2 doubles (center tap 2),
    # conv3 spreads with weights (1, -1, 0.5, 0); all norms are the identity.
    blk = Bottleneck(4, 1, norm_layer=_identity_norm, dtype=F64)
    blk.conv1.params["weight"][...] = 1
    blk.conv2.params["weight"][...] = 0
    blk.conv2.params["weight"][0, 0, 1, 1] = 2
    blk.conv3.params["weight"][...] = np.array([1, -1, 0.5, 0]).reshape(4, 1, 1, 1)
    x = np.array([1.0, 2.0, -3.0, 0.5]).reshape(1, 4, 1, 1)
    # a = sum x = 0.5; branch = w3 * 2 * relu(a) = (1, -1, 0.5, 0); + x = (2, 1, -2.5, 0.5)
    out = blk(x)
    np.testing.assert_allclose(out.ravel(), [2.0, 1.0, 0.0, 0.5], atol=1e-12)
    # dout = (1, 2, 3, 4); relu mask (1, 1, 0, 1) -> dsum = (1, 2, 0, 4)
    # branch: <w3, dsum> = -1; x2 (conv2) -> -2; conv1 spreads -2 to every channel
    dx = blk.backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1))
    np.testing.assert_allclose(dx.ravel(), [-1.0, 0.0, -2.0, 2.0], atol=1e-12)


def test_bottleneck_stride_on_3x3_conv():
    # ResNet v1.5: conv1 (1x1) keeps the size, conv2 (3x3) halves it
    layer = make_layer(Bottleneck, 8, 2, 1, stride=2, norm_layer=_identity_norm, dtype=F64)
    blk = layer[0]
    x = np.random.default_rng(0).standard_normal((1, 8, 6, 6))
    assert blk.conv1(x).shape == (1, 2, 6, 6)
    assert blk.conv2(blk.conv1(x)).shape == (1, 2, 3, 3)
    assert blk(x).shape == (1, 8, 3, 3)
    assert isinstance(blk.downsample, Sequential)
    assert blk.downsample[0].params["weight"].shape == (8, 8, 1, 1)


def test_block_names_match_torchvision():
    layer = make_layer(Bottleneck, 4, 2, 2, stride=2, dtype=F64)
    names = list(layer.state_dict())
    assert names[:2] == ["0.conv1.weight", "0.bn1.weight"]
    assert "0.downsample.0.weight" in names and "0.downsample.1.weight" in names
    assert "1.conv3.weight" in names and not any(n.startswith("1.downsample") for n in names)
    basic = make_layer(BasicBlock, 4, 4, 2, stride=1, dtype=F64)
    assert not any("downsample" in n or "conv3" in n for n in basic.state_dict())


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("norm", ["group_norm", "frozen_bn"])
@pytest.mark.parametrize("seed", [0, 1])
def test_block_gradients(xp, block, norm, seed):
    layer = make_layer(block, 4, 2, 2, stride=2, norm_layer=norm_factory(norm, 2, F64),
                       rng=Generator(seed), dtype=F64)
    _randomize_norms(layer, seed)
    layer.to(backend=_backend(xp))
    x = xp.asarray(np.random.default_rng(seed + 10).standard_normal((2, 4, 5, 5)))
    names = ["0.conv1.weight", "0.downsample.0.weight", "1.conv2.weight"]
    if norm == "group_norm":
        names += ["0.bn1.bias", "1.bn2.weight"]
    errors = _check_module(layer, x, seed, names, full_x=True)
    print(block.__name__, norm, seed, errors)
    assert max(errors.values()) < 1e-6


# --------------------------------------------------------------------------- ResNet


def _tiny(depth=18, norm="group_norm", seed=0, **kwargs):
    net = ResNet(depth, width=4, norm=norm, gn_groups=2, rng=Generator(seed), dtype=F64,
                 **kwargs)
    _randomize_norms(net, seed)
    return net


@pytest.mark.parametrize("depth,blocks", [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3]),
                                          (50, [3, 4, 6, 3]), (101, [3, 4, 23, 3])])
def test_resnet_shapes_and_strides(depth, blocks):
    net = _tiny(depth)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == blocks
    e = 1 if depth < 50 else 4
    assert net.out_channels == [4 * e, 8 * e, 16 * e, 32 * e]
    assert net.strides == [4, 8, 16, 32]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96))
    feats = net(x)
    assert [f.shape for f in feats] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(net.out_channels, net.strides)
    ]
    # sizes not divisible by 32 follow floor((H - 1) / 2) + 1 at each of the 5 halvings
    feats = net(np.zeros((1, 3, 33, 47)))
    assert [f.shape[-2:] for f in feats] == [(9, 12), (5, 6), (3, 3), (2, 2)]


@pytest.mark.parametrize(
    "depth,norm,seed", [(18, "group_norm", 0), (18, "frozen_bn", 1), (50, "group_norm", 2),
                        (50, "frozen_bn", 3)])
def test_resnet_gradients(xp, depth, norm, seed):
    net = _tiny(depth, norm, seed)
    net.to(backend=_backend(xp))
    x = xp.asarray(np.random.default_rng(seed).standard_normal((1, 3, 32, 32)))
    # (3x3 weights of C5's blocks see a 1x1 map: only their centre taps have a gradient)
    names = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
             "layer4.0.downsample.0.weight"]
    if norm == "group_norm":
        names += ["bn1.weight", "layer3.0.bn2.bias"]
    errors = _check_module(net, x, seed, names)
    print(depth, norm, seed, errors)
    assert max(errors.values()) < 1e-6


def test_resnet_none_gradients_are_zeros():
    net = _tiny(18)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    feats = net(x)
    dC4 = np.random.default_rng(1).standard_normal(feats[2].shape)
    dx_none = net.backward([None, None, dC4, None])
    g_none = {k: v.copy() for k, v in net.gradients().items()}
    net.zero_grad()
    net(x)
    dx_zeros = net.backward([np.zeros_like(f) if i != 2 else dC4 for i, f in enumerate(feats)])
    assert rel_error(dx_none, dx_zeros) == 0
    assert all(rel_error(g_none[k], v) == 0 for k, v in net.gradients().items())
    assert np.abs(g_none["layer4.0.conv1.weight"]).max() == 0
    assert np.abs(g_none["layer3.0.conv1.weight"]).max() > 0


def test_resnet_return_layers_c4_only():
    full, c4 = _tiny(50, seed=4), _tiny(50, seed=4, return_layers=("C4",))
    assert c4.out_channels == [64] and c4.strides == [16]
    assert not any(k.startswith("layer4") for k in c4.state_dict())
    c4.load_state_dict({k: v for k, v in full.state_dict().items()
                        if not k.startswith("layer4")})
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    (f4,) = c4(x)
    feats = full(x)
    assert rel_error(f4, feats[2]) < 1e-12
    d4 = np.random.default_rng(1).standard_normal(f4.shape)
    dx_c4 = c4.backward([d4])
    dx_full = full.backward([None, None, d4, None])
    assert rel_error(dx_c4, dx_full) < 1e-12
    for k, g in c4.gradients().items():
        assert rel_error(g, full.gradients()[k]) < 1e-12
    with pytest.raises(ValueError, match="expected 1 gradients"):
        c4(x)
        c4.backward([d4, d4])


def test_resnet_cache_stack_two_forwards():
    # forward(x1), forward(x2), backward(d2), backward(d1) == the two runs one by one,
    # which exercises the shared ReLU modules' stacked caches
    net = _tiny(50, seed=5)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((1, 3, 32, 32)), rng.standard_normal((1, 3, 32, 32))
    d1 = [rng.standard_normal(f.shape) for f in net(x1)]
    d2 = [rng.standard_normal(f.shape) for f in net(x2)]
    dx2, dx1 = net.backward(d2), net.backward(d1)
    stacked = {k: v.copy() for k, v in net.gradients().items()}
    net.zero_grad()
    net(x1)
    assert rel_error(net.backward(d1), dx1) < 1e-12
    net(x2)
    assert rel_error(net.backward(d2), dx2) < 1e-12
    assert max(rel_error(stacked[k], g) for k, g in net.gradients().items()) < 1e-12


@pytest.mark.parametrize("frozen", [1, 2, 4])
def test_frozen_stages_get_no_grads(frozen):
    net = _tiny(18, seed=6, frozen_stages=frozen)
    ref = _tiny(18, seed=6)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    feats = net(x)
    # frozen stages keep no caches: their backward never runs
    frozen_prefixes = ("conv1", "bn1") + tuple(f"layer{i}." for i in range(1, frozen))
    for name, m in net.modules():
        if name.startswith(frozen_prefixes) or name in ("relu", "maxpool"):
            assert not m._caches, name
    douts = [np.random.default_rng(i).standard_normal(f.shape) for i, f in enumerate(feats)]
    assert net.backward(douts) is None  # stops at the first frozen stage
    ref(x)
    ref.backward(douts)
    trainable = net.parameters(trainable_only=True)
    for name, g in net.gradients().items():
        if name.startswith(frozen_prefixes):
            assert name not in trainable and np.all(g == 0), name
        else:
            # the trainable stages get exactly the gradients of an unfrozen net
            assert rel_error(g, ref.gradients()[name]) < 1e-12, name
    assert any(np.abs(g).max() > 0 for g in net.gradients().values())
    assert all(not m._caches for _, m in net.modules())


def test_all_stages_frozen():
    net = _tiny(18, frozen_stages=5)
    assert net.parameters(trainable_only=True) == {}
    feats = net(np.ones((1, 3, 32, 32)))
    assert net.backward([np.ones_like(f) for f in feats]) is None
    assert all(np.all(g == 0) for g in net.gradients().values())
    assert all(not m._caches for _, m in net.modules())


def test_zero_init_residual():
    net = ResNet(18, width=4, zero_init_residual=True, dtype=F64)
    assert np.all(net.layer1[0].bn2.params["weight"] == 0)
    assert np.all(net.layer1[0].bn1.params["weight"] == 1)
    # each block without downsample starts as relu(identity); its input is already >= 0
    x = np.abs(np.random.default_rng(0).standard_normal((1, 4, 8, 8)))
    assert rel_error(net.layer1[1](x), x) == 0


def test_resnet_init_and_arguments():
    net = ResNet(50, width=8, dtype=F64)
    w = net.layer4[0].conv2.params["weight"]  # (64, 64, 3, 3), no bias
    assert "bias" not in net.layer4[0].conv2.params
    assert abs(w.std() / np.sqrt(2.0 / (64 * 9)) - 1) < 0.03  # kaiming_normal, fan_out
    assert abs(w.mean()) < 0.01
    norms = [m for _, m in net.modules() if isinstance(m, GroupNorm)]
    assert norms and all(np.all(m.params["weight"] == 1) for m in norms)
    assert all(np.all(m.params["bias"] == 0) for m in norms)
    assert net.layer4[0].bn3.num_groups == 32  # 8 * 8 * 4 = 256 channels
    assert net.bn1.num_groups == 8  # 8 channels: clamped to gcd(32, 8)
    with pytest.raises(ValueError, match="depth"):
        ResNet(20)
    with pytest.raises(ValueError, match="frozen_stages"):
        ResNet(18, width=4, frozen_stages=6)
    with pytest.raises(ValueError, match="return_layers"):
        ResNet(18, width=4, return_layers=("C6",))


# --------------------------------------------------------------------------- torchvision


def _torch_frozen_bn():
    return pytest.importorskip("torchvision.ops.misc").FrozenBatchNorm2d


def _load_from_torch(ours, torch_module):
    ours.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()
                          if not k.startswith("fc.") and "num_batches_tracked" not in k})


def _randomize_torch_norms(module, seed):
    """The torch twin of ``_randomize_norms``: every 1-d weight/bias/statistic."""
    import torch  # noqa: PLC0415

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(m, name, None)
                if t is not None and t.ndim == 1:
                    positive = name in ("weight", "running_var")
                    r = torch.rand(t.shape, generator=g, dtype=t.dtype)
                    t.copy_(0.5 + r if positive else 0.6 * (r - 0.5))


@pytest.mark.parametrize("depth", [18, 50])
def test_state_dict_parity_torchvision(depth):
    torch = pytest.importorskip("torch")
    tvm = pytest.importorskip("torchvision.models")
    ctor = getattr(tvm, f"resnet{depth}")
    # default torchvision (BatchNorm2d): same keys minus fc.* and num_batches_tracked
    tv_sd = {k: tuple(v.shape) for k, v in ctor().state_dict().items()
             if not k.startswith("fc.") and "num_batches_tracked" not in k}
    ours = ResNet(depth, width=64, norm="frozen_bn")
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == tv_sd
    # with torchvision's FrozenBatchNorm2d the buffers coincide exactly
    tv_frozen = ctor(norm_layer=_torch_frozen_bn()).state_dict()
    assert list(ours.state_dict()) == [k for k in tv_frozen if not k.startswith("fc.")]
    if depth == 18:  # GroupNorm: parameters only, the same names and shapes
        tv_gn = ctor(norm_layer=lambda c: torch.nn.GroupNorm(32, c)).state_dict()
        ours_gn = ResNet(depth, width=64, norm="group_norm").state_dict()
        assert {k: tuple(v.shape) for k, v in ours_gn.items()} == {
            k: tuple(v.shape) for k, v in tv_gn.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("depth,norm", [(18, "frozen_bn"), (50, "frozen_bn"), (18, "group_norm")])
def test_resnet_parity_torchvision(depth, norm):
    # torchvision's weights loaded into ours; forward in eval mode (FrozenBN) and, for the
    # trainable GroupNorm net, every parameter gradient against torch autograd
    torch = pytest.importorskip("torch")
    tvm = pytest.importorskip("torchvision.models")
    tv_norm = (_torch_frozen_bn() if norm == "frozen_bn"
               else lambda c: torch.nn.GroupNorm(gn_num_groups(32, c), c))
    tv = getattr(tvm, f"resnet{depth}")(norm_layer=tv_norm).double().eval()
    _randomize_torch_norms(tv, 0)
    ours = ResNet(depth, width=64, norm=norm, dtype=F64)
    _load_from_torch(ours, tv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64))
    t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(torch.from_numpy(x)))))
    expect = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        t = getattr(tv, name)(t)
        expect.append(t)
    feats = ours(x)
    errs = [rel_error(got, want.detach().numpy()) for got, want in zip(feats, expect)]
    if norm == "group_norm":
        douts = [rng.standard_normal(f.shape) for f in feats]
        torch.autograd.backward(expect, [torch.from_numpy(d) for d in douts])
        ours.backward(douts)
        tv_grads = {k: p.grad.numpy() for k, p in tv.named_parameters() if p.grad is not None}
        assert set(tv_grads) == set(ours.gradients())  # fc got no gradient
        errs += [rel_error(g, tv_grads[k]) for k, g in ours.gradients().items()]
    print(f"resnet{depth} {norm} parity: max rel error {max(errs):.2e}")
    assert max(errs) < 1e-10


@pytest.mark.parametrize("block_name", ["BasicBlock", "Bottleneck"])
@pytest.mark.parametrize("norm", ["group_norm", "frozen_bn"])
def test_block_parity_torchvision_with_grads(block_name, norm):
    torch = pytest.importorskip("torch")
    tvr = pytest.importorskip("torchvision.models.resnet")
    inplanes, planes, stride = 8, 4, 2
    tv_block, ours_block = getattr(tvr, block_name), {"BasicBlock": BasicBlock,
                                                      "Bottleneck": Bottleneck}[block_name]
    out_c = planes * tv_block.expansion
    if norm == "group_norm":
        def tv_norm(c):
            return torch.nn.GroupNorm(gn_num_groups(4, c), c)
    else:
        tv_norm = _torch_frozen_bn()
    down = torch.nn.Sequential(torch.nn.Conv2d(inplanes, out_c, 1, stride, bias=False),
                               tv_norm(out_c))
    tv = tv_block(inplanes, planes, stride, down, norm_layer=tv_norm).double()
    _randomize_torch_norms(tv, 1)
    ours = make_layer(ours_block, inplanes, planes, 1, stride, norm_factory(norm, 4, F64),
                      dtype=F64)[0]
    _load_from_torch(ours, tv)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, inplanes, 7, 7))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = tv(xt)
    dout = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.from_numpy(dout))
    out = ours(x)
    dx = ours.backward(dout)
    assert rel_error(out, out_t.detach().numpy()) < 1e-10
    assert rel_error(dx, xt.grad.numpy()) < 1e-10
    tv_grads = {k: p.grad.numpy() for k, p in tv.named_parameters()}
    ours_grads = ours.gradients(trainable_only=True)
    assert set(tv_grads) == set(ours_grads)
    for k, g in ours_grads.items():
        assert rel_error(g, tv_grads[k]) < 1e-10, k


@pytest.mark.parametrize("depth", [18, 50])
def test_frozen_bn_folded_into_conv_at_inference(depth):
    # eval mode folds each FrozenBN into the conv before it (conv_norm); training mode
    # runs conv then norm. Same numbers, to float64 rounding.
    net = ResNet(depth, width=4, norm="frozen_bn", dtype=F64, rng=Generator(3))
    _randomize_norms(net, seed=4)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 48))
    x_before = x.copy()
    unfused = net.train()(x)
    for _, m in net.modules():
        m._caches.clear()  # the training forward's caches (no backward follows)
    net.eval()
    fused = net(x)
    np.testing.assert_array_equal(x, x_before)  # in-place ReLUs never touch the input
    for a, b in zip(fused, unfused):
        assert rel_error(a, b) < 1e-12
    assert all(not m._caches for _, m in net.modules())


def test_conv_norm_with_conv_bias():
    from npmaskrcnn.layers.conv import Conv2d
    from npmaskrcnn.model.backbone import conv_norm

    conv = Conv2d(3, 5, 3, stride=2, padding=1, bias=True, rng=Generator(0), dtype=F64)
    bn = FrozenBatchNorm2d(5, dtype=F64)
    _randomize_norms(Sequential(conv, bn), seed=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 11))
    expected = bn(conv(x))
    conv.eval(), bn.eval()
    assert rel_error(conv_norm(conv, bn, x), expected) < 1e-12
