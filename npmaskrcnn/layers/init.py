"""Weight initialisation as PyTorch and torchvision do it (the random draws are ours).

Kept apart from ``Module`` so that the module file is only about holding parameters and
running forward/backward; each layer picks its initialiser here.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import Generator


def kaiming_uniform(rng: Generator, shape: tuple, fan_in: int, dtype=np.float32):
    """PyTorch's default weight init for Conv/Linear: U(-b, b), b = 1/sqrt(fan_in).

    (``kaiming_uniform_(a=sqrt(5))`` gives gain sqrt(2/(1+5)) and bound
    gain * sqrt(3/fan_in) = 1/sqrt(fan_in).) Biases use the same bound.
    """
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, shape, dtype=dtype)


def kaiming_normal(rng: Generator, shape: tuple, fan_out: int, dtype=np.float32):
    """He et al. 2015 normal init, ``mode='fan_out'``, for ReLU nets (torchvision ResNet)."""
    return rng.normal(0.0, math.sqrt(2.0 / max(fan_out, 1)), shape, dtype=dtype)


def kaiming_normal_fan_out_(conv, rng: Generator) -> None:
    """torchvision's mask and keypoint head init, in place: weight
    ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``, bias 0.

    PyTorch takes dim 0 as the fan-out for both layouts, the conv's (F, C, KH, KW) and the
    transposed conv's (C_in, C_out, KH, KW), so fan_out = dim0 * KH * KW for both.
    """
    w = conv.params["weight"]
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    w[...] = kaiming_normal(rng, w.shape, fan_out, dtype=w.dtype)
    conv.params["bias"][...] = 0
