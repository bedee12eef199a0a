"""Fully connected layer and the flatten that feeds it.

The FPN box head (paper Fig. 4, right) flattens each 7x7x256 RoI feature to a
12544-vector and applies two 1024-wide fully connected layers (torchvision's
``TwoMLPHead``: ``fc6``, ``fc7``), then the ``cls_score`` and ``bbox_pred`` layers.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import Generator
from .init import kaiming_uniform
from .module import Module


class LinearCache(NamedTuple):
    """What ``linear_backward`` needs."""

    x: Any  # input (..., in): dw = dout^T x
    w: Any  # weight (out, in): dx = dout w
    has_bias: bool  # whether to return db or None


def linear_forward(x, w, b):
    """Affine map ``out = x w^T + b``, as ``torch.nn.functional.linear``.

    Args:
        x: (R, in) or any (..., in).
        w: (out, in), PyTorch's ``Linear.weight`` layout.
        b: (out,) or None.
    Returns:
        out: (R, out) or (..., out).
        cache: a ``LinearCache``.
    """
    out = x @ w.T  # (..., in) @ (in, out) -> (..., out)
    if b is not None:
        out = out + b
    return out, LinearCache(x, w, b is not None)


def linear_backward(dout, cache: LinearCache):
    """Gradients of ``linear_forward``.

    ``dx = dout w``, ``dw = sum_rows dout^T x``, ``db = sum_rows dout``, where the
    rows are all leading axes of ``x`` flattened together.

    Args:
        dout: (..., out), upstream gradient.
    Returns:
        (dx, dw, db): shapes of x, w and b; ``db`` is None when the forward had no bias.
    """
    x, w, has_bias = cache
    dx = dout @ w  # (..., out) @ (out, in) -> (..., in)
    dout2 = dout.reshape(-1, w.shape[0])  # (..., out) -> (rows, out)
    x2 = x.reshape(-1, w.shape[1])  # (..., in) -> (rows, in)
    dw = dout2.T @ x2  # (out, rows) @ (rows, in) -> (out, in)
    db = dout2.sum(axis=0) if has_bias else None
    return dx, dw, db


class FlattenCache(NamedTuple):
    """What ``flatten_backward`` needs."""

    shape: tuple  # the input's shape, to reshape the gradient back


def flatten_forward(x):
    """Flatten all axes but the first: (N, C, H, W) -> (N, C*H*W).

    Follows ``torch.flatten(x, start_dim=1)`` / ``nn.Flatten()`` (row-major order, so
    a (R, 256, 7, 7) RoI feature flattens exactly as torchvision's box head does).

    Args:
        x: (N, ...), at least one axis.
    Returns:
        out: (N, prod(rest)).
        cache: a ``FlattenCache``.
    """
    # the explicit size (not -1) also works for an empty batch, N = 0
    out = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return out, FlattenCache(tuple(x.shape))


def flatten_backward(dout, cache: FlattenCache):
    """Gradient of ``flatten_forward``: the same numbers, reshaped back.

    Args:
        dout: (N, prod(rest)).
    Returns:
        dx: (N, ...), the forward input's shape.
    """
    return dout.reshape(cache.shape)


class Linear(Module):
    """``torch.nn.Linear`` over ``linear_forward`` / ``linear_backward``.

    Parameters ``weight`` (out_features, in_features) and ``bias`` (out_features,),
    both drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)) as PyTorch's default.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rng: Generator | None = None,
        dtype=np.float32,
    ):
        super().__init__()
        rng = Generator(0) if rng is None else rng
        self.in_features, self.out_features = in_features, out_features
        self.add_param(
            "weight", kaiming_uniform(rng, (out_features, in_features), in_features, dtype)
        )
        self.has_bias = bias
        if bias:
            self.add_param("bias", kaiming_uniform(rng, (out_features,), in_features, dtype))

    def forward(self, x):
        out, cache = linear_forward(x, self.params["weight"], self.params.get("bias"))
        self.push(cache)
        return out

    def backward(self, dout):
        dx, dw, db = linear_backward(dout, self.pop())
        self.accumulate("weight", dw)
        if self.has_bias:
            self.accumulate("bias", db)
        return dx


class Flatten(Module):
    """``torch.nn.Flatten()`` (start_dim=1) over ``flatten_forward`` / ``flatten_backward``."""

    def forward(self, x):
        out, cache = flatten_forward(x)
        self.push(cache)
        return out

    def backward(self, dout):
        return flatten_backward(dout, self.pop())
