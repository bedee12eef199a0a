"""``Module``: a thin holder of named parameters around the functional layer pairs.

There is no autograd engine. A module

- holds ``params`` and ``grads`` (dicts of arrays, same keys) and ``buffers``
  (arrays that are saved but not trained, e.g. FrozenBatchNorm statistics);
- in ``forward(x)`` calls the functional ``op_forward`` and *pushes* its cache;
- in ``backward(dout)`` *pops* the cache, calls ``op_backward``, accumulates the
  parameter gradients into ``grads`` (a shared module used several times, like the
  RPN head on every FPN level, sums its gradients) and returns the input gradient.

Gradients are accumulated by reference: after ``zero_grad`` each ``grads[k]`` is a
zero array, the first ``accumulate`` simply puts the backward's own array there, and
only a second one adds (``grads[k] + grad``). No copy, no in-place sum: on a GPU that
saves a launch per parameter and step.

Caches form a stack, so calling ``forward`` k times and then ``backward`` k times in
reverse order is correct by construction. A composite module calls its children's
``backward`` in exactly the reverse order of its ``forward``.

Names: a child registered as attribute ``layer1`` whose own child ``0`` has the
parameter ``weight`` is reported as ``layer1.0.weight`` — PyTorch's ``state_dict``
keys, so weights map one-to-one onto torchvision's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from ..backend import get_xp, to_backend


class Module:
    """Base class: named params/grads/buffers, children, train/eval, state dicts."""

    def __init__(self) -> None:
        object.__setattr__(self, "_children", OrderedDict())
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}
        self.training = True
        self.requires_grad = True  # False: frozen (no grads accumulated, not optimised)
        self._caches: list = []
        self.keeps_cache = True  # False: no backward ever runs through it (frozen bottom)
        self._zero_grads: dict = {}  # key -> the zero array ``grads[key]`` is reset to
        self._flat_keys: frozenset = frozenset()  # zero arrays that view a flat buffer
        self._flat_grads = None  # on the root: that buffer (set by ``optim.SGD``)

    # ----------------------------------------------------------------- structure
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def add_module(self, name: str, module: Module) -> Module:
        """Register ``module`` under ``name`` (which may be a digit, as in Sequential)."""
        self._children[str(name)] = module
        object.__setattr__(self, str(name), module)
        return module

    def children(self) -> Iterator[tuple[str, Module]]:
        yield from self._children.items()

    def modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, with dotted names, depth first."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.modules(f"{prefix}.{name}" if prefix else name)

    def add_param(self, name: str, value) -> None:
        """Register a trainable parameter and its zero gradient."""
        self.params[name] = value
        self.grads[name] = self._zero_grads[name] = get_xp(value).zeros_like(value)

    # ----------------------------------------------------------------- naming
    def named_parameters(self, trainable_only: bool = False):
        """(full name, module, key) for every parameter, in registration order."""
        for prefix, m in self.modules():
            if trainable_only and not m.requires_grad:
                continue
            for k in m.params:
                yield (f"{prefix}.{k}" if prefix else k), m, k

    def parameters(self, trainable_only: bool = False) -> dict:
        """Full name -> parameter array (the arrays themselves, not copies)."""
        return {n: m.params[k] for n, m, k in self.named_parameters(trainable_only)}

    def gradients(self, trainable_only: bool = False) -> dict:
        """Full name -> gradient array (the arrays themselves, not copies)."""
        return {n: m.grads[k] for n, m, k in self.named_parameters(trainable_only)}

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters().values())

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> Module:
        for _, m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def freeze(self) -> Module:
        """Stop training this module and its children (as ``requires_grad_(False)``)."""
        for _, m in self.modules():
            m.requires_grad = False
        return self

    def zero_grad(self) -> None:
        """Reset every trainable gradient to zero and drop the forward caches.

        Each ``grads[k]`` goes back to its zero array. Someone may have written into a
        zero array in place (``grads[k][...] = g``), so they are cleared too: the
        optimiser's flat buffer (``optim.SGD``) in one operation, any other one by one.
        Frozen modules accumulate nothing, so their gradients are still zero.
        """
        flat = self._flat_grads
        if flat is not None:
            flat[...] = 0
        for _, m in self.modules():
            if m.requires_grad:
                for k, zero in m._zero_grads.items():
                    if flat is None or k not in m._flat_keys:
                        zero[...] = 0
                    m.grads[k] = zero
            m._caches.clear()

    def accumulate(self, name: str, grad) -> None:
        """``grads[name] += grad`` unless the module is frozen, by reference the first
        time after ``zero_grad`` (``grad`` is the backward's own, fresh array)."""
        if not self.requires_grad:
            return
        current = self.grads[name]
        self.grads[name] = grad if current is self._zero_grads[name] else current + grad

    def push(self, cache) -> None:
        """Keep a forward cache for the matching backward (only while training, and only
        if a backward can run through this module)."""
        if self.training and self.keeps_cache:
            self._caches.append(cache)

    def pop(self):
        if not self._caches:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a matching forward "
                "in training mode"
            )
        return self._caches.pop()

    # ----------------------------------------------------------------- dtype/device
    def to(self, dtype=None, backend: str | None = None) -> Module:
        """Cast every param, grad and buffer to ``dtype`` and/or move to ``backend``."""
        for _, m in self.modules():
            for d in (m.params, m.buffers):
                for k, v in d.items():
                    if backend is not None:
                        v = to_backend(v, backend)
                    d[k] = v.astype(dtype) if dtype is not None else v
            for k, p in m.params.items():  # fresh zero gradients, no longer flat views
                m.grads[k] = m._zero_grads[k] = get_xp(p).zeros_like(p)
            m._flat_keys = frozenset()
            m._caches.clear()
        self._flat_grads = None
        return self

    # ----------------------------------------------------------------- state dicts
    def state_dict(self) -> OrderedDict:
        """Full name -> array for every parameter and buffer (PyTorch's key names)."""
        sd = OrderedDict()
        for prefix, m in self.modules():
            for k, v in list(m.params.items()) + list(m.buffers.items()):
                sd[f"{prefix}.{k}" if prefix else k] = v
        return sd

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays from ``state`` into this module, checking names and shapes.

        Raises:
            KeyError: with ``strict``, a missing or unexpected key (all of them named).
            ValueError: a shape mismatch, naming the key and both shapes.
        """
        own = {}
        for prefix, m in self.modules():
            for d in (m.params, m.buffers):
                for k in d:
                    own[f"{prefix}.{k}" if prefix else k] = (d, k)
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        for name, (d, k) in own.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(d[k].shape):
                raise ValueError(
                    f"load_state_dict: shape mismatch for {name!r}: "
                    f"checkpoint has {tuple(value.shape)}, model has {tuple(d[k].shape)}"
                )
            xp = get_xp(d[k])
            d[k][...] = xp.asarray(value, dtype=d[k].dtype)

    # ----------------------------------------------------------------- calling
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        kids = "".join(
            "\n  " + f"({n}): {c!r}".replace("\n", "\n  ") for n, c in self._children.items()
        )
        return f"{type(self).__name__}({shapes}){kids}"


class Sequential(Module):
    """Children called in order; backward calls them in reverse order."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, i: int) -> Module:
        return list(self._children.values())[i]

    def forward(self, x):
        for m in self._children.values():
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(list(self._children.values())):
            dout = m.backward(dout)
        return dout
