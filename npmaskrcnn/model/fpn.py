"""Feature Pyramid Network (Lin et al. 2017) over ResNet stages C2..C5 -> P2..P6.

Mask R-CNN §3 "Network Architecture" (FPN variant) follows ``torchvision.ops.
FeaturePyramidNetwork`` with ``LastLevelMaxPool``:

    inner_l   = lateral 1x1 conv of C_l                       (N, F, H_l, W_l)
    last_5    = inner_5
    last_l    = inner_l + upsample_nearest(last_{l+1}, size=(H_l, W_l))   for l = 4, 3, 2
    P_l       = 3x3 conv (pad 1) of last_l                    (N, F, H_l, W_l)
    P6        = max_pool2d(P5, kernel 1, stride 2)            (N, F, ceil(H_5/2), ceil(W_5/2))

P6 (stride 64) only subsamples P5; it is used by the RPN alone.

Backward runs this in reverse. The gradient of ``last_l`` has two sources, the 3x3 conv of
its own level and the upsampled copy in the level below, and it flows to two places: the
lateral conv of C_l and, through the upsample's backward (a sum over the copies), the
level above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Generator, get_xp
from ..layers.conv import Conv2d
from ..layers.module import Module, Sequential
from ..layers.pooling import max_pool2d_backward, max_pool2d_forward
from ..layers.upsample import upsample_nearest2d_backward, upsample_nearest2d_forward


def conv_fpn_init(in_channels: int, out_channels: int, kernel_size: int, padding: int,
                  rng: Generator, dtype=np.float32) -> Conv2d:
    """A Conv2d with bias, initialised as torchvision's FPN.

    ``kaiming_uniform_(weight, a=1)``: gain sqrt(2 / (1 + a^2)) = 1, so
    weight ~ U(-sqrt(3 / fan_in), +sqrt(3 / fan_in)), fan_in = in_channels * k * k;
    bias = 0.
    """
    conv = Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=padding,
                  bias=True, rng=rng, dtype=dtype)
    w = conv.params["weight"]
    bound = math.sqrt(3.0 / (in_channels * kernel_size * kernel_size))
    w[...] = rng.uniform(-bound, bound, w.shape, dtype=w.dtype)
    conv.params["bias"][...] = 0
    return conv


class FPNCache(NamedTuple):
    """What ``FeaturePyramidNetwork.backward`` needs beyond its convs' own caches."""

    up_caches: list  # up_caches[l]: the upsample cache of last_{l+1} -> level l, l < L-1
    pool_cache: Any  # the max-pool cache of P6, or None without the extra block
    shapes: list  # shape of each output P_l (zeros stand in for a None gradient)
    dtype: Any  # their dtype
    xp: Any  # their array module, numpy or cupy


