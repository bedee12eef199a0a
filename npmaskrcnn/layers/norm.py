"""Normalisation layers: GroupNorm (trained) and FrozenBatchNorm2d (a fixed affine map).

torchvision's ResNet backbone for detection replaces every BatchNorm by
``FrozenBatchNorm2d``: with 1-2 images per GPU batch statistics are useless, so the
ImageNet statistics and affine parameters are frozen into ``y = x * scale + shift``
and nothing in it is trained (only dx flows through). GroupNorm (Wu & He 2018) is the
batch-size-independent normalisation used when heads or backbones are trained from
scratch (torchvision's v2 Mask R-CNN heads, detectron2's GN configs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backend import fused, get_xp, xp_for
from .module import Module


def _channel_shape(x) -> tuple:
    """(1, C, 1, ..., 1): a per-channel vector's shape broadcast against x (N, C, *)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


class GroupNormCache(NamedTuple):
    """What ``group_norm_backward`` needs."""

    xhat: Any  # (N, C, *) normalised input (x - mean_g) / sqrt(var_g + eps)
    rstd: Any  # (N, G, 1) 1 / sqrt(var_g + eps) of each (image, group)
    weight: Any  # (C,) or None: the per-channel scale gamma
    has_bias: bool  # whether to return dbias or None


def group_norm_naive(x, weight, bias, num_groups: int, eps: float = 1e-5):
    """Loop reference for ``group_norm_forward``: one (image, group) block at a time."""
    xp = get_xp(x)
    N, C = x.shape[:2]
    cg = C // num_groups
    out = xp.zeros_like(x)
    for n in range(N):
        for g in range(num_groups):
            block = x[n, g * cg : (g + 1) * cg]
            mean = block.sum() / block.size
            var = ((block - mean) ** 2).sum() / block.size
            out[n, g * cg : (g + 1) * cg] = (block - mean) / xp.sqrt(var + eps)
    for c in range(C):
        if weight is not None:
            out[:, c] *= weight[c]
        if bias is not None:
            out[:, c] += bias[c]
    return out


def group_norm_forward(x, weight, bias, num_groups: int, eps: float = 1e-5):
    """Group normalisation, as ``torch.nn.functional.group_norm``.

    The C channels are split into G = num_groups groups of C/G consecutive channels;
    for each image n and group g, over the C/G * H * W values of the group,

        mean = mean(x),  var = mean((x - mean)^2)  (biased),
        y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c].

    Args:
        x: (N, C, *), e.g. (N, C, H, W); C divisible by num_groups.
        weight: gamma (C,) or None (no scale).
        bias: beta (C,) or None (no shift).
        num_groups: G.
        eps: added to the variance.
    Returns:
        out: (N, C, *).
        cache: a ``GroupNormCache``.
    """
    N, C = x.shape[:2]
    if C % num_groups != 0:
        raise ValueError(f"group_norm: {C} channels not divisible by {num_groups} groups")
    G, channels = num_groups, C // num_groups
    spatial = math.prod(x.shape[2:])  # explicit: -1 fails for N = 0
    xg = x.reshape(N, G, channels * spatial)  # (N, C, *) -> (N, G, C/G * prod(*))
    mean = xg.mean(axis=2, keepdims=True)
    centred, squared = _centred_and_squared(xg, mean)
    var = squared.mean(axis=2, keepdims=True)  # biased
    rstd = _reciprocal_std(var, eps)  # (N, G, 1): 1 / sqrt(var + eps)
    # (N, G, C/G, prod(*)) views: a group's channels on axis 2, so that the per-channel
    # gamma and beta (1, G, C/G, 1) and the per-group statistics (N, G, 1, 1) broadcast
    gamma = weight.reshape(1, G, channels, 1) if weight is not None else 1.0
    beta = bias.reshape(1, G, channels, 1) if bias is not None else 0.0
    xhat, out = _normalise(centred.reshape(N, G, channels, spatial), rstd[..., None], gamma,
                           beta)
    return out.reshape(x.shape), GroupNormCache(xhat.reshape(x.shape), rstd, weight,
                                                bias is not None)


