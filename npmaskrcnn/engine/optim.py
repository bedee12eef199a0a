"""SGD with momentum and weight decay, exactly as ``torch.optim.SGD``, on one flat buffer
(and ``AdamW``, as ``torch.optim.AdamW``, on the same buffer).

For each parameter p with gradient g (dampening 0, no Nesterov)::

    g   = g + weight_decay * p            # L2 penalty folded into the gradient
    buf = g                  (first step)
    buf = momentum * buf + g (later steps)
    p   = p - lr * buf

The update is elementwise, so it does not care where one parameter ends and the next
begins. ``SGD`` therefore moves every trainable parameter into one flat buffer and leaves
in each module's ``params`` a *view* of its slice (likewise the gradients): the module
computes and accumulates exactly as before, and a step is a handful of whole-buffer
operations instead of a few per parameter -- on a GPU, a handful of kernel launches
instead of hundreds ("multi-tensor" optimisers such as ``torch.optim.SGD(foreach=True)``
and Apex's fused SGD do the same). Parameters are laid out by *group* (norms and biases
get weight decay 0, the usual detection recipe), each group one contiguous range.

Build the optimiser after the model is on its final backend and dtype (``Module.to``
replaces the arrays, which would no longer be views of the buffer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..backend import asnumpy, get_xp


@dataclass
class ParamGroup:
    """A set of parameters sharing hyperparameters: the range [start, stop) of the buffer."""

    names: list[str]
    start: int
    stop: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    shapes: list = field(default_factory=list)  # each parameter's shape, in ``names`` order


def split_decay_groups(module, no_decay_ndim: int = 1):
    """Split trainable parameters into (decayed, not decayed) name lists.

    Parameters with ``ndim <= no_decay_ndim`` (biases, norm weights) get no weight
    decay: decaying a GroupNorm scale toward 0 fights the normalisation.
    """
    decay, no_decay = [], []
    for name, p in module.parameters(trainable_only=True).items():
        (no_decay if p.ndim <= no_decay_ndim else decay).append(name)
    return decay, no_decay


def flatten_parameters(module, names: list[str]):
    """Move the named trainable parameters (and gradients) into two flat buffers.

    Each ``params[key]`` / ``grads[key]`` of the owning module becomes a view
    ``buffer[start:stop].reshape(shape)`` of the new buffers, in the order of ``names``;
    values are copied. The root module remembers the gradient buffer, so that
    ``zero_grad`` clears it in one operation.

    Returns:
        (flat_params, flat_grads), each (P,) with P the total number of elements.
    Raises:
        ValueError: the parameters do not share one dtype and backend.
    """
    owners = {n: (m, k) for n, m, k in module.named_parameters(trainable_only=True)}
    arrays = [owners[n][0].params[owners[n][1]] for n in names]
    if len({(a.dtype, type(a)) for a in arrays}) > 1:
        raise ValueError("SGD: every trainable parameter must share one dtype and backend; "
                         f"found {sorted({(str(a.dtype), type(a).__name__) for a in arrays})}")
    xp = get_xp(*arrays)
    dtype = arrays[0].dtype if arrays else np.float32
    total = sum(int(a.size) for a in arrays)
    flat_params = xp.empty((total,), dtype=dtype)
    flat_grads = xp.zeros((total,), dtype=dtype)
    start = 0
    for name, a in zip(names, arrays):
        m, k = owners[name]
        stop = start + int(a.size)
        flat_params[start:stop] = a.reshape(-1)
        m.params[k] = flat_params[start:stop].reshape(a.shape)
        m.grads[k] = m._zero_grads[k] = flat_grads[start:stop].reshape(a.shape)
        m._flat_keys = m._flat_keys | {k}
        start = stop
    module._flat_grads = flat_grads
    return flat_params, flat_grads


class FlatOptimizer:
    """What ``SGD`` and ``AdamW`` share: the flat buffers, the decay groups, the gathering
    of the gradients, the learning rate, gradient clipping and the checkpoint state.

    A subclass writes ``step`` and names its per-parameter state in ``state_keys``: each
    state is one more flat (P,) buffer (None until the first step), and the value is the
    key of one parameter's slice of it in a checkpoint (``"{}"``: the parameter's name).
    """

    state_keys: dict = {}

    def __init__(self, module, lr: float, weight_decay: float = 0.0,
                 norm_weight_decay: float = 0.0, momentum: float = 0.0):
        decay, no_decay = split_decay_groups(module)
        self.params, self.grads = flatten_parameters(module, decay + no_decay)
        shapes = dict((n, tuple(p.shape))
                      for n, p in module.parameters(trainable_only=True).items())
        self.groups: list[ParamGroup] = []
        start = 0
        for names, wd in ((decay, weight_decay), (no_decay, norm_weight_decay)):
            if names:
                stop = start + sum(math.prod(shapes[n]) for n in names)
                self.groups.append(ParamGroup(names=names, start=start, stop=stop, lr=lr,
                                              momentum=momentum, weight_decay=wd,
                                              shapes=[shapes[n] for n in names]))
                start = stop
        self.state = dict.fromkeys(self.state_keys)  # (P,) buffers, made by the first step
        self.steps = 0  # updates made so far (AdamW's bias correction counts them)
        owners = {n: (m, k) for n, m, k in module.named_parameters(trainable_only=True)}
        self._order = [owners[n] for n in decay + no_decay]  # (module, key), buffer order
        self._gathered = False  # this step's gradients are in the flat buffer
        self._scratch = None  # (P,) the step's products, made by the first step

    def gradient(self):
        """Every trainable gradient as one (P,) array, in the buffer's order.

        Backward passes leave their own arrays in ``grads`` (``Module.accumulate``);
        they are gathered here with one concatenation into the flat buffer (on a GPU,
        one launch for many small arrays). If no gradient was replaced -- someone wrote
        into the flat buffer's views -- the buffer already holds them.
        """
        if not self._gathered:
            grads = [m.grads[k] for m, k in self._order]
            if not all(g is m._zero_grads[k] for g, (m, k) in zip(grads, self._order)):
                # into the flat buffer itself (a gradient that is its own view copies onto
                # itself): no new array of the model's size each step
                get_xp(self.params).concatenate([g.reshape(-1) for g in grads], out=self.grads)
            self._gathered = True
        return self.grads

    def set_lr(self, lr: float) -> None:
        for g in self.groups:
            g.lr = lr

    def _begin_step(self):
        """The gathered gradients, the state buffers and the scratch buffer, made on the
        first step; counts the step."""
        grads = self.gradient()
        self._gathered = False  # the next step gathers the next gradients
        xp = get_xp(self.params)
        for name in self.state:
            if self.state[name] is None:
                self.state[name] = xp.zeros_like(self.params)
        if self._scratch is None:
            self._scratch = xp.empty_like(self.params)
        self.steps += 1
        return grads

    def clip_grad_norm(self, max_norm: float):
        """Scale all gradients so that their global L2 norm is at most ``max_norm``.

        As ``torch.nn.utils.clip_grad_norm_``: ``g *= min(1, max_norm / (norm + 1e-6))``.
        Computed on the device without reading the norm back (no host sync).

        Returns:
            the norm before clipping, a 0-d array of the gradients' backend.
        """
        xp = get_xp(self.params)
        grads = self.gradient()
        norm = xp.sqrt((grads.astype(np.float64) ** 2).sum())
        grads *= xp.minimum(max_norm / (norm + 1e-6), 1.0).astype(grads.dtype)
        return norm

    def _slices(self):
        """(name, shape, start, stop) of every parameter in the flat buffers."""
        for g in self.groups:
            offset = g.start
            for name, shape in zip(g.names, g.shapes):
                size = math.prod(shape)
                yield name, shape, offset, offset + size
                offset += size

    def state_dict(self) -> dict:
        """The groups' learning rates, the number of steps, and each state buffer per
        parameter as NumPy arrays under its checkpoint key (None before the first step)."""
        buffers = {}
        for state, key in self.state_keys.items():
            host = None if self.state[state] is None else asnumpy(self.state[state])
            for name, shape, start, stop in self._slices():
                buffers[key.format(name)] = (None if host is None
                                             else host[start:stop].reshape(shape).copy())
        return {"lr": [g.lr for g in self.groups], "buffers": buffers, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; a state none of whose parameters were
        saved starts again from nothing (None)."""
        for g, lr in zip(self.groups, state["lr"]):
            g.lr = lr
        self.steps = int(state.get("steps", 0))
        saved = state["buffers"]
        for name, key in self.state_keys.items():
            slices = [(saved.get(key.format(n)), start, stop)
                      for n, _, start, stop in self._slices()]
            if all(array is None for array, _, _ in slices):
                self.state[name] = None
                continue
            host = np.zeros(self.params.shape, dtype=self.params.dtype)
            for array, start, stop in slices:
                if array is not None:
                    host[start:stop] = np.asarray(array).reshape(-1)
            self.state[name] = get_xp(self.params).asarray(host)


