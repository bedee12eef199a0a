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