class FeaturePyramidNetwork(Module):
    """torchvision.ops.FeaturePyramidNetwork (+ LastLevelMaxPool): [C2..C5] -> [P2..P6].

    Args:
        in_channels_list: channels of each input level, lowest (finest) level first,
            e.g. ``ResNet.out_channels``. Any number L >= 1 of levels.
        out_channels: F, channels of every output (256 in the paper).
        extra_block: ``"maxpool"`` appends P6 = max_pool2d(P_last, 1, 2, 0) (torchvision's
            ``LastLevelMaxPool``); None returns the L levels only.
    Module names as torchvision: ``inner_blocks.{i}.0`` (the 1x1 lateral conv) and
    ``layer_blocks.{i}.0`` (the 3x3 output conv), both with bias.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int,
                 extra_block: str | None = "maxpool", rng: Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        if not in_channels_list or any(c <= 0 for c in in_channels_list):
            raise ValueError(f"in_channels_list must be positive, got {in_channels_list}")
        if extra_block not in ("maxpool", None):
            raise ValueError(f"extra_block must be 'maxpool' or None, got {extra_block!r}")
        rng = Generator(0) if rng is None else rng
        self.in_channels_list = list(in_channels_list)
        self.out_channels = out_channels
        self.extra_block = extra_block
        # Used as lists (torchvision's ModuleList), indexed by level, never called whole;
        # each entry is itself a Sequential so that names read inner_blocks.{i}.0.weight.
        self.inner_blocks = Sequential(*[
            Sequential(conv_fpn_init(c, out_channels, 1, 0, rng, dtype))
            for c in in_channels_list
        ])
        self.layer_blocks = Sequential(*[
            Sequential(conv_fpn_init(out_channels, out_channels, 3, 1, rng, dtype))
            for _ in in_channels_list
        ])

    @property
    def num_outputs(self) -> int:
        return len(self.in_channels_list) + (self.extra_block is not None)

    def forward(self, feats):
        """[C2, ..., C5] (N, C_l, H_l, W_l) -> [P2, ..., P5, P6] (N, F, H_l, W_l)."""
        feats = list(feats)
        if len(feats) != len(self.in_channels_list):
            raise ValueError(f"expected {len(self.in_channels_list)} feature maps, "
                             f"got {len(feats)}")
        top = len(feats) - 1
        up_caches = [None] * top
        last_inner = self.inner_blocks[top](feats[top])  # (N, F, H_top, W_top)
        results = [None] * len(feats)
        results[top] = self.layer_blocks[top](last_inner)
        for lvl in range(top - 1, -1, -1):
            inner_lateral = self.inner_blocks[lvl](feats[lvl])  # (N, F, H_l, W_l)
            # nearest upsample of the level above to exactly this level's size
            # (x2 when sizes divide; otherwise floor(dst * in / out) source indices)
            inner_top_down, up_caches[lvl] = upsample_nearest2d_forward(
                last_inner, size=tuple(inner_lateral.shape[-2:]))
            inner_lateral += inner_top_down  # the conv's output: no cache holds it
            last_inner = inner_lateral
            results[lvl] = self.layer_blocks[lvl](last_inner)
        pool_cache = None
        if self.extra_block == "maxpool":
            p6, pool_cache = max_pool2d_forward(results[-1], 1, 2, 0)  # (N, F, ceil(H/2), .)
            results.append(p6)
        shapes = [r.shape for r in results]
        self.push(FPNCache(up_caches, pool_cache, shapes, results[0].dtype, get_xp(results[0])))
        return results

    def backward(self, douts):
        """[dP2, ..., dP5, dP6] (None = zeros) -> [dC2, ..., dC5], reverse of ``forward``."""
        douts = list(douts)
        if len(douts) != self.num_outputs:
            raise ValueError(f"expected {self.num_outputs} gradients, got {len(douts)}")
        cache: FPNCache = self.pop()
        douts = [cache.xp.zeros(s, dtype=cache.dtype) if d is None else d
                 for d, s in zip(douts, cache.shapes)]
        top = len(self.in_channels_list) - 1
        if self.extra_block == "maxpool":
            # P6 was a subsample of P5: its gradient adds to P5's own
            douts[top] = douts[top] + max_pool2d_backward(douts.pop(), cache.pool_cache)
        dfeats = [None] * (top + 1)
        d_from_below = None  # d last_l arriving through the upsample of level l - 1
        for lvl in range(top):
            d_last = self.layer_blocks[lvl].backward(douts[lvl])
            if d_from_below is not None:
                d_last = d_last + d_from_below
            # last_l = inner_lateral + inner_top_down: the sum's gradient goes to both
            d_from_below = upsample_nearest2d_backward(d_last, cache.up_caches[lvl])
            dfeats[lvl] = self.inner_blocks[lvl].backward(d_last)
        d_last = self.layer_blocks[top].backward(douts[top])
        if d_from_below is not None:
            d_last = d_last + d_from_below
        dfeats[top] = self.inner_blocks[top].backward(d_last)
        return dfeats
