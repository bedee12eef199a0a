"""Pictures of the data path: instances, anchors, proposals, predictions, loss curves.

Host-only code. Arrays (NumPy or CuPy) are brought to the host with
:func:`~npmaskrcnn.backend.asnumpy`; images may be (3, H, W) or (H, W, 3) in [0, 1] (uint8
images are divided by 255). Figures are built as ``matplotlib.figure.Figure`` objects, not
through pyplot, so no GUI backend is ever touched and nothing is shown: PNGs are rendered by
Agg when a ``path`` is given, and the figure is returned (a notebook displays it). Colours are
fixed per class (:func:`class_color`), so a class looks the same in every picture, and are
saturated, so that a mask painted at half opacity stays visible on a light image.

Large photos: a figure is a few hundred pixels wide, so an image larger than
:data:`MAX_DISPLAY_SIDE` is drawn from every k-th pixel (masks alike, with their outlines at
that resolution), in its own pixel coordinates; memory then grows with the display, not
the photo. Masks may be given lazily (any sequence whose items are (H, W) masks, such as
:class:`~npmaskrcnn.engine.predict.PastedMasks`): they are read one at a time.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .backend import asnumpy
from .captions import place_captions
from .skeletons import draw_skeletons
from .visualize_boxes import show_anchors, show_proposals  # noqa: F401 - part of this page

LOSS_KEYS = ("loss", "loss_objectness", "loss_rpn_box_reg", "loss_classifier",
             "loss_box_reg", "loss_mask")
# 20 saturated colours: tab10, then the two darkest shades of each of tab20b's five hues
# (tab20's odd entries are pastel shades that vanish under a half-opaque mask on a light image)
_PALETTE = tuple(matplotlib.colormaps["tab10"].colors) + tuple(
    matplotlib.colormaps["tab20b"].colors[4 * hue + shade] for shade in (0, 1)
    for hue in range(5))
MAX_DISPLAY_SIDE = 1600  # pixels drawn along an image's long side, at most
CAPTION_FONT_SIZE = 7


def class_color(label: int) -> tuple[float, float, float]:
    """The RGB colour of a class index: fixed, 20 distinct colours before they repeat."""
    return tuple(float(c) for c in _PALETTE[int(label) % len(_PALETTE)])


def _layout(shape) -> str:
    """"hw", "chw" or "hwc": how an image array of this shape is laid out."""
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3):
        return "chw"
    if len(shape) == 3 and shape[-1] in (1, 3):
        return "hwc"
    raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {tuple(shape)}")


def image_size(image) -> tuple[int, int]:
    """(H, W) of an image in any layout :func:`to_hwc` accepts, without converting it."""
    layout = _layout(image.shape)
    return tuple(int(v) for v in (image.shape[1:] if layout == "chw" else image.shape[:2]))


def to_hwc(image, step: int = 1) -> np.ndarray:
    """An image as an (H, W, 3) float array in [0, 1] on the host.

    Accepts (3, H, W), (1, H, W), (H, W, 3), (H, W, 1) and (H, W), float in [0, 1] or uint8.
    A leading axis of 1 or 3 with a last axis that is neither is read as channels-first.
    ``step`` > 1 keeps every ``step``-th row and column (taken before any copy is made).
    """
    layout = _layout(image.shape)
    image = image[:, ::step, ::step] if layout == "chw" else image[::step, ::step]
    image = asnumpy(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    image = image.astype(np.float64)
    if layout == "hw":
        image = image[:, :, None]
    elif layout == "chw":
        image = image.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image, 0.0, 1.0)


def _paint(out: np.ndarray, mask: np.ndarray, color, alpha: float) -> None:
    """In place: ``out = (1 - alpha) * out + alpha * colour`` where ``mask``."""
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float64)


def blend_masks(image: np.ndarray, masks: np.ndarray, colors, alpha: float = 0.5) -> np.ndarray:
    """Paint binary masks over an image: ``out = (1 - alpha) * out + alpha * colour`` inside.

    Args:
        image: (H, W, 3) float in [0, 1].
        masks: (D, H, W) bool, painted in order (a later mask over an earlier one).
        colors: D RGB triples.
        alpha: opacity of the paint.
    Returns:
        A new (H, W, 3) array.
    """
    out = np.array(image, dtype=np.float64)
    for mask, color in zip(masks, colors):
        _paint(out, mask, color, alpha)
    return out


def _mask_reader(masks):
    """``d -> (H, W) bool`` for (D, H, W) / (D, 1, H, W) arrays or a lazy sequence of masks."""
    if masks is None:
        return None
    if hasattr(masks, "shape"):  # an array (NumPy or device): to the host once
        masks = asnumpy(masks)
        if masks.ndim == 4:  # (D, 1, H, W) -> (D, H, W)
            masks = masks[:, 0]
        return lambda d: masks[d] > 0.5
    return lambda d: np.asarray(masks[d]) > 0.5  # one at a time (e.g. PastedMasks)


def _outline(ax, binary: np.ndarray, step: int, color) -> None:
    """The contour at 1/2 of a 0/1 map drawn at every ``step``-th pixel, computed on the
    map's bounding rows and columns plus one zero pixel around them (so it is closed, also
    at the image border and for a one-pixel-wide image). Display pixel (i, j) covers image
    pixels [i*step, (i+1)*step), centre ((j + 1/2) step, (i + 1/2) step)."""
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if not len(rows):
        return
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(binary[r0:r1, c0:c1], 1).astype(np.float64)
    ys = (np.arange(r0 - 1, r1 + 1) + 0.5) * step
    xs = (np.arange(c0 - 1, c1 + 1) + 0.5) * step
    ax.contour(xs, ys, crop, levels=[0.5], colors=[color], linewidths=1.0)


def _name(label: int, class_names) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def draw_instances(ax, image, boxes, labels, scores=None, masks=None, class_names=None,
                   score_thresh=0.5, alpha=0.5, keypoints=None):
    """Draw an image with its instances: translucent masks with contours, boxes, captions,
    and skeletons (:func:`~npmaskrcnn.skeletons.draw_skeletons`).

    Args:
        ax: a matplotlib Axes.
        image: (3, H, W) or (H, W, 3) in [0, 1].
        boxes: (D, 4) x1y1x2y2 pixels.
        labels: (D,) class indices (coloured with :func:`class_color`).
        scores: (D,) or None; instances scoring below ``score_thresh`` are not drawn, and the
            caption reads "name 0.93".
        masks: (D, H, W) or (D, 1, H, W) probabilities or binary masks (drawn where > 0.5), a
            lazy sequence of D (H, W) masks read one at a time, or None.
        class_names: index -> name (``CocoDataset.class_names``); None: the index is shown.
        score_thresh: smallest score drawn (ignored without scores).
        alpha: opacity of the masks.
        keypoints: (D, K, 3) ``x, y, v`` of the instances (a model's when ``scores`` are
            given), or None.
    Returns:
        The number of instances drawn.
    """
    height, width = image_size(image)
    step = max(1, math.ceil(max(height, width) / MAX_DISPLAY_SIDE))
    img = to_hwc(image, step)  # (ceil(H / step), ceil(W / step), 3)
    boxes = asnumpy(boxes).reshape(-1, 4)
    labels = asnumpy(labels).reshape(-1).astype(np.int64)
    keep = np.ones(len(boxes), dtype=bool)
    if scores is not None:
        scores = asnumpy(scores).reshape(-1)
        keep = scores >= score_thresh
    kept = np.flatnonzero(keep)
    colors = [class_color(labels[d]) for d in kept]
    mask_of = _mask_reader(masks)
    if mask_of is not None:
        for d, color in zip(kept, colors):  # later masks over earlier ones
            binary = mask_of(int(d))[::step, ::step]
            _paint(img, binary, color, alpha)
            _outline(ax, binary, step, color)
    ax.imshow(img, extent=(0, width, height, 0), interpolation="nearest")
    if keypoints is not None:
        draw_skeletons(ax, asnumpy(keypoints)[kept], colors, predicted=scores is not None)
    texts = []
    for d, color in zip(kept, colors):
        x1, y1, x2, y2 = (float(v) for v in boxes[d])
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                               linewidth=1.5))
        caption = _name(int(labels[d]), class_names)
        if scores is not None:
            caption += f" {float(scores[d]):.2f}"
        texts.append(ax.text(x1, y1, caption, fontsize=CAPTION_FONT_SIZE, color="white",
                             va="bottom", ha="left",
                             bbox={"facecolor": color, "alpha": 0.8, "pad": 1.0,
                                   "edgecolor": "none"}))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    place_captions(ax, texts, boxes[kept])
    return len(kept)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _figure(image, ncols: int = 1, scale: float = 6.0) -> Figure:
    """A figure of ``ncols`` panels shaped like the image, ``scale`` inches on its long side."""
    height, width = image_size(image)
    side = scale / max(height, width)
    return Figure(figsize=(max(width * side, 2.0) * ncols, max(height * side, 2.0) + 0.4))


def save_figure(fig: Figure, path=None, dpi: int = 100) -> Figure:
    """Write ``fig`` as an image file when ``path`` is given (folders created); return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def show_prediction(image, prediction, class_names=None, path=None, score_thresh=0.5) -> Figure:
    """One image with a model's detections (``boxes``, ``labels``, ``scores``, ``masks``,
    ``keypoints``)."""
    fig = _figure(image)
    ax = fig.add_subplot(1, 1, 1)
    shown = draw_instances(ax, image, prediction["boxes"], prediction["labels"],
                           prediction.get("scores"), prediction.get("masks"), class_names,
                           score_thresh, keypoints=prediction.get("keypoints"))
    ax.set_title(f"prediction: {_plural(shown, 'detection')}, score >= {score_thresh}",
                 fontsize=9)
    return save_figure(fig, path)


