"""Pictures of boxes before detection: a sample of anchors, the top proposals, coloured by
size or score (lessons 04 and 05). Part of :mod:`npmaskrcnn.visualize`, which re-exports them
(and whose figure helpers they use, imported when they draw: ``visualize`` imports this file).
Host-only drawing code; no gradient flows here.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .backend import asnumpy


def _draw_boxes(ax, boxes, values, cmap_name: str, linewidth: float = 0.8):
    """Unfilled boxes coloured by ``values`` through a colormap; returns the colour norm."""
    norm = Normalize(vmin=float(values.min()), vmax=float(values.max()))
    if norm.vmin == norm.vmax:
        norm = Normalize(vmin=norm.vmin - 1.0, vmax=norm.vmax + 1.0)
    cmap = matplotlib.colormaps[cmap_name]
    for box, value in zip(boxes, values):
        x1, y1, x2, y2 = (float(v) for v in box)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                               edgecolor=cmap(norm(value)), linewidth=linewidth))
    return norm


def _colorbar(fig, ax, norm, cmap_name: str, label: str) -> None:
    mappable = ScalarMappable(norm=norm, cmap=cmap_name)
    fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02, label=label)


def show_anchors(image, anchors, path=None, max_anchors=300, seed=0) -> Figure:
    """Anchors over an image, coloured by size sqrt(w h); the view widens to show boxes that
    cross the border. With more than ``max_anchors``, a seeded random subset is drawn.

    Args:
        image: (3, H, W) or (H, W, 3) in [0, 1].
        anchors: (A, 4) x1y1x2y2 in image pixels (``AnchorGenerator`` output for one image).
    """
    from .visualize import _figure, save_figure, to_hwc

    img = to_hwc(image)
    height, width = img.shape[:2]
    anchors = asnumpy(anchors).reshape(-1, 4).astype(np.float64)
    total = len(anchors)
    if total > max_anchors:
        pick = np.random.default_rng(seed).choice(total, max_anchors, replace=False)
        anchors = anchors[np.sort(pick)]
    fig = _figure(image)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, extent=(0, width, height, 0), interpolation="nearest")
    if len(anchors):
        sizes = np.sqrt((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]))
        norm = _draw_boxes(ax, anchors, sizes, "viridis")
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        ax.plot(centres[:, 0], centres[:, 1], ".", color="white", markersize=2)
        _colorbar(fig, ax, norm, "viridis", "anchor size sqrt(wh)")
        ax.set_xlim(min(0.0, anchors[:, 0].min()), max(width, anchors[:, 2].max()))
        ax.set_ylim(max(height, anchors[:, 3].max()), min(0.0, anchors[:, 1].min()))
    ax.set_title(f"{len(anchors)} of {total} anchors", fontsize=9)
    return save_figure(fig, path)


def show_proposals(image, proposals, scores=None, top=50, path=None) -> Figure:
    """The ``top`` proposals over an image (highest scores first when scores are given),
    coloured by objectness score, or by rank without scores."""
    from .visualize import _figure, save_figure, to_hwc

    img = to_hwc(image)
    height, width = img.shape[:2]
    proposals = asnumpy(proposals).reshape(-1, 4).astype(np.float64)
    if scores is not None:
        scores = asnumpy(scores).reshape(-1).astype(np.float64)
        order = np.argsort(-scores, kind="stable")[:top]
        proposals, values, label = proposals[order], scores[order], "objectness score"
    else:
        proposals = proposals[:top]
        values, label = -np.arange(len(proposals), dtype=np.float64), "minus rank"
    fig = _figure(image)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(img, extent=(0, width, height, 0), interpolation="nearest")
    if len(proposals):
        norm = _draw_boxes(ax, proposals, values, "plasma", linewidth=1.0)
        _colorbar(fig, ax, norm, "plasma", label)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    ax.set_title(f"top {len(proposals)} proposals", fontsize=9)
    return save_figure(fig, path)
