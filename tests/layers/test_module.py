import numpy as np
import pytest

from npmaskrcnn.backend import Generator
from npmaskrcnn.engine.weight_files import load_module, save_module
from npmaskrcnn.layers.init import kaiming_uniform
from npmaskrcnn.layers.module import Module, Sequential


class Scale(Module):
    """y = x * weight + bias, elementwise over the last axis (a test module)."""

    def __init__(self, n, seed=0):
        super().__init__()
        rng = Generator(seed, backend="numpy")
        self.add_param("weight", kaiming_uniform(rng, (n,), fan_in=n, dtype=np.float64))
        self.add_param("bias", np.zeros(n))
        self.buffers["running_mean"] = np.zeros(n)

    def forward(self, x):
        self.push(x)
        return x * self.params["weight"] + self.params["bias"]

    def backward(self, dout):
        x = self.pop()
        self.accumulate("weight", (dout * x).sum(0))
        self.accumulate("bias", dout.sum(0))
        return dout * self.params["weight"]


class Net(Module):
    def __init__(self):
        super().__init__()
        self.body = Sequential(Scale(3, 0), Scale(3, 1))
        self.head = Scale(3, 2)

    def forward(self, x):
        return self.head(self.body(x))

    def backward(self, dout):
        return self.body.backward(self.head.backward(dout))


def test_names_follow_pytorch_state_dict_keys():
    net = Net()
    assert list(net.parameters()) == [
        "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
        "head.weight", "head.bias",
    ]
    assert "body.0.running_mean" in net.state_dict()
    assert net.num_parameters() == 18


def test_shared_module_accumulates_over_two_calls():
    m = Scale(2)
    x1, x2 = np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]])
    m(x1)
    m(x2)
    m.backward(np.ones((1, 2)))  # pops x2
    m.backward(np.ones((1, 2)))  # pops x1
    np.testing.assert_allclose(m.grads["weight"], [4.0, 6.0])
    np.testing.assert_allclose(m.grads["bias"], [2.0, 2.0])
    with pytest.raises(RuntimeError, match="without a matching forward"):
        m.backward(np.ones((1, 2)))


def test_zero_grad_and_freeze():
    net = Net()
    net(np.ones((1, 3)))
    net.backward(np.ones((1, 3)))
    assert np.abs(net.head.grads["weight"]).sum() > 0
    net.zero_grad()
    assert all(np.all(g == 0) for g in net.gradients().values())
    net.body.freeze()
    net(np.ones((1, 3)))
    net.backward(np.ones((1, 3)))
    assert np.all(net.body[0].grads["weight"] == 0)
    assert np.abs(net.head.grads["weight"]).sum() > 0
    assert set(net.parameters(trainable_only=True)) == {"head.weight", "head.bias"}


def test_eval_mode_keeps_no_cache():
    net = Net().eval()
    assert not net.head.training
    net(np.ones((1, 3)))
    assert net.head._caches == []


def test_state_dict_round_trip_npz(tmp_path):
    a, b = Net(), Net()
    b.head.params["weight"] += 1.0
    path = tmp_path / "w.npz"
    save_module(a, path)
    load_module(b, path)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])


def test_load_state_dict_names_the_bad_key():
    net = Net()
    sd = {k: v.copy() for k, v in net.state_dict().items()}
    sd["head.weight"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"'head.weight'.*\(4,\).*\(3,\)"):
        net.load_state_dict(sd)
    sd = {k: v.copy() for k, v in net.state_dict().items()}
    del sd["head.bias"]
    sd["head.extra"] = np.zeros(1)
    with pytest.raises(KeyError, match="head.bias.*head.extra"):
        net.load_state_dict(sd)
    net.load_state_dict(sd | {"head.bias": np.zeros(3)}, strict=False)


def test_load_rejects_a_file_that_is_not_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_module(Net(), bad)


def test_to_casts_params_grads_buffers():
    net = Net().to(np.float32)
    assert all(v.dtype == np.float32 for v in net.state_dict().values())
    assert all(g.dtype == np.float32 for g in net.gradients().values())


def test_sequential_backward_reverses_order():
    seq = Sequential(Scale(2, 0), Scale(2, 1))
    x = np.array([[1.0, -2.0]])
    seq(x)
    dx = seq.backward(np.ones((1, 2)))
    w0, w1 = seq[0].params["weight"], seq[1].params["weight"]
    np.testing.assert_allclose(dx, w0 * w1 * np.ones((1, 2)))
