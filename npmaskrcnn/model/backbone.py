"""ResNet backbone (He et al. 2016): the stem and stages C2..C5 that feed the FPN.

Mask R-CNN §3 "Network Architecture" uses ResNet-50/101 either as C4 (stage-4 features,
stride 16) or under an FPN (C2..C5, strides 4, 8, 16, 32). This file follows
``torchvision.models.resnet`` (v1.5: the stride of a Bottleneck sits on its 3x3 conv) with
the same module names, so that a torchvision ``state_dict`` (minus ``fc.*``) loads
one-to-one:

    conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2     (N, 3, H, W) -> (N, w, H/4, W/4)
    layer1 (stride 1)  -> C2   (N,  w*e, H/4,  W/4)
    layer2 (stride 2)  -> C3   (N, 2w*e, H/8,  W/8)
    layer3 (stride 2)  -> C4   (N, 4w*e, H/16, W/16)
    layer4 (stride 2)  -> C5   (N, 8w*e, H/32, W/32)

with w the base width (64 in the paper; 8 or 16 for CPU experiments) and e the block's
expansion (1 for BasicBlock, 4 for Bottleneck). Each of the five stride-2 ops maps a size
H to floor((H - 1) / 2) + 1 = ceil(H / 2), so H/32 above means ceil'd five times.

A residual block computes ``out = relu(branch(x) + identity(x))``. Its backward is the only
place in the network where a gradient forks: the gradient after the final relu goes to BOTH
the branch and the identity (or downsample) path, and the two input gradients add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Generator, get_xp
from ..layers.activations import ReLU
from ..layers.conv import Conv2d
from ..layers.init import kaiming_normal
from ..layers.module import Module, Sequential
from ..layers.norm import (  # noqa: F401 - gn_num_groups: part of this page's story
    FrozenBatchNorm2d,
    GroupNorm,
    frozen_batch_norm_affines,
    gn_num_groups,
    norm_factory,
)
from ..layers.pooling import MaxPool2d
from .conv_norm import conv_norm, conv_norm_backward

LEVELS = ("C2", "C3", "C4", "C5")
STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}
# depth -> (block, number of blocks in layer1..layer4), torchvision's resnet18..resnet101
ARCHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def conv_fan_out(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
    rng: Generator | None = None, dtype=np.float32,
) -> Conv2d:
    """A bias-free Conv2d initialised as torchvision's ResNet: kaiming_normal(mode='fan_out').

    std = sqrt(2 / fan_out), fan_out = out_channels * k * k.
    """
    rng = Generator(0) if rng is None else rng
    conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                  bias=False, rng=rng, dtype=dtype)
    w = conv.params["weight"]
    w[...] = kaiming_normal(rng, w.shape, out_channels * kernel_size * kernel_size, w.dtype)
    return conv


def _affine(norm: Module, name: str):
    """A norm layer's ``weight``/``bias``: a param (GroupNorm) or a buffer (FrozenBN)."""
    return norm.params[name] if name in norm.params else norm.buffers[name]


def _init_norm(norm: Module, weight: float = 1.0) -> None:
    """torchvision's ResNet init: norm weight 1 (0 for zero_init_residual), bias 0."""
    _affine(norm, "weight")[...] = weight
    _affine(norm, "bias")[...] = 0


def _shortcut(downsample: Module | None, x):
    """A block's identity path: x itself, or ``Sequential(conv 1x1/stride, norm)`` of x."""
    return x if downsample is None else conv_norm(downsample[0], downsample[1], x)


def _shortcut_backward(downsample: Module | None, dout):
    """The identity path's input gradient: dout itself, or through the downsample."""
    if downsample is None:
        return dout
    return conv_norm_backward(downsample[0], downsample[1], dout)


