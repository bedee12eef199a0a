"""A convolution and the norm layer after it, with a FrozenBN folded into the convolution.

Every convolution of the ResNet is followed by a norm layer. A FrozenBN (the backbone of
torchvision's detection weights) is a *fixed* per-channel affine map, ``y * scale + shift``,
so it can be folded into the convolution's weights -- in training too, because its scale
and shift are constants: only the convolution's weight gradient changes, by the same
per-channel scale (the chain rule through ``w' = w * scale``). One pass over each feature
map instead of three forward and two backward. GroupNorm's statistics depend on its input,
so it runs after the convolution as a layer of its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..layers.conv import Conv2d, conv2d_backward, conv2d_forward
from ..layers.module import Module
from ..layers.norm import FrozenBatchNorm2d


class FoldedConvCache(NamedTuple):
    """A conv's cache when its FrozenBN was folded into it (``conv_norm`` in training)."""

    conv: Any  # the Conv2dCache of conv(x; w * scale, shift)
    scale: Any  # (F,): the FrozenBN's scale, by which dW of the stored weight differs


def conv_norm(conv: Conv2d, norm: Module, x):
    """``norm(conv(x))``; a FrozenBN is folded into the conv's weights.

    A FrozenBN is the per-channel affine map ``y * scale + shift`` with constant scale and
    shift, so ``conv(x; w) * scale + shift = conv(x; w * scale) + shift``: one pass over
    the feature map instead of three (the conv's output, then the norm's two), as
    deployment runtimes fuse conv and BN. The stored weights are untouched (state dicts
    stay torchvision's). In training the folded conv keeps its cache for
    ``conv_norm_backward``; GroupNorm (whose statistics depend on x) runs after the conv.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale, shift = norm.affine()
    w = conv.params["weight"] * scale.reshape(-1, 1, 1, 1)
    if conv.has_bias:
        shift = shift + conv.params["bias"] * scale
    out, cache = conv2d_forward(x, w, shift, conv.stride, conv.padding)
    # the shift is a constant: its gradient (a sum over dout) is needed only for a bias
    conv.push(FoldedConvCache(cache._replace(has_bias=conv.has_bias), scale))
    return out


def conv_norm_backward(conv: Conv2d, norm: Module, dout, input_grad: bool = True):
    """The backward of ``conv_norm``: dx, and the gradients of the stored weights.

    Folded, the conv computed ``conv(x; w')`` with ``w'[f] = w[f] * scale[f]``, so dx is
    the folded conv's own, and by the chain rule ``dW[f] = dW'[f] * scale[f]`` (likewise
    the bias). Unfolded (GroupNorm): the norm's backward, then the conv's.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return conv.backward(norm.backward(dout), input_grad)
    cache: FoldedConvCache = conv.pop()
    dx, dw, db = conv2d_backward(dout, cache.conv, input_grad)
    conv.accumulate("weight", dw * cache.scale.reshape(-1, 1, 1, 1))
    if conv.has_bias:
        conv.accumulate("bias", db * cache.scale)
    return dx
