"""Anchors: the fixed reference boxes the RPN scores and regresses.

At every position of every FPN level sit ``A`` anchors, one per (size, aspect ratio)
pair of that level (FPN section 4.1: one size per level, 32 on P2 ... 512 on P6, and
ratios 1:2, 1:1, 2:1, so ``A = 3``). With aspect ratio ``r = h / w`` and size ``s``,

    h = s * sqrt(r)        w = s / sqrt(r)        (so that h * w = s^2)

and the zero-centred "cell anchor" is ``(-w/2, -h/2, w/2, h/2)`` rounded to integers.
The cell anchors are shifted to ``(x * stride_x, y * stride_y)`` for each feature-map
position ``(y, x)``, where ``stride = padded image size // feature size`` (integer
division): anchor centres sit at multiples of the stride, not at (i + 0.5) * stride.
Boxes follow the convention of ``boxes/ops.py``.

This is torchvision's ``models/detection/anchor_utils.AnchorGenerator`` exactly,
including its order: level, then row-major position, then the cell's anchors.

No gradient flows through anchors: they are constants of the architecture.
"""

from __future__ import annotations

import numpy as np


def generate_anchors(scales, aspect_ratios, dtype=np.float32, xp=np):
    """The zero-centred cell anchors of one level.

    Computed in ``dtype`` in torchvision's order (``h_ratios = sqrt(r)``,
    ``w_ratios = 1 / h_ratios``, then ratio-major, scale-minor), and rounded half to
    even like ``torch.round``, so the integer corners agree with torchvision's.

    Args:
        scales: anchor sizes ``s`` (square-root areas) in pixels.
        aspect_ratios: ratios ``r = h / w``.
        dtype: float dtype of the computation and result.
        xp: array module of the result.
    Returns:
        (len(aspect_ratios) * len(scales), 4) anchors ``(x1, y1, x2, y2)`` around 0.
    """
    scales = xp.asarray(scales, dtype=dtype)
    aspect_ratios = xp.asarray(aspect_ratios, dtype=dtype)
    h_ratios = xp.sqrt(aspect_ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (ratios, scales) -> (A,)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base_anchors = xp.stack([-ws, -hs, ws, hs], axis=1) / 2  # (A, 4)
    return xp.round(base_anchors)


class AnchorGenerator:
    """Anchors for a list of feature maps, as torchvision's ``AnchorGenerator``.

    Args:
        sizes: one tuple of sizes per level (a flat tuple means one size per level).
        aspect_ratios: one tuple of ratios ``h / w`` per level (a flat tuple is
            repeated for every level).

    Attributes:
        cell_anchors: per level, the (A_l, 4) float32 NumPy cell anchors.
    """

    def __init__(self, sizes=((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios=((0.5, 1.0, 2.0),) * 5):
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError("need one tuple of aspect ratios per level of sizes")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [generate_anchors(s, r)
                             for s, r in zip(self.sizes, self.aspect_ratios)]

    def num_anchors_per_location(self):
        """``A_l = len(sizes[l]) * len(aspect_ratios[l])`` for each level ``l``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes, strides, xp=np, dtype=np.float32):
        """Shift every level's cell anchors over its feature grid.

        Anchor ``a`` at position ``(y, x)`` of level ``l`` is
        ``cell_anchors[l][a] + (x * sx, y * sy, x * sx, y * sy)``.

        Args:
            grid_sizes: per level, the feature map's ``(h, w)``.
            strides: per level, ``(sy, sx)`` in image pixels per feature cell.
            xp: array module of the result.
            dtype: float dtype of the result.
        Returns:
            per level, an (h * w * A_l, 4) array ordered (row-major position, anchor).
        """
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError("need one grid size and one stride per level of anchors: "
                             f"{len(grid_sizes)} grids, {len(strides)} strides, "
                             f"{len(self.cell_anchors)} levels")
        anchors = []
        for (grid_h, grid_w), (stride_h, stride_w), cell in zip(grid_sizes, strides,
                                                                 self.cell_anchors):
            cell = xp.asarray(cell, dtype=dtype)
            shifts_x = xp.arange(grid_w, dtype=dtype) * stride_w  # (w,)
            shifts_y = xp.arange(grid_h, dtype=dtype) * stride_h  # (h,)
            shift_y, shift_x = xp.meshgrid(shifts_y, shifts_x, indexing="ij")  # (h, w) each
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = xp.stack([shift_x, shift_y, shift_x, shift_y], axis=1)  # (h*w, 4)
            # (h*w, 1, 4) + (1, A, 4) -> (h*w, A, 4) -> (h*w*A, 4)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return anchors

    def __call__(self, image_size, feature_sizes, xp=np, dtype=np.float32):
        """Anchors of a batch whose images are padded to ``image_size``.

        Args:
            image_size: ``(H, W)`` of the padded batch tensor.
            feature_sizes: per level, the feature map's ``(h_l, w_l)``.
            xp: array module of the result (numpy or cupy).
            dtype: float dtype of the result.
        Returns:
            per level, an (h_l * w_l * A_l, 4) array; the same anchors serve every
            image of the batch.
        """
        height, width = (int(v) for v in image_size)
        grid_sizes = [(int(h), int(w)) for h, w in feature_sizes]
        # integer division, as torchvision: a 800x1067 image padded to 800x1088 with a
        # 25x34 P5 map has strides (32, 32)
        strides = [(height // h, width // w) for h, w in grid_sizes]
        return self.grid_anchors(grid_sizes, strides, xp=xp, dtype=dtype)