class SGD(FlatOptimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` over Module parameters.

    Args:
        module: the model; its trainable parameters and gradients are used (and moved
            into one flat buffer, see the module docstring).
        lr: base learning rate.
        momentum: momentum factor (0 disables the buffer).
        weight_decay: L2 factor for parameters of ndim >= 2.
        norm_weight_decay: L2 factor for biases and norm parameters (default 0).
    """

    state_keys = {"momentum_buffer": "{}"}  # a checkpoint's optim/<parameter name>

    def __init__(self, module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 norm_weight_decay: float = 0.0):
        super().__init__(module, lr, weight_decay, norm_weight_decay, momentum)
        if not momentum:
            self.state_keys = {}  # no buffer to keep
            self.state = {}

    def step(self) -> None:
        """One update of every parameter: a few operations per group on its range.

        torch's update, ``d = g + wd * p``, ``buf = momentum * buf + d``, ``p -= lr * buf``,
        with every product written into one scratch buffer kept from step to step: for a
        ResNet-50 each new temporary would be 170 MB of fresh memory, and on a CPU filling
        fresh pages costs more than the arithmetic.
        """
        first = self.state.get("momentum_buffer") is None
        grads = self._begin_step()
        xp = get_xp(self.params)
        for group in self.groups:
            p = self.params[group.start:group.stop]
            d = grads[group.start:group.stop]
            t = self._scratch[group.start:group.stop]
            if group.weight_decay:
                xp.multiply(p, group.weight_decay, out=t)
                t += d  # wd * p + g: the same sum as g + wd * p
                d = t
            if group.momentum:
                buf = self.state["momentum_buffer"][group.start:group.stop]
                if first:
                    buf[...] = d
                else:
                    buf *= group.momentum
                    buf += d
                d = buf
            xp.multiply(d, group.lr, out=t)
            p -= t


class AdamW(FlatOptimizer):
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay)`` over Module parameters.

    Adam scales each parameter's step by a running estimate of its gradient's size, so
    every parameter moves at about ``lr`` per step whatever the scale of its gradient; the
    weight decay is *decoupled* (Loshchilov & Hutter, 2019): it shrinks the weights
    directly instead of being added to the gradient, where Adam's scaling would undo it.
    With t the number of steps so far (torch's ``amsgrad=False``)::

        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g            # first moment, "exp_avg"
        v = beta2 * v + (1 - beta2) * g**2         # second moment, "exp_avg_sq"
        p = p - lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)

    The moments are updated over the whole flat buffer at once; only the decay and the
    step size are per group.

    Args:
        module: the model (its parameters move into one flat buffer, as for ``SGD``).
        lr: base learning rate; betas, eps: as torch's.
        weight_decay: decoupled decay of parameters of ndim >= 2.
        norm_weight_decay: decoupled decay of biases and norm parameters (default 0).
    """

    state_keys = {"exp_avg": "exp_avg/{}", "exp_avg_sq": "exp_avg_sq/{}"}

    def __init__(self, module, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, norm_weight_decay: float = 0.0):
        super().__init__(module, lr, weight_decay, norm_weight_decay)
        self.betas, self.eps = tuple(betas), eps

    def step(self) -> None:
        """One AdamW update: about a dozen whole-buffer operations, and three per group."""
        grads = self._begin_step()
        xp = get_xp(self.params)
        (b1, b2), t = self.betas, self._scratch
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        m *= b1
        xp.multiply(grads, 1 - b1, out=t)
        m += t
        v *= b2
        xp.multiply(grads, grads, out=t)
        t *= 1 - b2
        v += t
        xp.sqrt(v, out=t)  # the denominator sqrt(v / (1 - beta2**t)) + eps
        t /= math.sqrt(1 - b2 ** self.steps)
        t += self.eps
        xp.divide(m, t, out=t)
        for group in self.groups:
            p = self.params[group.start:group.stop]
            if group.weight_decay:
                p *= 1 - group.lr * group.weight_decay
            update = t[group.start:group.stop]
            update *= group.lr / (1 - b1 ** self.steps)
            p -= update


# the optimisers ``TrainConfig.optimizer`` names, with the learning rate and weight decay
# they default to: SGD's are the paper's (3.1, for 16 images a batch); AdamW's are the
# usual 1e-3 and a decay of 0.05, as vision transformers and ConvNeXt train with
OPTIMIZERS = {"sgd": (SGD, 0.02, 1e-4), "adamw": (AdamW, 1e-3, 0.05)}


def make_optimizer(module, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    """``OPTIMIZERS[name]`` over ``module``'s parameters (``momentum``: SGD's only).

    Raises:
        ValueError: ``name`` is not one of ``OPTIMIZERS``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r}: not one of {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name][0]
    extra = {"momentum": momentum} if cls is SGD else {}
    return cls(module, lr=lr, weight_decay=weight_decay, **extra)
