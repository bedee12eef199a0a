"""Visualisation: every function writes a non-empty PNG; mask painting is checked exactly."""

import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from npmaskrcnn.visualize import (
    blend_masks,
    class_color,
    draw_instances,
    plot_grid,
    plot_loss_curves,
    read_log,
    show_anchors,
    show_gt_vs_pred,
    show_prediction,
    show_proposals,
    to_hwc,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ["__background__", "square", "circle"]
H, W = 32, 48


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 500


def _render(fig) -> np.ndarray:
    """The figure's pixels, (h, w, 4) uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.4, (3, H, W)).astype(np.float32)
    masks = np.zeros((2, H, W), np.float32)
    masks[0, 4:14, 5:20] = 0.9
    masks[1, 15:30, 25:45] = 0.8
    target = {"boxes": np.array([[5, 4, 20, 14], [25, 15, 45, 30]], np.float32),
              "labels": np.array([1, 2]), "masks": (masks > 0.5).astype(np.uint8)}
    prediction = {"boxes": target["boxes"] + 1.0, "labels": np.array([1, 2]),
                  "scores": np.array([0.93, 0.31], np.float32), "masks": masks[:, None]}
    return image, target, prediction


def test_class_color_is_fixed_and_distinct():
    assert class_color(3) == class_color(3) == class_color(23)
    colors = {class_color(k) for k in range(20)}
    assert len(colors) == 20
    assert all(0.0 <= c <= 1.0 for rgb in colors for c in rgb)
    # no pastel: every colour is far from white, so a half-opaque mask stays visible
    assert max(min(rgb) for rgb in colors) < 0.6


class CountingMasks:
    """A lazy mask sequence that counts how often each mask is read."""

    def __init__(self, masks):
        self.masks, self.reads = masks, []

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, d):
        self.reads.append(d)
        return self.masks[d]


def test_lazy_masks_are_read_once_and_only_when_drawn(scene):
    image, _, prediction = scene
    lazy = CountingMasks(prediction["masks"][:, 0] > 0.5)
    ax = Figure().add_subplot(1, 1, 1)
    shown = draw_instances(ax, image, prediction["boxes"], prediction["labels"],
                           prediction["scores"], lazy, CLASS_NAMES)
    assert shown == 1 and lazy.reads == [0]  # the 0.31 detection is not drawn, not pasted
    eager = Figure().add_subplot(1, 1, 1)
    draw_instances(eager, image, prediction["boxes"], prediction["labels"],
                   prediction["scores"], prediction["masks"], CLASS_NAMES)
    np.testing.assert_array_equal(ax.images[0].get_array(), eager.images[0].get_array())


def test_large_and_one_pixel_wide_images(tmp_path):
    tall = np.full((3, 3200, 100), 0.5, np.float32)
    mask = np.zeros((1, 3200, 100), bool)
    mask[0, 1000:2000, 10:60] = True
    ax = Figure().add_subplot(1, 1, 1)
    draw_instances(ax, tall, np.array([[10, 1000, 60, 2000]]), np.array([1]), masks=mask)
    assert ax.images[0].get_array().shape == (1600, 50, 3)  # every 2nd pixel
    assert ax.images[0].get_extent() == [0, 100, 3200, 0]  # in the image's own pixels
    thin = np.full((3, 40, 1), 0.5, np.float32)  # (3, H, 1) reads as HWC: given as (H, 1, 3)
    line = np.zeros((1, 40, 1), bool)
    line[0, 5:30] = True
    show_prediction(thin.transpose(1, 2, 0), {"boxes": np.array([[0, 5, 1, 30]], np.float32),
                           "labels": np.array([1]), "scores": np.array([0.9]), "masks": line},
                    CLASS_NAMES, path=tmp_path / "thin.png")
    _assert_png(tmp_path / "thin.png")


def test_to_hwc_layouts():
    rng = np.random.default_rng(1)
    hwc = rng.uniform(size=(5, 7, 3))
    np.testing.assert_allclose(to_hwc(hwc.transpose(2, 0, 1)), hwc)
    np.testing.assert_allclose(to_hwc(hwc), hwc)
    np.testing.assert_allclose(to_hwc((hwc * 255).astype(np.uint8)),
                               np.floor(hwc * 255) / 255)
    grey = to_hwc(hwc[:, :, 0])
    assert grey.shape == (5, 7, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    assert to_hwc(np.full((3, 4, 4), 2.0)).max() == 1.0  # clipped to [0, 1]
    with pytest.raises(ValueError, match="expected an image"):
        to_hwc(np.zeros((4, 5, 6)))


def test_blend_masks_hand_case():
    image = np.zeros((2, 3, 3))
    image[..., 0] = 1.0  # red
    masks = np.zeros((2, 2, 3), bool)
    masks[0, 0, :2] = True
    masks[1, 0, 1] = True  # painted over the first
    out = blend_masks(image, masks, [(0, 0, 1), (0, 1, 0)], alpha=0.5)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(out[0, 1], [0.25, 0.5, 0.25])
    np.testing.assert_allclose(out[1], image[1])  # untouched
    np.testing.assert_allclose(image[0, 0], [1, 0, 0])  # input not modified


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_draw_instances_filters_scores_and_paints(scene, layout):
    image, _, prediction = scene
    img = image if layout == "chw" else image.transpose(1, 2, 0)
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot(1, 1, 1)
    shown = draw_instances(ax, img, prediction["boxes"], prediction["labels"],
                           prediction["scores"], prediction["masks"], CLASS_NAMES)
    assert shown == 1  # 0.31 < 0.5
    assert [t.get_text() for t in ax.texts] == ["square 0.93"]
    assert len(ax.patches) == 1
    painted = ax.images[0].get_array()
    expected = 0.5 * image.transpose(1, 2, 0)[8, 10] + 0.5 * np.array(class_color(1))
    np.testing.assert_allclose(painted[8, 10], expected, rtol=1e-6)
    np.testing.assert_allclose(painted[20, 30], image.transpose(1, 2, 0)[20, 30], rtol=1e-6)
    assert _render(fig).shape[-1] == 4


def test_draw_instances_with_zero_instances(xp):
    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot(1, 1, 1)
    shown = draw_instances(ax, xp.zeros((3, H, W)), xp.zeros((0, 4)), xp.zeros(0, np.int64),
                           xp.zeros(0), xp.zeros((0, H, W)), CLASS_NAMES)
    assert shown == 0 and not ax.texts and not ax.patches
    _render(fig)


def test_draw_instances_without_names_or_scores(scene, xp):
    image, target, _ = scene
    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot(1, 1, 1)
    boxes, labels, masks = (xp.asarray(target[k]) for k in ("boxes", "labels", "masks"))
    assert draw_instances(ax, xp.asarray(image), boxes, labels, masks=masks) == 2
    assert [t.get_text() for t in ax.texts] == ["1", "2"]


def test_show_prediction_and_gt_vs_pred_write_pngs(scene, tmp_path):
    image, target, prediction = scene
    fig = show_prediction(image, prediction, CLASS_NAMES, path=tmp_path / "pred.png")
    assert isinstance(fig, Figure)
    _assert_png(tmp_path / "pred.png")
    fig = show_gt_vs_pred(image.transpose(1, 2, 0), target, prediction, CLASS_NAMES,
                          path=tmp_path / "sub" / "gt_vs_pred.png")
    assert len(fig.axes) == 2
    _assert_png(tmp_path / "sub" / "gt_vs_pred.png")
    assert show_prediction(image, prediction, CLASS_NAMES) is not None  # no path: no file
    assert fig.axes[0].get_title() == "ground truth: 2 instances"
    one = show_prediction(image, prediction, CLASS_NAMES)
    assert one.axes[0].get_title() == "prediction: 1 detection, score >= 0.5"


def test_show_anchors_and_proposals_write_pngs(scene, tmp_path):
    image = scene[0]
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, W, (500, 2))
    half = rng.uniform(2, 20, (500, 1))
    anchors = np.concatenate([centres - half, centres + half], axis=1)  # some cross the border
    fig = show_anchors(image, anchors, path=tmp_path / "anchors.png", max_anchors=100)
    _assert_png(tmp_path / "anchors.png")
    assert fig.axes[0].get_title() == "100 of 500 anchors"
    assert fig.axes[0].get_xlim()[0] < 0  # view widened to show the border-crossers
    scores = rng.uniform(size=500)
    fig = show_proposals(image, anchors, scores, top=20, path=tmp_path / "proposals.png")
    _assert_png(tmp_path / "proposals.png")
    assert len(fig.axes[0].patches) == 20
    show_proposals(image, anchors[:5], path=tmp_path / "no_scores.png")
    _assert_png(tmp_path / "no_scores.png")
    show_anchors(image, np.zeros((0, 4)), path=tmp_path / "none.png")
    _assert_png(tmp_path / "none.png")


def _log_records(n=30):
    records = []
    for i in range(n):
        r = {"iter": i * 10, "lr": 0.02 * min(1.0, (i + 1) / 5)}
        for j, key in enumerate(["loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                                 "loss_box_reg", "loss_mask"]):
            r[key] = (j + 1) * 0.5 * np.exp(-i / 10)
        r["loss"] = sum(v for k, v in r.items() if k.startswith("loss_"))
        records.append(r)
    return records


def test_plot_loss_curves_from_file_and_list(tmp_path):
    records = _log_records()
    log = tmp_path / "log.jsonl"
    lines = [json.dumps(r) for r in records] + ["", '{"iter": 300, "loss": 0.1']  # cut off
    log.write_text("\n".join(lines))
    with pytest.warns(UserWarning, match="skipped 1 line"):
        fig = plot_loss_curves(log, path=tmp_path / "loss.png")
    _assert_png(tmp_path / "loss.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines][0] == "loss"
    assert len(ax.lines) == 6 and len(fig.axes) == 2  # 6 losses + twin axis for lr
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()][-1] == "lr"  # one legend for both axes
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())  # beside the plot
    fig = plot_loss_curves(records, path=tmp_path / "loss2.png", keys=["loss_mask"])
    assert [line.get_label() for line in fig.axes[0].lines] == ["loss_mask"]
    _assert_png(tmp_path / "loss2.png")
    assert read_log(records) == records


def test_plot_grid_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=(3, 8, 8)), rng.uniform(size=(8, 8, 3)), rng.uniform(size=(8, 8))]
    fig = plot_grid(images, titles=["a", "b", "c"], ncols=2, path=tmp_path / "grid.png")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    _assert_png(tmp_path / "grid.png")
