"""Captions: none covers another, whatever the boxes (checked on the rendered figure)."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from npmaskrcnn.visualize import draw_instances


@pytest.mark.parametrize("boxes", [
    [[5, 4, 20, 14], [5, 4, 30, 20], [6, 5, 25, 25]],  # one corner, nested
    [[0, 0, 48, 32], [1, 0, 40, 30], [2, 1, 30, 20], [0, 2, 10, 10]],  # at the top edge
])
def test_captions_do_not_overlap(boxes):
    image = np.full((3, 32, 48), 0.3, np.float32)
    boxes = np.array(boxes, np.float32)
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot(1, 1, 1)
    draw_instances(ax, image, boxes, np.arange(len(boxes)) % 2 + 1,
                   np.linspace(0.9, 0.6, len(boxes)), class_names=["bg", "square", "circle"])
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    extents = [t.get_bbox_patch().get_window_extent(canvas.get_renderer()) for t in ax.texts]
    assert len(extents) == len(boxes)
    for i in range(len(extents)):
        for j in range(i):
            assert not extents[i].overlaps(extents[j]), (i, j)