def show_gt_vs_pred(image, target, prediction, class_names=None, path=None,
                    score_thresh=0.5) -> Figure:
    """Ground truth (left) and prediction (right) of the same image, side by side."""
    fig = _figure(image, ncols=2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    n_gt = draw_instances(left, image, target["boxes"], target["labels"], None,
                          target.get("masks"), class_names, keypoints=target.get("keypoints"))
    left.set_title(f"ground truth: {_plural(n_gt, 'instance')}", fontsize=9)
    n_pred = draw_instances(right, image, prediction["boxes"], prediction["labels"],
                            prediction.get("scores"), prediction.get("masks"), class_names,
                            score_thresh, keypoints=prediction.get("keypoints"))
    right.set_title(f"prediction: {_plural(n_pred, 'detection')}, score >= {score_thresh}",
                    fontsize=9)
    return save_figure(fig, path)


def read_log(log) -> list[dict]:
    """Records of a JSON-lines training log (a path), or the list itself.

    Blank lines are skipped; lines that are not JSON (a last line cut off by an interrupted
    run) are skipped with one warning that counts them.
    """
    if not isinstance(log, (str, Path)):
        return [dict(r) for r in log]
    records, bad = [], 0
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        warnings.warn(f"{log}: skipped {bad} line(s) that are not JSON", stacklevel=2)
    return records


def plot_loss_curves(log, path=None, keys=None) -> Figure:
    """Training losses against iteration, log-scale y, one line per loss; lr on a twin axis.

    Args:
        log: path of a JSON-lines log (one record per line with ``iter`` and loss keys, as the
            trainer writes) or a list of such dicts.
        keys: the losses to plot; None: every key of :data:`LOSS_KEYS` and any other key that
            starts with ``loss`` found in the log. Records without a key are skipped for it,
            and values <= 0 are left out (log scale).
    """
    records = [r for r in read_log(log) if "iter" in r]
    if keys is None:
        found = {k for r in records for k in r if k.startswith("loss")}
        keys = [k for k in LOSS_KEYS if k in found] + sorted(found - set(LOSS_KEYS))
    fig = Figure(figsize=(10, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for key in keys:
        points = [(r["iter"], float(r[key])) for r in records
                  if r.get(key) is not None and float(r[key]) > 0]
        if points:
            it, value = zip(*points)
            ax.plot(it, value, label=key, linewidth=2.0 if key == "loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    lr = [(r["iter"], float(r["lr"])) for r in records if r.get("lr") is not None]
    handles = list(ax.lines)
    if lr:
        twin = ax.twinx()
        it, value = zip(*lr)
        handles += twin.plot(it, value, color="grey", linestyle="--", linewidth=1.0, label="lr")
        twin.set_ylabel("learning rate")
    if handles:  # one legend for both axes, outside the plot, so it never hides a curve
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.1 if lr else 1.02, 1.0),
                  fontsize=8, borderaxespad=0.0)
    ax.set_title("training losses", fontsize=10)
    return save_figure(fig, path)


def plot_grid(images, titles=None, ncols=4, path=None, scale=3.0) -> Figure:
    """Images in a grid of ``ncols`` columns, each with an optional title."""
    images = list(images)
    n = max(len(images), 1)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(scale * ncols, scale * nrows + 0.3 * nrows))
    for i, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(to_hwc(image), interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    return save_figure(fig, path)
