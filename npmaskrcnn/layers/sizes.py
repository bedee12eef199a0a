"""Size arithmetic shared by the layers: ``(height, width)`` pairs and window counts."""

from __future__ import annotations

import math


def as_pair(value, kind=int) -> tuple:
    """A number or a pair of numbers as ``(height, width)``, like PyTorch's ``_pair``;
    ``kind`` converts each (``int`` for sizes, ``float`` for scale factors)."""
    if isinstance(value, (tuple, list)):
        first, second = value
        return kind(first), kind(second)
    return kind(value), kind(value)


def interpolate_output_size(op: str, x_shape, size=None, scale_factor=None):
    """``((Ho, Wo), (s_h, s_w))``: the output size ``F.interpolate`` gives, and the scale
    factors as floats (``(None, None)`` when ``size`` is given, as PyTorch then steps by
    in/out). Exactly one of ``size`` and ``scale_factor``; with a factor the output is
    ``floor(H * s_h) x floor(W * s_w)``. ``op`` names the caller in the errors."""
    if (scale_factor is None) == (size is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor")
    H, W = x_shape[-2:]
    if size is not None:
        out, factors = as_pair(size), (None, None)
    else:
        factors = as_pair(scale_factor, float)
        out = (math.floor(H * factors[0]), math.floor(W * factors[1]))
    if min(H, W) < 1 or min(out) < 1:
        raise ValueError(f"{op}: input {H}x{W} and output {out[0]}x{out[1]} "
                         "must both be non-empty")
    return out, factors


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``(size + 2 * padding - kernel) // stride + 1``: how many windows fit (floor), as
    ``torch.nn.functional.conv2d`` and ``max_pool2d`` (``ceil_mode=False``) count them."""
    return (size + 2 * padding - kernel) // stride + 1
