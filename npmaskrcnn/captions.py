"""Captions that do not cover one another: a label per box, placed by a greedy search.

A caption is first put above its box; when that spot is taken by an earlier caption (two
boxes with nearly the same top-left corner, a box inside another), it tries inside the box's
top edge, then below the box, then further down in steps of its own height. Sizes are the
ones matplotlib will draw: the text is measured with an Agg renderer at the figure's dpi, and
data coordinates are mapped to pixels with the axes' final transform.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import RendererAgg


def _overlaps(a, b, margin: float = 1.0) -> bool:
    """Whether two (x0, y0, x1, y1) rectangles come closer than ``margin``."""
    return (a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin
            and b[1] < a[3] + margin)


def place_captions(ax, texts, boxes) -> None:
    """Move captions so that none covers another: each goes to the first free spot of
    above its box, inside its top edge, below its box, then further down in steps of its
    own height; a spot inside the axes is preferred.

    Args:
        texts: matplotlib Text objects (``ha="left"``, ``va="bottom"``, a ``bbox`` with a
            ``pad`` in points), in drawing order.
        boxes: their boxes (x1, y1, x2, y2) in data coordinates of ``ax``.
    """
    if not texts:
        return
    fig = ax.figure
    ax.apply_aspect()  # the final axes box, so that data -> display is what will be drawn
    to_display, to_data = ax.transData, ax.transData.inverted()
    width, height = fig.bbox.width, fig.bbox.height
    renderer = RendererAgg(max(int(width), 1), max(int(height), 1), fig.dpi)
    frame = ax.get_window_extent()
    placed = []
    for text, (x1, y1, _, y2) in zip(texts, boxes):
        patch = text.get_bbox_patch()  # its pad is a fraction of the font size
        pad = patch.get_boxstyle().pad * text.get_size() * fig.dpi / 72.0 if patch else 0.0
        (left, top), (_, bottom) = to_display.transform([(x1, y1), (x1, y2)])
        top, bottom = max(top, bottom), min(top, bottom)  # display y grows upwards
        anchor = to_display.transform(text.get_position())
        extent = text.get_window_extent(renderer)  # the text alone, at its anchor
        dx, dy = extent.x0 - anchor[0], extent.y0 - anchor[1]
        w, h = extent.width + 2 * pad, extent.height + 2 * pad  # the painted box
        step = h + 2.0  # a stacked caption keeps a 2-pixel gap
        lows = [top + 1.0, top - h, bottom - step] + [top - step * (k + 2) for k in range(12)]
        rects = [(left + dx - pad, y, left + dx - pad + w, y + h) for y in lows]
        free = [r for r in rects if not any(_overlaps(r, p) for p in placed)]
        framed = [r for r in free if r[1] >= frame.y0 and r[3] <= frame.y1]
        best = (framed or free or rects)[0]
        placed.append(best)
        text.set_position(to_data.transform((best[0] - dx + pad, best[1] - dy + pad)))
