import os
import tempfile

import numpy as np
import pytest

from npmaskrcnn.engine.optim import SGD, AdamW
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


def _torch_twin(torch, m):
    """torch tensors holding the same values as ``m``'s weight and bias."""
    return (torch.tensor(m.params["weight"].copy(), requires_grad=True),
            torch.tensor(m.params["bias"].copy(), requires_grad=True))


def _step_both(m, opt, twin, topt, gw, gb):
    """One step of ours and one of torch's on the same gradients: the parameters agree."""
    m.grads["weight"][...] = gw
    m.grads["bias"][...] = gb
    opt.step()
    twin[0].grad, twin[1].grad = twin[0].new_tensor(gw), twin[1].new_tensor(gb)
    topt.step()
    np.testing.assert_allclose(m.params["weight"], twin[0].detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.params["bias"], twin[1].detach().numpy(), rtol=1e-12)


def test_sgd_matches_torch():
    torch = pytest.importorskip("torch")
    m = TwoParams()
    tw, tb = twin = _torch_twin(torch, m)
    topt = torch.optim.SGD(
        [{"params": [tw], "weight_decay": 1e-3}, {"params": [tb], "weight_decay": 0.0}],
        lr=0.05, momentum=0.9)
    opt = SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        _step_both(m, opt, twin, topt, rng.standard_normal((2, 2)), rng.standard_normal(2))


def _many_on_the_stand_in():
    """40 weights and 40 biases, on the GPU stand-in."""
    from npmaskrcnn import cpupy

    class Many(Module):
        def __init__(self):
            super().__init__()
            for i in range(40):
                self.add_param(f"w{i}", cpupy.asarray(np.full((3, 2), float(i))))
                self.add_param(f"b{i}", cpupy.asarray(np.full(2, -float(i))))

    return Many()


def _backward_leaves_gradients(m):
    """A backward's own arrays, by reference (Module.accumulate)."""
    from npmaskrcnn import cpupy

    for i in range(40):
        m.accumulate(f"w{i}", cpupy.asarray(np.full((3, 2), 1.0)))
        m.accumulate(f"b{i}", cpupy.asarray(np.full(2, 2.0)))


def test_parameters_become_views_of_one_buffer_and_a_step_is_a_few_ops():
    """SGD moves the parameters into one flat buffer (the modules keep views of it); the
    gradients a backward leaves are gathered in one concatenation; on the GPU stand-in a
    step is a handful of launches whatever the number of parameters."""
    from npmaskrcnn import cpupy

    m = _many_on_the_stand_in()
    opt = SGD(m, lr=0.5, momentum=0.9, weight_decay=0.1)
    assert opt.params.shape == (40 * 8,)
    _backward_leaves_gradients(m)
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


def test_adamw_matches_torch():
    """Decoupled decay on the weight only, bias correction, and a learning rate that
    changes between steps (warm-up, step decay), against torch.optim.AdamW in float64."""
    torch = pytest.importorskip("torch")
    m = TwoParams()
    tw, tb = twin = _torch_twin(torch, m)
    topt = torch.optim.AdamW(
        [{"params": [tw], "weight_decay": 0.05}, {"params": [tb], "weight_decay": 0.0}],
        lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    opt = AdamW(m, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)
    rng = np.random.default_rng(0)
    for i, lr in enumerate((0.001, 0.005, 0.01, 0.01, 0.001, 0.0001)):
        opt.set_lr(lr)
        for group in topt.param_groups:
            group["lr"] = lr
        _step_both(m, opt, twin, topt, rng.standard_normal((2, 2)) * 10.0 ** (i - 3),
                   rng.standard_normal(2))
    np.testing.assert_allclose(opt.state_dict()["buffers"]["exp_avg_sq/weight"],
                               topt.state[tw]["exp_avg_sq"].numpy(), rtol=1e-12)


def test_adamw_by_hand_first_step_moves_every_parameter_by_lr():
    """After bias correction Adam's first step is lr * g / (|g| + eps): lr times the
    gradient's sign, whatever its scale; the decay shrinks the weight by lr * wd first."""
    m = TwoParams()
    opt = AdamW(m, lr=0.1, weight_decay=0.5)
    w0, b0 = m.params["weight"].copy(), m.params["bias"].copy()
    m.grads["weight"][...] = np.array([[1e-3, -2.0], [50.0, -1e-2]])
    m.grads["bias"][...] = np.array([-3.0, 4.0])
    opt.step()
    np.testing.assert_allclose(m.params["weight"],
                               w0 * (1 - 0.1 * 0.5) - 0.1 * np.array([[1, -1], [1, -1]]),
                               atol=1e-5)  # eps: 1e-3 / (1e-3 + 1e-8) is 1 - 1e-5
    np.testing.assert_allclose(m.params["bias"], b0 - 0.1 * np.array([-1, 1]), atol=1e-5)


def test_adamw_resumes_where_it_stopped():
    """The moments and the step count (bias correction) go through a checkpoint: a run
    stopped after two steps and resumed takes the same third step as one never stopped;
    without the step count the third step differs."""
    from npmaskrcnn.engine.checkpoint import load_checkpoint, save_checkpoint

    def grads(m, i):
        m.grads["weight"][...] = np.array([[1.0, -2.0], [0.5, 3.0]]) * (i + 1)
        m.grads["bias"][...] = np.array([0.3, -0.1]) / (i + 1)

    a = TwoParams()
    oa = AdamW(a, lr=0.1)
    for i in range(3):
        grads(a, i)
        oa.step()
    b = TwoParams()
    ob = AdamW(b, lr=0.1)
    for i in range(2):
        grads(b, i)
        ob.step()
    with tempfile.TemporaryDirectory() as d:
        path = save_checkpoint(os.path.join(d, "c.npz"), b, ob, {})
        c = TwoParams()
        oc = AdamW(c, lr=0.1)
        load_checkpoint(path, c, oc)
    assert oc.steps == 2
    grads(c, 2)
    oc.step()
    np.testing.assert_array_equal(c.params["weight"], a.params["weight"])
    np.testing.assert_array_equal(c.params["bias"], a.params["bias"])
    oc.steps = 0  # as if the count were lost: the bias correction of a first step
    grads(c, 3)
    before = c.params["weight"].copy()
    oc.step()
    grads(a, 3)
    oa.step()
    assert np.abs(c.params["weight"] - before).max() > 0
    assert not np.allclose(c.params["weight"], a.params["weight"], rtol=1e-6)


def test_adamw_step_is_a_few_ops_on_the_stand_in():
    from npmaskrcnn import cpupy

    m = _many_on_the_stand_in()
    opt = AdamW(m, lr=0.5, weight_decay=0.1)
    _backward_leaves_gradients(m)
    opt.step()  # the first step makes the buffers
    _backward_leaves_gradients(m)
    with cpupy.counting() as c:
        opt.step()
    assert c.ops <= 20 and c.syncs == 0, c.as_dict()
