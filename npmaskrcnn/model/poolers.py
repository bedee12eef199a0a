"""The multi-level RoI pooler: each RoI pooled from the FPN level that fits its size.

    rois (R, 5) ─ level_mapper: k = floor(4 + log2(sqrt(wh) / 224) + 1e-6), clamped
       └─ for each level l: the RoIs with k = l ─ RoIAlign | RoIPool | RoIWarp on P_l
           └─ out (R, C, PH, PW), each RoI in its original row

FPN paper (Lin et al. 2017, Eq. 1): a 224 x 224 RoI (ImageNet's canonical size) goes to
P4, one half that size to P3. The canonical size is ``RoIHeadsConfig.canonical_scale``:
224 for torchvision's anchors (32-512 px), 56 for the CPU presets' anchors (8-128 px), so
that their RoIs spread over the levels as a COCO model's do. The backward scatters each
RoI's gradient into the level it came from; levels no RoI used get zeros. With a single
feature map there is no level mapping (the C4 / C5 models of the paper's Table 2c/d,
stride 16 or 32).

Follows ``torchvision.ops.MultiScaleRoIAlign`` / ``LevelMapper``: the scales are given
instead of inferred from the feature sizes (torchvision rounds them to powers of two, so
k_min, k_max = -log2 of the first and last scale are the same), and ``op`` chooses the
pooling op for the paper's ablation (torchvision only has RoIAlign, aligned=False).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp
from ..layers.module import Module
from ..layers.roi_align import roi_align_levels_backward, roi_align_levels_forward
from ..layers.roi_align_fast import pool_levels, unpool_levels
from ..layers.roi_pool import roi_pool_backward, roi_pool_forward
from ..layers.roi_warp import roi_warp_backward, roi_warp_forward
from ..layers.sizes import as_pair

OPS = ("align", "pool", "warp")


def level_mapper(boxes, k_min: int, k_max: int, canonical_scale: float = 224,
                 canonical_level: int = 4, eps: float = 1e-6):
    """The FPN level of each box, as torchvision's ``LevelMapper`` (no gradient).

    k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), clamped to
    [k_min, k_max]; area = (x2 - x1) * (y2 - y1), computed in the boxes' dtype. Boxes
    of zero or negative area go to k_min (torchvision's log2 gives -inf or NaN there).

    Args:
        boxes: (R, 4) ``[x1, y1, x2, y2]`` in image pixels.
        k_min, k_max: the finest and coarsest available levels (2 and 5 for P2..P5).
    Returns:
        (R,) int64 absolute level in [k_min, k_max] (torchvision returns k - k_min).
    """
    xp = get_xp(boxes)
    t = boxes.dtype.type
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area = xp.maximum(area, t(np.finfo(boxes.dtype).tiny))  # empty/malformed boxes -> k_min
    k = xp.floor(t(canonical_level) + xp.log2(xp.sqrt(area) / t(canonical_scale)) + t(eps))
    return xp.clip(k, k_min, k_max).astype(np.int64)


class MultiScaleRoIPooler(Module):
    """Pool each RoI from its FPN level (or from the one feature map) with RoIAlign,
    RoIPool or RoIWarp. No parameters; the caches go on the module's stack."""

    def __init__(self, output_size, scales, sampling_ratio: int = 2, op: str = "align",
                 aligned: bool = False, aggregation: str = "avg",
                 canonical_scale: float = 224, canonical_level: int = 4):
        """
        Args:
            output_size: PH or (PH, PW), 7 for the box head and 14 for the mask head.
            scales: spatial scale of each feature map, finest first ([1/4, ..., 1/32]).
            sampling_ratio: samples per bin per axis for "align" and "warp".
            op: "align" (paper), "pool" (Fast R-CNN) or "warp" (Table 2c).
            aligned: RoIAlign's half-pixel shift ("align" only).
            aggregation: "avg" or "max" for "align" and "warp" ("pool" is always max).
        """
        super().__init__()
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        if not scales:
            raise ValueError("scales must name at least one feature map")
        self.output_size = output_size
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = sampling_ratio
        self.op = op
        self.aligned = aligned
        self.aggregation = aggregation
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.k_min = round(-math.log2(self.scales[0]))  # 2 for stride 4
        self.k_max = round(-math.log2(self.scales[-1]))  # 5 for stride 32

    def _pool(self, feature, rois, scale):
        if self.op == "pool":
            return roi_pool_forward(feature, rois, self.output_size, scale)
        return roi_warp_forward(feature, rois, self.output_size, scale,
                                self.sampling_ratio, self.aggregation)

    def _unpool(self, dout, cache):
        if self.op == "pool":
            return roi_pool_backward(dout, cache)
        return roi_warp_backward(dout, cache)

    def levels(self, rois):
        """(R,) int64 index into the feature list of the map each RoI is pooled from."""
        xp = get_xp(rois)
        if len(self.scales) == 1:
            return xp.zeros(rois.shape[0], dtype=np.int64)
        k = level_mapper(rois[:, 1:5], self.k_min, self.k_max, self.canonical_scale,
                         self.canonical_level)
        return k - self.k_min

    def forward(self, features, rois):
        """
        Args:
            features: L arrays (N, C, H_l, W_l), finest first, matching ``scales``.
            rois: (R, 5) ``[batch_index, x1, y1, x2, y2]`` in image pixels.
        Returns:
            (R, C, PH, PW), row r pooled from level ``levels(rois)[r]``.
        """
        if len(features) != len(self.scales):
            raise ValueError(f"got {len(features)} feature maps for {len(self.scales)} scales")
        levels = self.levels(rois)
        if self.op == "align":  # every level in one call (one launch set on a GPU)
            out, cache = roi_align_levels_forward(features, rois, levels, self.scales,
                                                  self.output_size, self.sampling_ratio,
                                                  self.aligned, self.aggregation)
            self.push(cache)
            return out
        out, cache = pool_levels(features, rois, levels, lambda feature, level_rois, level:
                                 self._pool(feature, level_rois, self.scales[level]))
        if out is None:  # no RoIs at all
            xp = get_xp(rois, *features)
            PH, PW = as_pair(self.output_size)
            out = xp.zeros((rois.shape[0], features[0].shape[1], PH, PW),
                           dtype=features[0].dtype)
        self.push(cache)
        return out

    def backward(self, dout):
        """
        Args:
            dout: (R, C, PH, PW).
        Returns:
            L arrays dfeatures (N, C, H_l, W_l): each RoI's gradient in its own level.
        """
        cache = self.pop()
        if self.op == "align":
            return roi_align_levels_backward(dout, cache)
        return unpool_levels(dout, cache, self._unpool)
