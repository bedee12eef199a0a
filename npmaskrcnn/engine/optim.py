"""SGD with momentum and weight decay, exactly as ``torch.optim.SGD``.

For each parameter p with gradient g (dampening 0, no Nesterov)::

    g   = g + weight_decay * p            # L2 penalty folded into the gradient
    buf = g                  (first step)
    buf = momentum * buf + g (later steps)
    p   = p - lr * buf

Parameters are given in *groups* so that norms and biases can have weight decay
0 (the usual detection recipe). ``step`` updates the arrays in place, so the
module's ``params`` dict keeps pointing at the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backend import asnumpy, get_xp


@dataclass
class ParamGroup:
    """A set of parameters sharing hyperparameters; ``lr`` is scaled by schedules."""

    names: list[str]
    params: list
    grads: list
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    buffers: list = field(default_factory=list)


def split_decay_groups(module, no_decay_ndim: int = 1):
    """Split trainable parameters into (decayed, not decayed) name lists.

    Parameters with ``ndim <= no_decay_ndim`` (biases, norm weights) get no weight
    decay: decaying a GroupNorm scale toward 0 fights the normalisation.
    """
    decay, no_decay = [], []
    for name, p in module.parameters(trainable_only=True).items():
        (no_decay if p.ndim <= no_decay_ndim else decay).append(name)
    return decay, no_decay


class SGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` over Module parameters.

    Args:
        module: the model; its trainable parameters and gradients are used.
        lr: base learning rate.
        momentum: momentum factor (0 disables the buffer).
        weight_decay: L2 factor for parameters of ndim >= 2.
        norm_weight_decay: L2 factor for biases and norm parameters (default 0).
    """

    def __init__(self, module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 norm_weight_decay: float = 0.0):
        params = module.parameters(trainable_only=True)
        grads = module.gradients(trainable_only=True)
        decay, no_decay = split_decay_groups(module)
        self.groups: list[ParamGroup] = []
        for names, wd in ((decay, weight_decay), (no_decay, norm_weight_decay)):
            if names:
                self.groups.append(ParamGroup(
                    names=names, params=[params[n] for n in names],
                    grads=[grads[n] for n in names], lr=lr, momentum=momentum,
                    weight_decay=wd, buffers=[None] * len(names)))
        self.base_lr = lr

    def set_lr(self, lr: float) -> None:
        for g in self.groups:
            g.lr = lr

    def step(self) -> None:
        for group in self.groups:
            for i, (p, g) in enumerate(zip(group.params, group.grads)):
                d = g + group.weight_decay * p if group.weight_decay else g
                if group.momentum:
                    buf = group.buffers[i]
                    if buf is None:
                        buf = group.buffers[i] = d.copy()
                    else:
                        buf *= group.momentum
                        buf += d
                    d = buf
                p -= group.lr * d

    def state_dict(self) -> dict:
        """Momentum buffers (as NumPy arrays, None before the first step) and lrs."""
        return {
            "lr": [g.lr for g in self.groups],
            "buffers": {
                n: (None if b is None else asnumpy(b))
                for g in self.groups for n, b in zip(g.names, g.buffers)
            },
        }

    def load_state_dict(self, state: dict) -> None:
        for g, lr in zip(self.groups, state["lr"]):
            g.lr = lr
        for g in self.groups:
            for i, n in enumerate(g.names):
                b = state["buffers"].get(n)
                g.buffers[i] = None if b is None else get_xp(g.params[i]).asarray(b).copy()
