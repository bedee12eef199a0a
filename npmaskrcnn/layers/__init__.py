"""Differentiable layers: ``op_forward(...) -> (out, cache)`` / ``op_backward(dout, cache)``
pairs with PyTorch semantics, and thin ``Module`` wrappers holding parameters."""

from .activations import (
    ReLU,
    Sigmoid,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
)
from .conv import Conv2d, conv2d_backward, conv2d_forward, conv2d_naive
from .conv_transpose import (
    ConvTranspose2d,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    conv_transpose2d_naive,
)
from .linear import (
    Flatten,
    Linear,
    flatten_backward,
    flatten_forward,
    linear_backward,
    linear_forward,
)
from .module import Module, Sequential
from .norm import (
    FrozenBatchNorm2d,
    GroupNorm,
    frozen_batch_norm_backward,
    frozen_batch_norm_forward,
    group_norm_backward,
    group_norm_forward,
)
from .pooling import MaxPool2d, max_pool2d_backward, max_pool2d_forward, max_pool2d_naive
from .roi_align import roi_align_backward, roi_align_forward, roi_align_naive
from .roi_pool import roi_pool_backward, roi_pool_forward, roi_pool_naive
from .roi_warp import roi_warp_backward, roi_warp_forward, roi_warp_naive
from .upsample import Upsample, upsample_nearest2d_backward, upsample_nearest2d_forward
from .upsample_bilinear import (
    UpsampleBilinear2d,
    upsample_bilinear2d_backward,
    upsample_bilinear2d_forward,
    upsample_bilinear2d_naive,
)

__all__ = [
    "Conv2d", "ConvTranspose2d", "Flatten", "FrozenBatchNorm2d", "GroupNorm", "Linear",
    "MaxPool2d", "Module", "ReLU", "Sequential", "Sigmoid", "Upsample", "UpsampleBilinear2d",
    "conv2d_backward", "conv2d_forward", "conv2d_naive",
    "conv_transpose2d_backward", "conv_transpose2d_forward", "conv_transpose2d_naive",
    "flatten_backward", "flatten_forward",
    "frozen_batch_norm_backward", "frozen_batch_norm_forward",
    "group_norm_backward", "group_norm_forward",
    "linear_backward", "linear_forward",
    "max_pool2d_backward", "max_pool2d_forward", "max_pool2d_naive",
    "relu_backward", "relu_forward", "sigmoid_backward", "sigmoid_forward",
    "roi_align_backward", "roi_align_forward", "roi_align_naive",
    "roi_pool_backward", "roi_pool_forward", "roi_pool_naive",
    "roi_warp_backward", "roi_warp_forward", "roi_warp_naive",
    "upsample_nearest2d_backward", "upsample_nearest2d_forward",
    "upsample_bilinear2d_backward", "upsample_bilinear2d_forward", "upsample_bilinear2d_naive",
]
