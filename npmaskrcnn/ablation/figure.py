"""The ablation's figure: mask (keypoint) AP bars per table, and every variant's masks (or
keypoints, for a keypoint table) on the same RoIs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..backend import asnumpy, to_backend
from ..config import MaskRCNNConfig
from ..engine.checkpoint import load_checkpoint, read_meta
from .runs import value
from .stats import mean_std
from .variants import KEYPOINT_DATA, TABLES, TASK, label, metrics


def masks_on_rois(model, image, boxes, labels):
    """The mask branch of ``model`` on given boxes (the same RoIs for every variant):
    (D, H, W) mask probabilities pasted into the (3, H, W) image. No gradient."""
    from ..model.postprocess import mask_probabilities
    from ..model.roi_heads import boxes_to_rois
    from ..model.transform import resize_boxes

    model.eval()
    image, boxes, labels = (to_backend(a) for a in (image, boxes, labels))
    batch, sizes, _ = model.transform([image], None)
    features = model.backbone(batch)[: model.num_pooled_levels]
    scaled = resize_boxes(boxes, tuple(image.shape[-2:]), sizes[0])
    heads = model.roi_heads
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(
        features, boxes_to_rois([scaled]))))  # (D, K, M, M)
    probs = mask_probabilities(logits, labels, heads.cfg.mask_loss)  # (D, 1, M, M)
    det = [{"boxes": scaled, "labels": labels, "masks": probs}]
    return asnumpy(model.transform.postprocess(det, sizes, [tuple(image.shape[-2:])])[0]["masks"])


def keypoints_on_rois(model, image, boxes):
    """The keypoint branch of ``model`` on given boxes (the same RoIs for every variant):
    (D, K, 3) ``x, y, 1`` in the pixels of the (3, H, W) image. No gradient."""
    from ..model.keypoint_inference import heatmaps_to_keypoints
    from ..model.roi_heads import boxes_to_rois
    from ..model.transform import resize_boxes

    model.eval()
    image, boxes = to_backend(image), to_backend(boxes)
    batch, sizes, _ = model.transform([image], None)
    features = model.backbone(batch)[: model.num_pooled_levels]
    scaled = resize_boxes(boxes, tuple(image.shape[-2:]), sizes[0])
    heads, rois = model.roi_heads, boxes_to_rois([scaled])
    logits = heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(
        features, rois)))  # (D, K, 56, 56)
    keypoints, _ = heatmaps_to_keypoints(logits, rois)  # (D, K, 3) in resized pixels
    det = [{"boxes": scaled, "keypoints": keypoints}]
    return asnumpy(model.transform.postprocess(det, sizes, [tuple(image.shape[-2:])])[0][
        "keypoints"])


def keypoint_errors(keypoints, gt):
    """Per RoI, the mean distance in pixels from the predicted (D, K, 3) to the labelled
    (v > 0) ground-truth keypoints (D, K, 3); NaN where none is labelled."""
    labelled = gt[..., 2] > 0
    dist = np.linalg.norm(keypoints[..., :2] - gt[..., :2], axis=-1)  # (D, K)
    count = labelled.sum(axis=1)
    return np.where(count > 0, (dist * labelled).sum(axis=1) / np.maximum(count, 1), np.nan)


def _model(out: Path, v, backend):
    """The seed-0 model of variant ``v`` from its checkpoint, or None when there is none."""
    from ..model.mask_rcnn import MaskRCNN

    ckpt = out / v.key / "seed0" / "checkpoint.npz"
    if not ckpt.exists():
        return None
    model = MaskRCNN(MaskRCNNConfig.from_dict(read_meta(str(ckpt))["model_config"]),
                     backend=backend)
    load_checkpoint(str(ckpt), model)
    return model


def make_figure(path: Path, tables: dict, records: dict, out: Path, val_set, backend=None,
                rois: int = 3):
    """Bars (mask or keypoint AP/AP50/AP75, mean ± std over seeds) per table; below, the
    masks (keypoints, for a keypoint table) that each variant of the first table (seed 0)
    predicts on the same RoIs: the ``rois`` largest ground-truth boxes of one image of
    ``val_set`` (the first table's validation data), one row per RoI, zoomed in."""
    from matplotlib.figure import Figure

    from ..visualize import draw_instances

    first = next(iter(tables.values()))
    fig = Figure(figsize=(max(4.5 * len(tables), 1.9 * (len(first) + 1)), 4.5 + 1.9 * rois))
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.0, 1.9 * rois])
    for ax, (t, variants) in zip(top.subplots(1, len(tables), squeeze=False)[0], tables.items()):
        x = np.arange(len(variants))
        for j, metric in enumerate(metrics(t)[:3]):
            stats = [mean_std([value(r, metric) for r in records.get(v.key, {}).values()])
                     for v in variants]
            means, stds = (100 * np.array(a) for a in zip(*stats))
            ax.bar(x + (j - 1) * 0.27, np.nan_to_num(means), 0.27,
                   label=f"{TASK[metric[0]]} {metric[1]}",
                   yerr=np.nan_to_num(stds) if np.isfinite(stds).any() else None, capsize=2)
        ax.set_xticks(x, [label(v) for v in variants], rotation=20, ha="right", fontsize=7)
        ax.set_title(textwrap.fill(TABLES[t][0], 45), fontsize=8)  # several panels: wrap
        ax.set_ylabel("% (mean ± std over seeds)", fontsize=7)
        ax.legend(fontsize=6)
    # the validation image with the most instances among the first 20, its largest boxes
    index = max(range(min(20, len(val_set))), key=lambda i: len(val_set.load_target(i)["boxes"]))
    image, target = val_set[index]
    boxes = target["boxes"]
    pick = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                      kind="stable")[:rois]
    boxes, labels, gt = boxes[pick], target["labels"][pick], target["masks"][pick] > 0
    keypoints = first[0].data in KEYPOINT_DATA  # the keypoint branch instead of the mask's
    gt_kp = np.asarray(target["keypoints"])[pick] if keypoints else None  # (D, K, 3)
    columns = [("ground truth", gt.astype(np.float32), gt_kp)]
    for v in first:
        model = _model(out, v, backend) if v.key in records and len(boxes) else None
        if model is not None and keypoints:
            kp = keypoints_on_rois(model, image, boxes)  # (D, K, 3)
            err = keypoint_errors(kp, gt_kp)
            columns.append((f"{label(v)}\nkeypoint error " + " ".join(f"{x:.1f}" for x in err) +
                            " px", None, kp))
        elif model is not None:
            masks = masks_on_rois(model, image, boxes, labels)  # (D, H, W)
            iou = ((masks > 0.5) & gt).sum((1, 2)) / np.maximum(((masks > 0.5) | gt).sum((1, 2)), 1)
            columns.append((f"{label(v)}\nmask IoU " + " ".join(f"{x:.2f}" for x in iou), masks,
                            None))
    if len(boxes):
        axes = bottom.subplots(len(boxes), len(columns), squeeze=False)
        for c, (title, masks, kps) in enumerate(columns):
            for r, box in enumerate(boxes):
                ax = axes[r, c]
                draw_instances(ax, image, box[None], labels[r:r + 1], None,
                               None if masks is None else masks[r:r + 1], val_set.class_names,
                               keypoints=None if kps is None else kps[r:r + 1])
                pad = 0.3 * max(box[2] - box[0], box[3] - box[1]) + 2
                ax.set_xlim(box[0] - pad, box[2] + pad)
                ax.set_ylim(box[3] + pad, box[1] - pad)
            axes[0, c].set_title(title, fontsize=7)
        bottom.suptitle(f"{'keypoints' if keypoints else 'masks'} on the same RoIs: the "
                        f"ground-truth boxes of val image "
                        f"{target['image_id']} (seed-0 models)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return fig