class BasicBlock(Module):
    """Two 3x3 convs and a shortcut: torchvision.models.resnet.BasicBlock (ResNet-18/34).

    out = relu(bn2(conv2(relu(bn1(conv1(x))))) + identity),  identity = x or downsample(x)

    Args:
        inplanes: input channels C.
        planes: output channels (``expansion = 1``); conv1 carries the stride.
        downsample: ``Sequential(conv 1x1/stride, norm)`` when the shape changes, else None.
        norm_layer: ``num_channels -> Module`` (default ``norm_factory()``).
    Shapes: (N, inplanes, H, W) -> (N, planes, H', W'), H' = floor((H - 1) / stride) + 1.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Module | None = None, norm_layer: Callable | None = None,
                 rng: Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = Generator(0) if rng is None else rng
        if norm_layer is None:
            norm_layer = norm_factory(dtype=dtype, backend=rng.backend)
        self.conv1 = conv_fan_out(inplanes, planes, 3, stride, 1, rng, dtype)
        self.bn1 = norm_layer(planes)
        self.relu1 = ReLU(inplace=True)  # torchvision reuses one ``relu``; one per use here
        self.conv2 = conv_fan_out(planes, planes, 3, 1, 1, rng, dtype)
        self.bn2 = norm_layer(planes)
        self.relu2 = ReLU(inplace=True)
        self.downsample = downsample
        if downsample is not None:
            self.add_module("downsample", downsample)

    def last_norm(self) -> Module:
        return self.bn2

    def forward(self, x):
        out = self.relu1(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        out += _shortcut(self.downsample, x)  # in place: out is this block's own array
        return self.relu2(out)

    def backward(self, dout):
        dsum = self.relu2.backward(dout)  # d(branch + identity)
        # The sum passes its gradient unchanged to both addends: the identity path...
        dx_identity = _shortcut_backward(self.downsample, dsum)
        # ...and the branch, in the reverse order of its forward.
        d = conv_norm_backward(self.conv2, self.bn2, dsum)
        dx_branch = conv_norm_backward(self.conv1, self.bn1, self.relu1.backward(d))
        # x fed both paths, so its gradient is the sum of the two.
        return dx_branch + dx_identity


class Bottleneck(Module):
    """1x1 reduce, 3x3, 1x1 expand, and a shortcut: torchvision's Bottleneck (ResNet-50/101).

    out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + identity)

    The stride sits on the 3x3 conv2 (ResNet v1.5, as torchvision; the original Caffe
    ResNet put it on conv1).

    Args:
        inplanes: input channels C.
        planes: the bottleneck width; the output has ``planes * 4`` channels.
        downsample: ``Sequential(conv 1x1/stride, norm)`` when the shape changes, else None.
        norm_layer: ``num_channels -> Module`` (default ``norm_factory()``).
    Shapes: (N, inplanes, H, W) -> (N, 4 planes, H', W'), H' = floor((H - 1) / stride) + 1.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Module | None = None, norm_layer: Callable | None = None,
                 rng: Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = Generator(0) if rng is None else rng
        if norm_layer is None:
            norm_layer = norm_factory(dtype=dtype, backend=rng.backend)
        self.conv1 = conv_fan_out(inplanes, planes, 1, 1, 0, rng, dtype)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv_fan_out(planes, planes, 3, stride, 1, rng, dtype)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv_fan_out(planes, planes * self.expansion, 1, 1, 0, rng, dtype)
        self.bn3 = norm_layer(planes * self.expansion)
        # torchvision reuses one ``relu`` three times; one module per use here
        self.relu1, self.relu2, self.relu3 = ReLU(inplace=True), ReLU(inplace=True), ReLU(
            inplace=True)
        self.downsample = downsample
        if downsample is not None:
            self.add_module("downsample", downsample)

    def last_norm(self) -> Module:
        return self.bn3

    def forward(self, x):
        out = self.relu1(conv_norm(self.conv1, self.bn1, x))  # (N, planes, H, W)
        out = self.relu2(conv_norm(self.conv2, self.bn2, out))  # (N, planes, H', W')
        out = conv_norm(self.conv3, self.bn3, out)  # (N, 4 planes, H', W')
        out += _shortcut(self.downsample, x)  # in place: out is this block's own array
        return self.relu3(out)

    def backward(self, dout):
        dsum = self.relu3.backward(dout)  # d(branch + identity)
        # The sum passes its gradient unchanged to both addends: the identity path...
        dx_identity = _shortcut_backward(self.downsample, dsum)
        # ...and the branch, in the reverse order of its forward.
        d = conv_norm_backward(self.conv3, self.bn3, dsum)
        d = conv_norm_backward(self.conv2, self.bn2, self.relu2.backward(d))
        dx_branch = conv_norm_backward(self.conv1, self.bn1, self.relu1.backward(d))
        # x fed both paths, so its gradient is the sum of the two.
        return dx_branch + dx_identity


