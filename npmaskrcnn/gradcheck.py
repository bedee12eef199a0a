"""Gradient checking by centred differences (float64).

Every hand-written backward pass in npmaskrcnn is checked against the numerical
derivative

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2h)

whose error is O(h^2) for smooth f. With float64 and h = 1e-6 the relative error
of a correct backward is typically 1e-8 .. 1e-11; an error above ~1e-6 means a bug
(or a kink such as a ReLU at 0 or a tie in a max window between the two probes).

Three tools, from small to large inputs:

- ``numerical_gradient``: every element, for inputs of a few hundred elements;
- ``sparse_gradient_check``: a random subset of elements, for big tensors;
- ``directional_check``: one random direction through *all* parameters at once,
  ``f(theta + h v) - f(theta - h v) ~ 2h <grad, v>``, for whole models.

``check_layer`` ties them to the ``op_forward -> (out, cache)`` /
``op_backward(dout, cache) -> grads`` convention of ``layers/`` and ``losses/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .backend import asnumpy, get_xp


def rel_error(a, b, eps: float = 1e-12) -> float:
    """max |a - b| / max(|a| + |b|): the relative error used throughout the tests.

    Normalised by the largest magnitude (not elementwise), so that elements that
    are zero in both arrays do not blow the ratio up.
    """
    a, b = asnumpy(a).astype(np.float64), asnumpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), eps))


def numerical_gradient(f: Callable[[], float], x, h: float = 1e-6):
    """d f / d x for a scalar function ``f()`` that reads ``x`` (modified in place).

    Args:
        f: a function of no arguments returning a float; it must read ``x``.
        x: a float64 array (NumPy or CuPy); restored to its value on return.
        h: the step of the centred difference.
    Returns:
        an array shaped like ``x``.
    """
    xp = get_xp(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def sparse_gradient_check(
    f: Callable[[], float], x, analytic, num_checks: int = 20, h: float = 1e-6, seed: int = 0
) -> float:
    """Compare ``analytic`` (d f / d x) with centred differences at random elements.

    Returns the relative error over the checked elements (see ``rel_error``).
    """
    rng = np.random.default_rng(seed)
    flat, aflat = x.reshape(-1), analytic.reshape(-1)
    idx = rng.choice(flat.size, size=min(num_checks, flat.size), replace=False)
    num, ana = [], []
    for i in idx:
        old = flat[i].item()
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        num.append((fp - fm) / (2 * h))
        ana.append(float(aflat[i]))
    return rel_error(np.array(num), np.array(ana))


def directional_check(
    f: Callable[[], float],
    arrays: Sequence,
    grads: Sequence,
    h: float = 1e-6,
    seed: int = 0,
) -> float:
    """Check ``grads`` against f along one random direction through all ``arrays``.

    Moves every array by ``+h v`` and ``-h v`` (in place, restored afterwards) and
    compares ``(f(+) - f(-)) / 2h`` with ``sum_i <grads_i, v_i>``. Cheap for whole
    models: two evaluations of ``f`` however many parameters there are.

    Returns:
        the relative error |numeric - analytic| / (|numeric| + |analytic|).
    """
    rng = np.random.default_rng(seed)
    dirs = []
    for a in arrays:
        xp = get_xp(a)
        v = rng.standard_normal(a.shape)
        dirs.append(xp.asarray(v / max(np.linalg.norm(v), 1e-12), dtype=a.dtype))
    analytic = sum(float((asnumpy(g) * asnumpy(v)).sum()) for g, v in zip(grads, dirs))
    for a, v in zip(arrays, dirs):
        a += h * v
    fp = float(f())
    for a, v in zip(arrays, dirs):
        a -= 2 * h * v
    fm = float(f())
    for a, v in zip(arrays, dirs):
        a += h * v
    numeric = (fp - fm) / (2 * h)
    return abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-12)


def check_layer(
    forward: Callable,
    backward: Callable,
    inputs: Sequence,
    wrt: Sequence[int] | None = None,
    seed: int = 0,
    h: float = 1e-6,
    max_full: int = 400,
    num_checks: int = 30,
    **kwargs,
) -> list[float]:
    """Gradient-check a ``forward(*inputs, **kwargs) -> (out, cache)`` /
    ``backward(dout, cache) -> grads`` pair.

    The scalar checked is ``sum(out * dout)`` for a fixed random ``dout``, whose
    gradient is exactly what ``backward(dout, cache)`` returns. Inputs with at most
    ``max_full`` elements are checked element by element, larger ones at
    ``num_checks`` random elements.

    Args:
        inputs: float64 arrays (and other positional arguments, left alone).
        wrt: indices of the inputs to check (default: every float array input).
    Returns:
        the relative error for each checked input, in the order of ``wrt``.
    """
    inputs = list(inputs)
    xp = get_xp(*inputs)
    out, cache = forward(*inputs, **kwargs)
    rng = np.random.default_rng(seed)
    dout = xp.asarray(rng.standard_normal(out.shape))
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if wrt is None:
        wrt = [
            i
            for i, a in enumerate(inputs)
            if hasattr(a, "dtype") and a.dtype.kind == "f"
        ]

    def f():
        o, _ = forward(*inputs, **kwargs)
        return float((o * dout).sum())

    errors = []
    for k, i in enumerate(wrt):
        x, g = inputs[i], grads[i]  # backward returns grads in the forward's input order
        if x.size <= max_full:
            err = rel_error(numerical_gradient(f, x, h), g)
        else:
            err = sparse_gradient_check(f, x, g, num_checks=num_checks, h=h, seed=seed + k)
        errors.append(err)
    return errors
