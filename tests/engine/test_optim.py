import numpy as np
import pytest

from npmaskrcnn.engine.optim import SGD
from npmaskrcnn.layers.module import Module


class TwoParams(Module):
    def __init__(self):
        super().__init__()
        self.add_param("weight", np.array([[1.0, -2.0], [0.5, 3.0]]))
        self.add_param("bias", np.array([0.1, -0.2]))


def test_sgd_by_hand():
    m = TwoParams()
    opt = SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01)
    w0 = m.params["weight"].copy()
    g = np.ones((2, 2))
    m.grads["weight"][...] = g
    m.grads["bias"][...] = 1.0
    opt.step()
    d1 = g + 0.01 * w0
    np.testing.assert_allclose(m.params["weight"], w0 - 0.1 * d1)
    np.testing.assert_allclose(m.params["bias"], [0.1 - 0.1, -0.2 - 0.1])  # no decay on biases
    w1 = m.params["weight"].copy()
    opt.step()
    d2 = 0.9 * d1 + (g + 0.01 * w1)
    np.testing.assert_allclose(m.params["weight"], w1 - 0.1 * d2)


def test_sgd_state_round_trip():
    a, b = TwoParams(), TwoParams()
    oa, ob = SGD(a, lr=0.1), SGD(b, lr=0.1)
    for m in (a, b):
        m.grads["weight"][...] = 0.5
        m.grads["bias"][...] = -0.5
    oa.step()
    ob.load_state_dict(oa.state_dict())
    b.load_state_dict(a.state_dict())
    oa.step()
    ob.step()
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])


def test_sgd_matches_torch():
    torch = pytest.importorskip("torch")
    m = TwoParams()
    tw = torch.tensor(m.params["weight"].copy(), requires_grad=True)
    tb = torch.tensor(m.params["bias"].copy(), requires_grad=True)
    topt = torch.optim.SGD(
        [{"params": [tw], "weight_decay": 1e-3}, {"params": [tb], "weight_decay": 0.0}],
        lr=0.05, momentum=0.9)
    opt = SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        gw, gb = rng.standard_normal((2, 2)), rng.standard_normal(2)
        m.grads["weight"][...] = gw
        m.grads["bias"][...] = gb
        opt.step()
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
    np.testing.assert_allclose(m.params["weight"], tw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.params["bias"], tb.detach().numpy(), rtol=1e-12)


def test_parameters_become_views_of_one_buffer_and_a_step_is_a_few_ops():
    """SGD moves the parameters into one flat buffer (the modules keep views of it); the
    gradients a backward leaves are gathered in one concatenation; on the GPU stand-in a
    step is a handful of launches whatever the number of parameters."""
    from npmaskrcnn import cpupy

    class Many(Module):
        def __init__(self):
            super().__init__()
            for i in range(40):
                self.add_param(f"w{i}", cpupy.asarray(np.full((3, 2), float(i))))
                self.add_param(f"b{i}", cpupy.asarray(np.full(2, -float(i))))

    m = Many()
    opt = SGD(m, lr=0.5, momentum=0.9, weight_decay=0.1)
    assert opt.params.shape == (40 * 8,)
    for i in range(40):  # a backward's own arrays, by reference (Module.accumulate)
        m.accumulate(f"w{i}", cpupy.asarray(np.full((3, 2), 1.0)))
        m.accumulate(f"b{i}", cpupy.asarray(np.full(2, 2.0)))
    with cpupy.counting() as c:
        opt.step()
    assert c.ops <= 12, c.as_dict()
    # the module's arrays are views: updated in place, weight decay on weights only
    np.testing.assert_allclose(m.params["w3"].get(), 3 - 0.5 * (1 + 0.1 * 3))
    np.testing.assert_allclose(m.params["b3"].get(), -3 - 0.5 * 2)
    with cpupy.counting() as c:
        m.zero_grad()
    assert c.ops == 1 and all(float(abs(g).sum()) == 0 for g in m.gradients().values())


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    m = TwoParams()
    opt = SGD(m, lr=0.1)
    gw, gb = np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([12.0, 0.0])  # norm 13
    m.grads["weight"][...] = gw
    m.grads["bias"][...] = gb
    norm = opt.clip_grad_norm(6.5)
    tw, tb = torch.tensor(gw), torch.tensor(gb)
    tw.grad, tb.grad = tw.clone(), tb.clone()
    tnorm = torch.nn.utils.clip_grad_norm_([tw, tb], 6.5)
    assert abs(float(norm) - float(tnorm)) < 1e-12
    np.testing.assert_allclose(opt.gradient(), np.concatenate([tw.grad.numpy().ravel(),
                                                               tb.grad.numpy()]), rtol=1e-12)
    w0 = m.params["weight"].copy()
    opt.step()  # the step uses the clipped gradients
    np.testing.assert_allclose(m.params["weight"], w0 - 0.1 * tw.grad.numpy(), rtol=1e-12)
