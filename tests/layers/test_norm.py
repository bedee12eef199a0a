"""Tests for npmaskrcnn/layers/norm.py: GroupNorm and FrozenBatchNorm2d."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy, backend_name
from npmaskrcnn.gradcheck import check_layer
from npmaskrcnn.layers.norm import (
    FrozenBatchNorm2d,
    GroupNorm,
    frozen_batch_norm_backward,
    frozen_batch_norm_forward,
    group_norm_backward,
    group_norm_forward,
    group_norm_naive,
)


def test_group_norm_hand_computed(xp):
    # one image, 2 channels, 2 groups of 1 channel, 2 pixels each: [0, 2] and [1, 5]
    x = xp.asarray([[[[0.0, 2.0]], [[1.0, 5.0]]]])
    w, b = xp.asarray([1.0, 2.0]), xp.asarray([0.0, 1.0])
    out, _ = group_norm_forward(x, w, b, num_groups=2, eps=0.0)
    # each group: mean m, biased var = ((a - m)^2 + (c - m)^2) / 2 -> xhat = [-1, 1]
    np.testing.assert_allclose(asnumpy(out)[0, :, 0], [[-1.0, 1.0], [-1.0, 3.0]], rtol=1e-14)
    # one group over everything: mean 2, var (4 + 0 + 1 + 9) / 4 = 3.5
    out1, _ = group_norm_forward(x, None, None, num_groups=1, eps=0.0)
    expected = (np.array([0.0, 2.0, 1.0, 5.0]) - 2.0) / np.sqrt(3.5)
    np.testing.assert_allclose(asnumpy(out1).ravel(), expected, rtol=1e-14)


@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 4), 3), ((3, 4, 5), 2), ((1, 4, 2, 2), 4)])
def test_group_norm_fast_equals_naive(xp, shape, groups):
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal(shape) * 3 + 1)
    w = xp.asarray(rng.standard_normal(shape[1]))
    b = xp.asarray(rng.standard_normal(shape[1]))
    out, _ = group_norm_forward(x, w, b, groups)
    assert float(abs(out - group_norm_naive(x, w, b, groups)).max()) < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_gradcheck(xp, seed, groups):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal((2, 4, 3, 3)))
    w = xp.asarray(rng.standard_normal(4))
    b = xp.asarray(rng.standard_normal(4))
    errs = check_layer(group_norm_forward, group_norm_backward, [x, w, b], seed=seed,
                       num_groups=groups)
    print(f"group_norm G={groups} grad rel errors (x, w, b)", errs)
    assert max(errs) < 1e-6


def test_group_norm_without_affine(xp):
    rng = np.random.default_rng(100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal((2, 4, 3)))
    fwd = lambda x: group_norm_forward(x, None, None, 2)  # noqa: E731
    bwd = lambda d, c: group_norm_backward(d, c)[0]  # noqa: E731
    assert max(check_layer(fwd, bwd, [x])) < 1e-6
    _, cache = fwd(x)
    _, dw, db = group_norm_backward(xp.ones(x.shape), cache)
    assert dw is None and db is None


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 3), G=st.integers(1, 3), cg=st.integers(1, 3), S=st.integers(1, 6),
       shift=st.floats(-100, 100), scale=st.floats(0.1, 100))
def test_group_norm_properties(xp, N, G, cg, S, shift, scale):
    rng = np.random.default_rng(N * 1000 + G * 100 + cg * 10 + S)
    x = rng.standard_normal((N, G * cg, S, 2))
    out, cache = group_norm_forward(xp.asarray(x), None, None, G, eps=0.0)
    # invariant to a per-tensor affine change of the input
    out2, _ = group_norm_forward(xp.asarray(x * scale + shift), None, None, G, eps=0.0)
    np.testing.assert_allclose(asnumpy(out2), asnumpy(out), atol=1e-7)
    # zero mean and unit (biased) variance in every group
    og = asnumpy(out).reshape(N, G, -1)
    np.testing.assert_allclose(og.mean(-1), 0, atol=1e-10)
    np.testing.assert_allclose(og.var(-1), 1, atol=1e-8)
    # dx is orthogonal to the group-wise constant and to xhat (the gradient of a
    # normalised output cannot move the group's mean or scale)
    dx = asnumpy(group_norm_backward(xp.asarray(rng.standard_normal(x.shape)), cache)[0])
    dg = dx.reshape(N, G, -1)
    np.testing.assert_allclose(dg.sum(-1), 0, atol=1e-8)
    np.testing.assert_allclose((dg * og).sum(-1), 0, atol=1e-8)


def test_group_norm_module(xp):
    m = GroupNorm(2, 4, dtype=np.float64).to(backend=backend_name(xp))
    np.testing.assert_array_equal(asnumpy(m.params["weight"]), np.ones(4))
    np.testing.assert_array_equal(asnumpy(m.params["bias"]), np.zeros(4))
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((2, 4, 3, 3)))
    d = xp.asarray(rng.standard_normal((2, 4, 3, 3)))
    out = m(x)
    ref, cache = group_norm_forward(x, m.params["weight"], m.params["bias"], 2)
    np.testing.assert_array_equal(asnumpy(out), asnumpy(ref))
    dx = m.backward(d)
    rdx, rdw, rdb = group_norm_backward(d, cache)
    np.testing.assert_array_equal(asnumpy(dx), asnumpy(rdx))
    np.testing.assert_array_equal(asnumpy(m.grads["weight"]), asnumpy(rdw))
    np.testing.assert_array_equal(asnumpy(m.grads["bias"]), asnumpy(rdb))
    with pytest.raises(ValueError):
        GroupNorm(3, 4)


def test_frozen_bn_hand_computed(xp):
    x = xp.asarray([[[[1.0]], [[2.0]]]])  # (1, 2, 1, 1)
    w, b = xp.asarray([2.0, 1.0]), xp.asarray([0.5, -1.0])
    mean, var = xp.asarray([1.0, 0.0]), xp.asarray([3.0, 0.25])
    out, cache = frozen_batch_norm_forward(x, w, b, mean, var, eps=1.0)
    # channel 0: 2 / sqrt(4) * (1 - 1) + 0.5; channel 1: 1 / sqrt(1.25) * 2 - 1
    np.testing.assert_allclose(asnumpy(out).ravel(), [0.5, 2 / np.sqrt(1.25) - 1], rtol=1e-14)
    dx = frozen_batch_norm_backward(xp.ones((1, 2, 1, 1)), cache)
    np.testing.assert_allclose(asnumpy(dx).ravel(), [1.0, 1 / np.sqrt(1.25)], rtol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_frozen_bn_gradcheck(xp, seed):
    rng = np.random.default_rng(seed + 100)  # not the seed of check_layer's dout
    x = xp.asarray(rng.standard_normal((2, 3, 4, 4)))
    consts = [xp.asarray(v) for v in (rng.standard_normal(3), rng.standard_normal(3),
                                      rng.standard_normal(3), rng.uniform(0.5, 2, 3))]
    errs = check_layer(frozen_batch_norm_forward, frozen_batch_norm_backward, [x] + consts,
                       wrt=[0], seed=seed)
    print("frozen_batch_norm grad rel error", errs)
    assert max(errs) < 1e-6


def test_frozen_bn_module_buffers(xp):
    m = FrozenBatchNorm2d(3)
    assert m.params == {} and m.grads == {}
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    m.to(backend=backend_name(xp))
    x = xp.asarray(np.random.default_rng(0).standard_normal((1, 3, 2, 2)), dtype=xp.float32)
    # default statistics: identity up to eps
    np.testing.assert_allclose(asnumpy(m(x)), asnumpy(x) / np.sqrt(1 + 1e-5), rtol=1e-6)
    assert m.backward(xp.ones(x.shape)).shape == x.shape


def test_empty_batch(xp):
    out, cache = group_norm_forward(xp.zeros((0, 4, 2, 2)), xp.ones(4), xp.zeros(4), 2)
    assert out.shape == (0, 4, 2, 2)
    dx, dw, db = group_norm_backward(out, cache)
    assert dx.shape == (0, 4, 2, 2) and float(abs(dw).sum()) == 0 and db.shape == (4,)
    x0 = xp.zeros((0, 3, 2, 2))
    o, c = frozen_batch_norm_forward(x0, xp.ones(3), xp.zeros(3), xp.zeros(3), xp.ones(3))
    assert frozen_batch_norm_backward(o, c).shape == (0, 3, 2, 2)


def test_group_norm_torch_parity(xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 5, 6)) * 2 + 3).astype(np.float32)
    w, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    out, cache = group_norm_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), 4)
    dx, dw, db = group_norm_backward(xp.asarray(d), cache)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = torch.nn.functional.group_norm(tx, 4, tw, tb, eps=1e-5)
    ot.backward(torch.tensor(d))
    np.testing.assert_allclose(asnumpy(out), ot.detach().numpy(), rtol=1e-4, atol=1e-5)
    for ours, t in [(dx, tx), (dw, tw), (db, tb)]:
        np.testing.assert_allclose(asnumpy(ours), t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_frozen_bn_torch_parity(xp):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(0)
    m_t = ops.FrozenBatchNorm2d(4)
    state = {
        "weight": rng.standard_normal(4), "bias": rng.standard_normal(4),
        "running_mean": rng.standard_normal(4), "running_var": rng.uniform(0.1, 2, 4),
    }
    state = {k: v.astype(np.float32) for k, v in state.items()}
    m_t.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    ours = FrozenBatchNorm2d(4)
    ours.load_state_dict(state)
    assert set(ours.state_dict()) == set(m_t.state_dict())
    ours.to(backend=backend_name(xp))
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    ot = m_t(t)
    ot.backward(torch.tensor(d))
    out = ours(xp.asarray(x))
    dx = ours.backward(xp.asarray(d))
    np.testing.assert_allclose(asnumpy(out), ot.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(asnumpy(dx), t.grad.numpy(), rtol=1e-5, atol=1e-5)
