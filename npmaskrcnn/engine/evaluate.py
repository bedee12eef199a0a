"""COCO evaluation: detections -> COCO result records -> ``COCOeval`` box, mask, keypoint AP.

The path is the one of torchvision's ``references/detection/coco_eval.py`` and detectron2's
``COCOEvaluator``::

    model.predict(images)                     boxes x1y1x2y2, labels 1..K-1, scores, masks,
                                              keypoints
      -> predictions_to_coco                  bbox [x, y, w, h], category_id, RLE segmentation,
                                              keypoints [x1, y1, v1, ...]
      -> coco_evaluate (pycocotools COCOeval) the 12 summary numbers per IoU type (10 for
                                              keypoints, whose "IoU" is the OKS)

Keypoints are scored by the object keypoint similarity (OKS), COCO's IoU for keypoints: for a
detection and a ground-truth person of area s^2, OKS = mean over the labelled keypoints of
exp(-d_k^2 / (2 s^2 (2 sigma_k)^2)), d_k the distance of keypoint k from its ground truth and
sigma_k its per-keypoint constant (the file's category ``sigmas`` when given, else COCO's
``COCO_OKS_SIGMAS``). AP is then the mean precision over OKS thresholds 0.50:0.95, as for boxes.

Host-only code: arrays are brought to NumPy with :func:`~npmaskrcnn.backend.asnumpy` at the
boundary, and no gradient flows here. The numbers are COCO's fractions in [0, 1]; COCO writes
-1 where a number is undefined (no ground truth in that area range or category).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..backend import asnumpy, to_backend
from ..data.keypoints import COCO_OKS_SIGMAS
from .progress import Progress

# The 12 numbers of COCOeval.summarize, in the order of ``COCOeval.stats``.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
STAT_DESCRIPTIONS = (
    "AP  @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AP  @[IoU=0.50      | area=   all | maxDets=100]",
    "AP  @[IoU=0.75      | area=   all | maxDets=100]",
    "AP  @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AP  @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP  @[IoU=0.50:0.95 | area= large | maxDets=100]",
    "AR  @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
    "AR  @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
    "AR  @[IoU=0.50:0.95 | area=   all | maxDets=100]",
    "AR  @[IoU=0.50:0.95 | area= small | maxDets=100]",
    "AR  @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR  @[IoU=0.50:0.95 | area= large | maxDets=100]",
)
# The 10 numbers of COCOeval.summarize for iouType "keypoints" (maxDets 20; no small range).
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
KEYPOINT_STAT_DESCRIPTIONS = (
    "AP  @[OKS=0.50:0.95 | area=   all | maxDets= 20]",
    "AP  @[OKS=0.50      | area=   all | maxDets= 20]",
    "AP  @[OKS=0.75      | area=   all | maxDets= 20]",
    "AP  @[OKS=0.50:0.95 | area=medium | maxDets= 20]",
    "AP  @[OKS=0.50:0.95 | area= large | maxDets= 20]",
    "AR  @[OKS=0.50:0.95 | area=   all | maxDets= 20]",
    "AR  @[OKS=0.50      | area=   all | maxDets= 20]",
    "AR  @[OKS=0.75      | area=   all | maxDets= 20]",
    "AR  @[OKS=0.50:0.95 | area=medium | maxDets= 20]",
    "AR  @[OKS=0.50:0.95 | area= large | maxDets= 20]",
)
IOU_TYPES = ("bbox", "segm", "keypoints")


def _category_lookup(labels: np.ndarray, contiguous_to_cat_id) -> list[int]:
    """COCO category ids of contiguous ``labels`` through a dict, a sequence, or None (same)."""
    if contiguous_to_cat_id is None:
        return [int(k) for k in labels]
    try:
        return [int(contiguous_to_cat_id[int(k)]) for k in labels]
    except (KeyError, IndexError) as err:
        raise ValueError(f"label {err.args[0]} has no COCO category id in the mapping "
                         f"({type(contiguous_to_cat_id).__name__} of "
                         f"{len(contiguous_to_cat_id)} entries)") from err


def encode_masks(binary_masks: np.ndarray) -> list[dict]:
    """Compressed COCO RLEs of (D, H, W) binary masks, with ``counts`` as str (JSON-ready).

    pycocotools wants a Fortran-ordered (H, W, D) uint8 array and returns ``counts`` as bytes,
    which ``json`` cannot write; they are decoded to ASCII (``mask_utils.decode`` accepts both).
    """
    if len(binary_masks) == 0:
        return []
    stacked = np.asfortranarray(binary_masks.transpose(1, 2, 0).astype(np.uint8))  # (H, W, D)
    rles = mask_utils.encode(stacked)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def predictions_to_coco(predictions, image_ids, contiguous_to_cat_id, mask_threshold=0.5):
    """Model detections as COCO result records (the format of a COCO results JSON).

    Args:
        predictions: list of N dicts (one per image, as ``MaskRCNN.predict`` returns): ``boxes``
            (D, 4) x1y1x2y2 in original image pixels, ``labels`` (D,) contiguous class indices
            1..K-1, ``scores`` (D,), optionally ``masks`` (D, H, W) or (D, 1, H, W) probabilities
            and ``keypoints`` (D, K, 3) ``x, y, v`` in original image pixels. NumPy or CuPy
            arrays.
        image_ids: N COCO image ids, in the order of ``predictions``.
        contiguous_to_cat_id: label -> COCO category id, a dict or a sequence indexed by label
            (``CocoDataset.contiguous_to_cat_id``); None when labels already are category ids.
        mask_threshold: a pixel belongs to the mask where its probability is > this value (the
            paper binarises at 0.5; torchvision's ``coco_eval`` uses ``masks > 0.5``).
    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] (COCO's
        box, w = x2 - x1), ``score``, with masks ``segmentation``, a compressed RLE whose
        ``counts`` is a str, and with keypoints ``keypoints``, ``[x1, y1, v1, ...]`` (the
        detection's score is the keypoints' score, as torchvision's ``coco_eval``).
    Raises:
        ValueError: lengths differ, or a label has no category id.
    """
    image_ids = list(image_ids)
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    results = []
    for pred, image_id in zip(predictions, image_ids):
        boxes = asnumpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = asnumpy(pred["labels"]).reshape(-1)
        scores = asnumpy(pred["scores"]).astype(np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels and "
                             f"{len(scores)} scores")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (D, 4)
        category_ids = _category_lookup(labels, contiguous_to_cat_id)
        rles = None
        if pred.get("masks") is not None:
            masks = asnumpy(pred["masks"])
            if masks.ndim == 4:  # (D, 1, H, W), torchvision's layout -> (D, H, W)
                masks = masks[:, 0]
            if len(masks) != len(boxes):
                raise ValueError(f"image {image_id}: {len(masks)} masks for {len(boxes)} boxes")
            rles = encode_masks(masks > mask_threshold)
        keypoints = None
        if pred.get("keypoints") is not None:
            keypoints = asnumpy(pred["keypoints"]).astype(np.float64).reshape(len(boxes), -1)
        for d in range(len(boxes)):
            record = {"image_id": int(image_id), "category_id": category_ids[d],
                      "bbox": xywh[d].tolist(), "score": float(scores[d])}
            if rles is not None:
                record["segmentation"] = rles[d]
            if keypoints is not None:
                record["keypoints"] = keypoints[d].tolist()
            results.append(record)
    return results


def _load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """The results as a pycocotools ``COCO`` object, also when there are none.

    ``COCO.loadRes`` reads ``results[0]`` to guess the result type and fails on an empty list;
    an empty result set is built by hand instead (COCOeval then scores every category 0).
    """
    known = set(coco_gt.getImgIds())
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"results for image ids {unknown[:10]} that are not in the ground truth")
    with contextlib.redirect_stdout(io.StringIO()):  # loadRes/createIndex print progress
        if results:
            return coco_gt.loadRes(results)
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                           "categories": list(coco_gt.dataset["categories"]),
                           "annotations": []}
        coco_dt.createIndex()
    return coco_dt


def _per_category(coco_eval: COCOeval, coco_gt: COCO) -> dict:
    """{category name: {"AP", "AP50"}} from the accumulated precision (-1: no ground truth).

    ``eval["precision"]`` is (T IoU thresholds, R recall points, K categories, A area ranges,
    M max-detections); area "all" is index 0 and maxDets=100 is the last index.
    """
    precision = coco_eval.eval["precision"]
    table = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        name = coco_gt.cats[int(cat_id)]["name"]
        row = {}
        for key, thresholds in (("AP", slice(None)), ("AP50", slice(0, 1))):
            p = precision[thresholds, :, k, 0, -1]
            p = p[p > -1]
            row[key] = float(p.mean()) if p.size else -1.0
        table[name] = row
    return table


def coco_evaluate(coco_gt: COCO, results, iou_types=("bbox", "segm"), per_category=False,
                  image_ids=None, verbose=True) -> dict:
    """Run pycocotools' ``COCOeval`` for each IoU type and collect the 12 summary numbers.

    Args:
        coco_gt: the ground truth, a pycocotools ``COCO`` (``CocoDataset.coco``).
        results: COCO result records (:func:`predictions_to_coco`); may be empty.
        iou_types: any of "bbox", "segm", "keypoints". "segm" ("keypoints") is skipped, with a
            warning, when the results carry no ``segmentation`` (``keypoints``); "keypoints"
            scores only the categories that have keypoints.
        per_category: also return, per IoU type, ``per_category`` {name: {"AP", "AP50"}}.
        image_ids: evaluate only these images (the ones that were predicted); None: all of the
            ground truth's images. An image left out of ``results`` but listed here counts
            its ground truth as missed.
        verbose: print COCO's standard 12-line summary for each IoU type.
    Returns:
        {iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
        "ARm", "ARl"} (+ "per_category")}, fractions in [0, 1], -1 where undefined; for
        "keypoints" the 10 names of ``KEYPOINT_STAT_NAMES``.
    Raises:
        ValueError: keypoints other than COCO's 17 and no ``sigmas`` in their category.
    """
    results = list(results)
    metrics = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"unknown iou type {iou_type!r}: choose from {IOU_TYPES}")
        field = {"segm": "segmentation", "keypoints": "keypoints"}.get(iou_type)
        if field and results and field not in results[0]:
            warnings.warn(f"{iou_type} evaluation skipped: the results have no {field}",
                          stacklevel=2)
            continue
        # loadRes writes area/id/iscrowd into each record: give it copies. For masks, leave the
        # box out so that COCO takes each detection's area from its mask, not its box, for the
        # small/medium/large split (as detectron2's COCOEvaluator does); for keypoints, leave
        # the box and mask out as torchvision's coco_eval does (loadRes then takes the box
        # and area from the keypoints' extent).
        drop = {"segm": ("bbox",), "keypoints": ("bbox", "segmentation")}.get(iou_type, ())
        records = [{k: v for k, v in r.items() if k not in drop} for r in results]
        coco_dt = _load_results(coco_gt, records)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        if iou_type == "keypoints":
            _keypoint_params(coco_eval, coco_gt)
        with contextlib.redirect_stdout(io.StringIO()):  # evaluate/accumulate print timings
            coco_eval.evaluate()
            coco_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()
        if verbose:
            print(f"IoU metric: {iou_type}\n{summary.getvalue()}", end="")
        names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
        metrics[iou_type] = {name: float(v) for name, v in zip(names, coco_eval.stats)}
        if per_category:
            metrics[iou_type]["per_category"] = _per_category(coco_eval, coco_gt)
    return metrics


def _keypoint_params(coco_eval: COCOeval, coco_gt: COCO) -> None:
    """COCOeval's keypoint settings from the ground truth: only the categories with keypoints,
    their OKS sigmas (the category's ``sigmas`` when given, else COCO's 17), and
    ``num_keypoints`` (what COCOeval ignores persons by) where a record lacks it."""
    anns = coco_gt.dataset["annotations"]
    carried = [a for a in anns if a.get("keypoints")]
    cats = [c for c in coco_gt.dataset["categories"] if c.get("keypoints")] or [
        coco_gt.cats[a["category_id"]] for a in carried[:1]]
    if not cats:
        raise ValueError("keypoints evaluation: the ground truth has no keypoints")
    names = cats[0].get("keypoints")
    k = len(names) if names else len(carried[0]["keypoints"]) // 3
    sigmas = cats[0].get("sigmas")
    if sigmas is None and k != len(COCO_OKS_SIGMAS):
        raise ValueError(f"keypoints evaluation: {k} keypoints per {cats[0]['name']!r} and no "
                         f"'sigmas' in its category; COCO's sigmas are for its 17")
    coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas or COCO_OKS_SIGMAS, dtype=np.float64)
    coco_eval.params.catIds = sorted(c["id"] for c in cats)
    for ann in anns:
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = int(np.count_nonzero(ann.get("keypoints", [])[2::3]))


def evaluate(model, dataset, out_dir=None, batch_size=1, per_category=False, progress=True,
             verbose=None, labels_are_category_ids=False):
    """Predict every image of a COCO dataset and score the detections with ``COCOeval``.

    Args:
        model: has ``predict(list of (3, H, W) images) -> list of detection dicts``
            (``MaskRCNN.predict``); box AP always, mask AP when the detections have ``masks``,
            keypoint AP when they have ``keypoints`` and the dataset has keypoints (a warning
            otherwise).
        dataset: a ``CocoDataset`` (``coco``, ``contiguous_to_cat_id``, ``image_ids``, items
            ``(image, target)``) serving images at their original size, so that detections
            and ground truth share pixel coordinates.
        out_dir: when given, ``detections.json`` (the COCO results) and ``metrics.json`` are
            written there.
        batch_size: images per ``predict`` call.
        per_category: add per-category AP tables (see :func:`coco_evaluate`).
        progress: show progress (a bar on a terminal, a few plain lines otherwise).
        verbose: print COCO's own 12-line summary per IoU type (default: as ``progress``).
        labels_are_category_ids: the model's labels already are COCO category ids (a model
            imported whole from torchvision, trained on COCO's 91 ids): mapped by identity,
            not through ``dataset.contiguous_to_cat_id``.
    Returns:
        The metrics dict of :func:`coco_evaluate`.
    """
    results, image_ids, kinds = [], [], set()
    bar = Progress(len(dataset), "evaluate", unit="img", enabled=progress)
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        items = [dataset[i] for i in indices]
        ids = [int(target.get("image_id", dataset.image_ids[i]))
               for i, (_, target) in zip(indices, items)]
        predictions = model.predict([to_backend(image) for image, _ in items])
        kinds |= {k for p in predictions for k in ("masks", "keypoints") if k in p}
        results.extend(predictions_to_coco(
            predictions, ids, None if labels_are_category_ids else dataset.contiguous_to_cat_id))
        image_ids.extend(ids)
        bar.update(len(items))
    bar.close()
    iou_types = ["bbox"] + ["segm"] * ("masks" in kinds)
    if "keypoints" in kinds and getattr(dataset, "num_keypoints", 0):
        iou_types.append("keypoints")
    elif "keypoints" in kinds:
        warnings.warn("keypoint evaluation skipped: the ground truth has no keypoints",
                      stacklevel=2)
    metrics = coco_evaluate(dataset.coco, results, iou_types=iou_types,
                            per_category=per_category, image_ids=image_ids,
                            verbose=progress if verbose is None else verbose)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "detections.json").write_text(json.dumps(results), encoding="utf-8")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _cell(value: float, percent: bool = False) -> str:
    if value < 0:
        return "    -"
    return f"{100 * value:5.1f}" if percent else f"{value:5.3f}"


def format_summary(metrics: dict, percent: bool = False) -> str:
    """The 12 COCO numbers of each IoU type as a text table (``-`` where undefined).

    ``percent``: numbers x 100 with one decimal (as papers and the README quote them);
    otherwise COCO's fractions. Per-category tables follow when the metrics have them.
    """
    types = [t for t in IOU_TYPES if t in metrics and t != "keypoints"]
    if not types and "keypoints" not in metrics:
        return "(no metrics)"
    unit = "(in %)" if percent else ""
    lines = []
    for group, names, descriptions in ((types, STAT_NAMES, STAT_DESCRIPTIONS),
                                       (["keypoints"] * ("keypoints" in metrics),
                                        KEYPOINT_STAT_NAMES, KEYPOINT_STAT_DESCRIPTIONS)):
        if not group:
            continue
        lines += [""] if lines else []
        lines.append(f"{'metric':<6} {unit:<47} " + "  ".join(f"{t[:5]:>5}" for t in group))
        for name, description in zip(names, descriptions):
            cells = "  ".join(_cell(metrics[t][name], percent) for t in group)
            lines.append(f"{name:<6} {description:<47} {cells}")
    for t in [*types, "keypoints"] if "keypoints" in metrics else types:
        table = metrics[t].get("per_category")
        if not table:
            continue
        width = max(len("category"), *(len(n) for n in table))
        lines += ["", f"{t}: per category", f"{'category':<{width}}     AP   AP50"]
        lines += [f"{name:<{width}}  {_cell(row['AP'], percent)}  {_cell(row['AP50'], percent)}"
                  for name, row in table.items()]
    return "\n".join(lines)


def result_line(metrics: dict) -> str:
    """The headline in one line, in percent: ``box AP 75.6, mask AP 63.1 (AP50 94.1 / 91.7)``
    (and ``keypoint AP``).

    AP is COCO's AP@[.50:.95] over all areas (OKS for keypoints); ``-`` where undefined.
    """
    names = {"bbox": "box", "segm": "mask", "keypoints": "keypoint"}
    types = [t for t in IOU_TYPES if t in metrics]
    if not types:
        return "no metrics"
    head = ", ".join(f"{names[t]} AP {_cell(metrics[t]['AP'], True).strip()}" for t in types)
    ap50 = " / ".join(_cell(metrics[t]["AP50"], True).strip() for t in types)
    return f"{head} (AP50 {ap50})"