def make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1,
               norm_layer: Callable | None = None, rng: Generator | None = None,
               dtype=np.float32) -> Sequential:
    """One ResNet stage, torchvision's ``ResNet._make_layer``.

    The first block takes the stride, and a ``downsample = Sequential(conv 1x1/stride,
    norm)`` shortcut when the stride is not 1 or the channels change; the other blocks
    keep the shape. Returns ``Sequential(block_0, ..., block_{blocks-1})`` with input
    channels ``inplanes`` and output channels ``planes * block.expansion``.
    """
    rng = Generator(0) if rng is None else rng
    if norm_layer is None:
        norm_layer = norm_factory(dtype=dtype, backend=rng.backend)
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = Sequential(conv_fan_out(inplanes, out_channels, 1, stride, 0, rng, dtype),
                                norm_layer(out_channels))
    layers = [block(inplanes, planes, stride, downsample, norm_layer, rng, dtype)]
    layers += [block(out_channels, planes, 1, None, norm_layer, rng, dtype)
               for _ in range(1, blocks)]
    return Sequential(*layers)


class ResNetCache(NamedTuple):
    """What ``ResNet.backward`` needs beyond its children's own caches."""

    shapes: list  # the shape of each returned feature map (zeros stand in for a None grad)
    dtype: Any  # their dtype
    xp: Any  # their array module, numpy or cupy


