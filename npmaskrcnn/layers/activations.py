"""Elementwise activations: ReLU and the logistic sigmoid, forward and backward.

ReLU is the hidden nonlinearity of every Mask R-CNN head (ResNet, RPN head, box
MLP, mask FCN); the sigmoid turns mask logits into per-pixel probabilities at
inference (paper §3: "per-pixel sigmoid").
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import fused, get_xp
from .module import Module


class ReluCache(NamedTuple):
    """What ``relu_backward`` needs."""

    mask: Any  # bool array shaped like x: True where x > 0 (the only places dout passes)


def relu_forward(x):
    """Rectified linear unit, ``out = max(x, 0)``.

    Follows ``torch.nn.functional.relu``; its derivative at exactly 0 is taken as 0,
    as PyTorch does (the gradient passes only where the output is positive).

    Args:
        x: any shape, e.g. (N, C, H, W) or (R, 1024).
    Returns:
        out: same shape as ``x``.
        cache: a ``ReluCache``.
    """
    out, mask = _relu_and_mask(x)
    return out, ReluCache(mask)


@fused
def _relu_and_mask(xp, x):
    """One pass over x: the output and the mask of the backward (one kernel on a GPU)."""
    return xp.maximum(x, 0), x > 0  # maximum (not where) propagates NaN, as torch.relu does


def relu_backward(dout, cache: ReluCache):
    """Gradient of ``relu_forward``: ``dx = dout * [x > 0]``.

    Written as that product, not as ``where(mask, dout, 0)``: the two are the same number
    for any finite ``dout`` (torch's ``threshold_backward`` is the ``where``; they differ
    only where a NaN or inf of ``dout`` meets the mask's 0, which no finite loss makes),
    and on a CPU the product is faster. NumPy's ``where`` branches on every element,
    and a ReLU's mask is hard to predict (about half its cells pass), so mispredicted
    branches cost more than the arithmetic: 5.5 ms against 0.5 for a million float32
    under a random mask (2-core machine; the product is branch-free SIMD), and 20 -> 10
    ms for all the ReLU backwards of a ``figures()`` training step, whose masks come in
    runs.

    Args:
        dout: upstream gradient, shape of the forward's output.
    Returns:
        dx: same shape and dtype as ``dout`` (the bool mask casts to it).
    """
    return dout * cache.mask


class SigmoidCache(NamedTuple):
    """What ``sigmoid_backward`` needs."""

    out: Any  # sigma(x), shaped like x: the derivative is sigma * (1 - sigma)


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))`` without overflow for any finite x.

    With ``e = exp(-|x|)`` (always in (0, 1]) it is ``1 / (1 + e)`` for x >= 0 and
    ``e / (1 + e)`` for x < 0, so no ``exp`` of a large positive number is taken.
    """
    return _sigmoid(x)


def stable_sigmoid(xp, x):
    """``sigmoid`` written with the array module ``xp``, for use inside ``fused`` functions."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


_sigmoid = fused(stable_sigmoid)


def sigmoid_forward(x):
    """Logistic sigmoid, ``out = 1 / (1 + exp(-x))``, stable for large |x|.

    Follows ``torch.sigmoid``.

    Args:
        x: any shape, e.g. mask logits (R, 1, M, M).
    Returns:
        out: same shape as ``x``, values in [0, 1].
        cache: a ``SigmoidCache``.
    """
    out = sigmoid(x)
    return out, SigmoidCache(out)


def sigmoid_backward(dout, cache: SigmoidCache):
    """Gradient of ``sigmoid_forward``: ``dx = dout * s * (1 - s)``, s = sigma(x).

    Args:
        dout: upstream gradient, shape of the forward's output.
    Returns:
        dx: same shape as ``dout``.
    """
    s = cache.out
    return dout * s * (1 - s)


class ReLU(Module):
    """``torch.nn.ReLU`` over ``relu_forward`` / ``relu_backward`` (no parameters).

    Args:
        inplace: at inference, overwrite the input instead of allocating the output, as
            ``nn.ReLU(inplace=True)`` in torchvision's ResNet and mask head. Only for
            inputs nobody else reads (a conv's or a sum's fresh output). In training
            the output is always a new array: the backward needs the mask of x > 0.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        if not self.training:  # no backward will run: no mask to keep
            xp = get_xp(x)
            return xp.maximum(x, 0, out=x if self.inplace else None)
        out, cache = relu_forward(x)
        self.push(cache)
        return out

    def backward(self, dout):
        return relu_backward(dout, self.pop())


class Sigmoid(Module):
    """``torch.nn.Sigmoid`` over ``sigmoid_forward`` / ``sigmoid_backward`` (no parameters)."""

    def forward(self, x):
        out, cache = sigmoid_forward(x)
        self.push(cache)
        return out

    def backward(self, dout):
        return sigmoid_backward(dout, self.pop())