def group_norm_backward(dout, cache: GroupNormCache):
    """Gradients of ``group_norm_forward``.

    With g = dL/dxhat = dout * gamma and the means taken over each (image, group),

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
        dgamma[c] = sum_{n, spatial} dout * xhat,   dbeta[c] = sum_{n, spatial} dout.

    (The two subtracted terms are the paths through the group's mean and variance.)

    Args:
        dout: (N, C, *).
    Returns:
        (dx, dweight, dbias): (N, C, *), (C,), (C,); dweight / dbias are None when the
        forward had no weight / bias.
    """
    xhat, rstd, weight, has_bias = cache
    N, C = dout.shape[:2]
    G = rstd.shape[1]
    shape4 = (N, G, C // G, math.prod(dout.shape[2:]))  # as in the forward
    gamma = weight.reshape(1, G, C // G, 1) if weight is not None else 1.0
    d4, xhat4 = dout.reshape(shape4), xhat.reshape(shape4)
    g, g_xhat, dout_xhat = _scaled_grads(d4, xhat4, gamma)  # one pass over dout
    dweight = dout_xhat.sum(axis=(0, 3)).reshape(C) if weight is not None else None
    dbias = d4.sum(axis=(0, 3)).reshape(C) if has_bias else None
    dx = _group_norm_dx(g, xhat4, rstd[..., None], g.mean(axis=(2, 3), keepdims=True),
                        g_xhat.mean(axis=(2, 3), keepdims=True))
    return dx.reshape(dout.shape), dweight, dbias


# The elementwise steps of GroupNorm, each one kernel on a GPU (``fused``): the forward is
# then 5 launches instead of 9 and the backward 6 instead of 11 (x 20 layers in shapes()).


@fused
def _centred_and_squared(xp, x, mean):
    centred = x - mean
    return centred, centred * centred


@fused
def _reciprocal_std(xp, var, eps):
    return (var + eps) ** -0.5


@fused
def _normalise(xp, centred, rstd, gamma, beta):
    """(xhat, out) = (centred * rstd, xhat * gamma + beta)."""
    xhat = centred * rstd
    return xhat, xhat * gamma + beta


@fused
def _scaled_grads(xp, dout, xhat, gamma):
    """(g, g * xhat, dout * xhat) with g = dL/dxhat = dout * gamma."""
    g = dout * gamma
    return g, g * xhat, dout * xhat


@fused
def _group_norm_dx(xp, g, xhat, rstd, mean_g, mean_g_xhat):
    return rstd * (g - mean_g - xhat * mean_g_xhat)


class FrozenBatchNormCache(NamedTuple):
    """What ``frozen_batch_norm_backward`` needs."""

    scale: Any  # (1, C, 1, 1): weight / sqrt(running_var + eps), the only factor on x


def frozen_batch_norm_forward(x, weight, bias, running_mean, running_var, eps: float = 1e-5):
    """BatchNorm in inference mode with fixed statistics, as ``torchvision.ops.FrozenBatchNorm2d``.

        scale = weight / sqrt(running_var + eps),  shift = bias - running_mean * scale,
        y = x * scale[c] + shift[c].

    torchvision's default eps is 1e-5; its legacy detection weights were trained with
    eps = 0 (``overwrite_eps``), which callers pass explicitly.

    Args:
        x: (N, C, H, W).
        weight, bias, running_mean, running_var: (C,) each, constants.
        eps: added to the variance.
    Returns:
        out: (N, C, H, W).
        cache: a ``FrozenBatchNormCache``.
    """
    scale, shift = frozen_batch_norm_affine(weight, bias, running_mean, running_var, eps)
    cshape = _channel_shape(x)
    scale = scale.reshape(cshape)
    out = x * scale
    out += shift.reshape(cshape)  # in place: one (N, C, H, W) temporary, not two
    return out, FrozenBatchNormCache(scale)


def frozen_batch_norm_affine(weight, bias, running_mean, running_var, eps: float = 1e-5):
    """The (scale, shift) pair, each (C,), with ``frozen_batch_norm(x) = x*scale + shift``.

    A fixed affine map per channel can be folded into the convolution before it:
    ``conv(x; w, b) * scale + shift = conv(x; w * scale, b * scale + shift)`` (see
    ``model.conv_norm.conv_norm``).
    """
    xp = get_xp(weight)
    scale = weight / xp.sqrt(running_var + eps)
    return scale, bias - running_mean * scale


def frozen_batch_norm_affines(norms: list, xp=None):
    """The (scale, shift) of many ``FrozenBatchNorm2d`` layers, computed together.

    Their buffers are concatenated and ``frozen_batch_norm_affine`` runs once on the
    result: a handful of array operations for the whole network instead of a few per
    layer (on a GPU, each is a kernel launch). Every layer must share one ``eps``.

    Returns:
        one (scale, shift) pair of views per layer, in the order of ``norms``.
    """
    if not norms:
        return []
    eps = {m.eps for m in norms}
    if len(eps) > 1:
        raise ValueError(f"frozen_batch_norm_affines: layers with different eps {eps}")
    xp = get_xp(norms[0].buffers["weight"])
    cat = [xp.concatenate([m.buffers[k] for m in norms])
           for k in ("weight", "bias", "running_mean", "running_var")]
    scale, shift = frozen_batch_norm_affine(*cat, eps.pop())
    splits = np.cumsum([m.num_features for m in norms])[:-1].tolist()
    return list(zip(xp.split(scale, splits), xp.split(shift, splits)))


def frozen_batch_norm_backward(dout, cache: FrozenBatchNormCache):
    """Gradient of ``frozen_batch_norm_forward`` w.r.t. x only: ``dx = dout * scale[c]``.

    Nothing in the layer is trained, so no other gradient is computed.

    Args:
        dout: (N, C, H, W).
    Returns:
        dx: (N, C, H, W).
    """
    return dout * cache.scale


class GroupNorm(Module):
    """``torch.nn.GroupNorm`` over ``group_norm_forward`` / ``group_norm_backward``.

    Parameters ``weight`` (ones) and ``bias`` (zeros), shape (num_channels,), when
    ``affine`` (PyTorch's default init); created on ``backend`` (None: the default).
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        dtype=np.float32,
        backend: str | None = None,
    ):
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(
                f"GroupNorm: {num_channels} channels not divisible by {num_groups} groups"
            )
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups,
            num_channels,
            eps,
            affine,
        )
        if affine:
            xp = xp_for(backend)
            self.add_param("weight", xp.ones(num_channels, dtype=dtype))
            self.add_param("bias", xp.zeros(num_channels, dtype=dtype))

    def forward(self, x):
        out, cache = group_norm_forward(
            x, self.params.get("weight"), self.params.get("bias"), self.num_groups, self.eps
        )
        self.push(cache)
        return out

    def backward(self, dout):
        dx, dweight, dbias = group_norm_backward(dout, self.pop())
        if self.affine:
            self.accumulate("weight", dweight)
            self.accumulate("bias", dbias)
        return dx


class FrozenBatchNorm2d(Module):
    """``torchvision.ops.FrozenBatchNorm2d``: a BatchNorm whose statistics and affine are fixed.

    ``weight`` (ones), ``bias`` (zeros), ``running_mean`` (zeros) and ``running_var``
    (ones), each (num_features,), live in ``buffers`` under torchvision's state-dict
    names: they are loaded from a checkpoint, never trained. ``backward`` returns dx.
    Created on ``backend`` (None: the default backend).

    Where to look when reading the model: in the ResNet this layer's ``forward`` and
    ``backward`` do not run. ``model.conv_norm.conv_norm`` folds the fixed affine into
    the convolution before it (``frozen_batch_norm_affine``), in training and at
    inference, and ``conv_norm_backward`` scales that convolution's weight gradient by
    the affine's scale, so a breakpoint here is not hit there; the result is the same to
    rounding. The layer on its own (or after any other producer) runs as written.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, dtype=np.float32,
                 backend: str | None = None):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        xp = xp_for(backend)
        self.buffers["weight"] = xp.ones(num_features, dtype=dtype)
        self.buffers["bias"] = xp.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = xp.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = xp.ones(num_features, dtype=dtype)
        self.precomputed = None  # (scale, shift) for the current pass, see ``affine``

    def affine(self):
        """(scale, shift), each (num_features,): this layer as ``x * scale + shift``.

        ``ResNet.forward`` computes the affines of all its FrozenBN layers at once at the
        start of a pass (``frozen_batch_norm_affines``) and leaves each layer its pair in
        ``precomputed`` for that pass; on its own a layer computes its pair here.
        """
        if self.precomputed is not None:
            return self.precomputed
        b = self.buffers
        return frozen_batch_norm_affine(
            b["weight"], b["bias"], b["running_mean"], b["running_var"], self.eps
        )

    def forward(self, x):
        scale, shift = self.affine()
        cshape = _channel_shape(x)
        out = x * scale.reshape(cshape)
        out += shift.reshape(cshape)  # in place: one temporary, not two
        self.push(FrozenBatchNormCache(scale.reshape(cshape)))
        return out

    def backward(self, dout):
        return frozen_batch_norm_backward(dout, self.pop())


def gn_num_groups(gn_groups: int, num_channels: int) -> int:
    """The group count actually used for a GroupNorm over ``num_channels`` channels.

    Rule: ``gcd(gn_groups, num_channels)``, the largest count that divides both the
    requested count and the channels. With the paper's widths (multiples of 64) and
    ``gn_groups=32`` this is 32; with narrow CPU models it shrinks (width 8 -> 8 groups
    of one channel), which keeps every group the same size as GroupNorm requires.
    """
    return math.gcd(int(gn_groups), int(num_channels))


def norm_factory(
    norm: str = "group_norm", gn_groups: int = 32, dtype=np.float32, backend: str | None = None
) -> Callable[[int], Module]:
    """A ``num_channels -> Module`` builder, torchvision's ``norm_layer`` argument.

    Args:
        norm: ``"group_norm"`` (trainable ``GroupNorm``) or
            ``"frozen_bn"`` (``FrozenBatchNorm2d``: a fixed affine map, for pretrained
            weights, as torchvision's detection backbones).
        gn_groups: requested GroupNorm groups (see ``gn_num_groups``).
        backend: where the norms' arrays live (None: the default backend).
    """
    if norm == "group_norm":
        return lambda c: GroupNorm(gn_num_groups(gn_groups, c), c, dtype=dtype, backend=backend)
    if norm == "frozen_bn":
        return lambda c: FrozenBatchNorm2d(c, dtype=dtype, backend=backend)
    raise ValueError(f"norm must be 'group_norm' or 'frozen_bn', got {norm!r}")