class ResNet(Module):
    """ResNet-18/34/50/101 feature extractor returning C2..C5 (or a subset).

    Follows ``torchvision.models.resnet`` without ``avgpool``/``fc`` (as torchvision's
    ``IntermediateLayerGetter`` inside ``resnet_fpn_backbone``); module names and the
    init match torchvision (convs kaiming_normal fan_out, norm weight 1 / bias 0).

    Args:
        depth: 18, 34, 50 or 101.
        width: base channels w (64 in the paper); stages have w, 2w, 4w, 8w planes.
        norm: ``"group_norm"`` (default: trainable, so a net trained from scratch is
            normalised) or ``"frozen_bn"`` (for torchvision's pretrained weights).
        gn_groups: requested GroupNorm groups; the count used is
            ``gcd(gn_groups, channels)`` (see ``gn_num_groups``).
        frozen_stages: 0 trains everything; k freezes the first k of (stem, layer1, ...,
            layer4), i.e. ``5 - trainable_layers`` of torchvision's ``resnet_fpn_backbone``
            (its default trainable_layers=3 is frozen_stages=2).
        return_layers: which of "C2".."C5" ``forward`` returns (in that order), e.g.
            ``("C4",)`` for a single-level C4 model. Stages deeper than the deepest
            returned one are not built, as ``IntermediateLayerGetter`` drops them.
        zero_init_residual: start each block's last norm weight at 0 (each block then
            starts as the identity), torchvision's option of the same name.
    """

    def __init__(self, depth: int = 50, width: int = 64, norm: str = "group_norm",
                 gn_groups: int = 32, frozen_stages: int = 0,
                 return_layers: Sequence[str] = LEVELS, zero_init_residual: bool = False,
                 rng: Generator | None = None, dtype=np.float32):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"depth must be one of {sorted(ARCHS)}, got {depth}")
        if not 0 <= frozen_stages <= 5:
            raise ValueError(f"frozen_stages must be in 0..5, got {frozen_stages}")
        unknown = [name for name in return_layers if name not in LEVELS]
        if unknown or not return_layers:
            raise ValueError(f"return_layers must be a non-empty subset of {LEVELS}")
        rng = Generator(0) if rng is None else rng
        kind, counts = ARCHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        norm_layer = norm_factory(norm, gn_groups, dtype, rng.backend)
        self.depth, self.width, self.norm = depth, width, norm
        self.frozen_stages = frozen_stages
        self.return_layers = [name for name in LEVELS if name in return_layers]

        # stem: (N, 3, H, W) -> (N, w, H/2, W/2) -> maxpool -> (N, w, H/4, W/4)
        self.conv1 = conv_fan_out(3, width, 7, 2, 3, rng, dtype)
        self.bn1 = norm_layer(width)
        self.relu = ReLU(inplace=True)
        self.maxpool = MaxPool2d(3, 2, 1)

        num_built = LEVELS.index(self.return_layers[-1]) + 1
        self.layer_names = [f"layer{i + 1}" for i in range(num_built)]
        self._channels = {}
        inplanes = width
        for i, name in enumerate(self.layer_names):
            planes = width * 2**i
            layer = make_layer(block, inplanes, planes, counts[i], 1 if i == 0 else 2,
                               norm_layer, rng, dtype)
            self.add_module(name, layer)
            inplanes = planes * block.expansion
            self._channels[LEVELS[i]] = inplanes
        for _, m in self.modules():
            if isinstance(m, (GroupNorm, FrozenBatchNorm2d)):
                _init_norm(m)
        if zero_init_residual:
            for _, m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    _init_norm(m.last_norm(), 0.0)
        # stages in order: the stem (conv1, bn1; relu and maxpool have no params), layer1..4
        stages = [(self.conv1, self.bn1, self.relu, self.maxpool)] + [
            (getattr(self, n),) for n in self.layer_names]
        for stage in stages[:frozen_stages]:
            for m in stage:
                m.freeze()
                # nothing below a frozen stage trains, so no backward ever runs through
                # it: its layers keep no forward caches
                for _, child in m.modules():
                    child.keeps_cache = False

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map: [w, 2w, 4w, 8w] x expansion, filtered."""
        return [self._channels[name] for name in self.return_layers]

    @property
    def strides(self) -> list[int]:
        """Stride of each returned map w.r.t. the input: 4, 8, 16, 32, filtered."""
        return [STRIDES[name] for name in self.return_layers]

    def forward(self, x):
        """(N, 3, H, W) -> [C2, C3, C4, C5] (those in ``return_layers``)."""
        # every FrozenBN's (scale, shift) in one computation for this pass
        norms = [m for _, m in self.modules() if isinstance(m, FrozenBatchNorm2d)]
        for m, affine in zip(norms, frozen_batch_norm_affines(norms)):
            m.precomputed = affine
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))  # (N, w, H/4, W/4)
        feats = []
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)  # (N, C_i, H / 2^(i+2), W / 2^(i+2))
            if LEVELS[i] in self.return_layers:
                feats.append(x)
        for m in norms:  # the pairs belong to this pass only
            m.precomputed = None
        self.push(ResNetCache([f.shape for f in feats], x.dtype, get_xp(x)))
        return feats

    def backward(self, douts, input_grad: bool = True):
        """[dC2, dC3, dC4, dC5] (those returned; None = zeros) -> dx (N, 3, H, W) or None.

        Runs the stages in the exact reverse order of ``forward``; the gradient of each
        returned map adds to the gradient arriving from the stage above it. Backward stops
        at the first frozen stage, since nothing below it needs a gradient: with
        ``frozen_stages >= 1`` the input gradient is not computed and None is returned;
        likewise with ``input_grad=False`` (the stem conv then skips its dx).
        """
        douts = list(douts)
        if len(douts) != len(self.return_layers):
            raise ValueError(f"expected {len(self.return_layers)} gradients "
                             f"({self.return_layers}), got {len(douts)}")
        cache: ResNetCache = self.pop()
        by_level = {}
        for name, d, shape in zip(self.return_layers, douts, cache.shapes):
            by_level[name] = cache.xp.zeros(shape, dtype=cache.dtype) if d is None else d
        grad = None
        lowest = max(self.frozen_stages - 1, 0)  # lowest trainable layer (0 = layer1)
        for i in reversed(range(lowest, len(self.layer_names))):
            if LEVELS[i] in by_level:
                d = by_level[LEVELS[i]]
                grad = d if grad is None else grad + d
            grad = getattr(self, self.layer_names[i]).backward(grad)
        if self.frozen_stages >= 1:
            return None
        grad = self.relu.backward(self.maxpool.backward(grad))
        return conv_norm_backward(self.conv1, self.bn1, grad, input_grad)
