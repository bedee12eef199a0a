"""COCO-format instance data on pycocotools: a dataset of (image, target) pairs.

Real COCO files and the synthetic shapes set (:mod:`npmaskrcnn.data.shapes`) go through this
same path. The records are checked once when a file is opened; a bad record raises a
:class:`DatasetError` that names the file and the record, except where skipping is the design
(a box that is empty once clipped to its image), which is counted and reported with one
:class:`DatasetWarning`.

Person keypoints (``person_keypoints_*.json``) are read and checked too: a keypoint array of
the wrong length or with a visibility other than 0, 1, 2 is a :class:`DatasetError`; labelled
keypoints outside their image (treated as not labelled) and persons without any labelled
keypoint (they train boxes and masks only) are counted, each with one :class:`DatasetWarning`.
The subset tool is :mod:`npmaskrcnn.data.coco_subset`.

Crowd regions (``iscrowd=1``) are kept in the target with ``iscrowd = 1``; :func:`split_crowd`
separates them from the instances. Training *drops* them, as torchvision does: they are never
a positive, and an anchor or proposal lying on a crowd is matched against the other objects
only, so it can be sampled as a negative (Detectron instead ignores anchors that a crowd
covers; we do not). COCOeval ignores detections on crowds when scoring.

Host-only NumPy code; no gradient flows here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from .images import ImageError, read_image
from .keypoints import keypoints_problem, outside_image

_PER_INSTANCE = ("boxes", "labels", "masks", "iscrowd", "area", "keypoints")


class DatasetError(ValueError):
    """A dataset file or record is invalid; the message names the file and the record."""


class DatasetWarning(UserWarning):
    """Records were skipped by design; the message gives their count."""


def load_coco_json(path: str | os.PathLike) -> dict:
    """Read a COCO JSON file and check its top-level layout.

    Raises:
        DatasetError: not valid JSON (malformed or truncated), not an object, or ``images`` /
            ``categories`` missing. ``annotations`` may be absent (an image-info file).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}: not valid JSON (malformed or truncated file): {err.msg} "
            f"at line {err.lineno} column {err.colno}"
        ) from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a UTF-8 text file: {err}") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level is a {type(data).__name__}, expected an object")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing list '{key}' (not a COCO annotation file?)")
    data.setdefault("annotations", [])
    return data


def _index_records(data: dict, path) -> tuple[dict, dict]:
    """Check ids and references; return ``({image_id: image}, {category_id: category})``."""
    images, categories = {}, {}
    for record in data["images"]:
        if not isinstance(record, dict) or any(
            k not in record for k in ("id", "file_name", "height", "width")
        ):
            raise DatasetError(f"{path}: image record {record!r:.80} lacks id/file_name/size")
        if record["id"] in images:
            raise DatasetError(f"{path}: image id {record['id']} appears twice")
        images[record["id"]] = record
    for record in data["categories"]:
        if not isinstance(record, dict) or "id" not in record or "name" not in record:
            raise DatasetError(f"{path}: category record {record!r:.80} lacks id/name")
        if record["id"] in categories:
            raise DatasetError(f"{path}: category id {record['id']} appears twice")
        categories[record["id"]] = record
    seen = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "id" not in ann:
            raise DatasetError(f"{path}: annotation record {ann!r:.80} has no id")
        where = f"{path}: annotation id {ann['id']} (image {ann.get('image_id')})"
        if ann["id"] in seen:
            raise DatasetError(f"{where}: annotation id appears twice")
        seen.add(ann["id"])
        if ann.get("image_id") not in images:
            raise DatasetError(f"{where}: points to image id {ann.get('image_id')}, "
                               "which is not in 'images'")
        if ann.get("category_id") not in categories:
            raise DatasetError(f"{where}: unknown category id {ann.get('category_id')}")
    return images, categories


def resolve_categories(categories, by_id: dict, path="") -> list[int]:
    """COCO category ids, sorted, for ``categories`` given as names and/or ids (None: all).

    An id may be an int or a string of digits (as typed on a command line); a string is
    first looked up as a name, so a category *named* "7" is still found by name.
    """
    if categories is None:
        return sorted(by_id)
    by_name = {c["name"]: cid for cid, c in by_id.items()}
    ids = set()
    for item in [categories] if isinstance(categories, (str, int)) else categories:
        cid = by_name.get(item) if isinstance(item, str) else item
        if cid is None and isinstance(item, str) and item.strip().isdigit():
            cid = int(item)
        if cid not in by_id:
            known = f"{sorted(by_name)} (ids {min(by_id)}..{max(by_id)})" if by_id else "none"
            raise DatasetError(f"{path}: unknown category {item!r}; known: {known}")
        ids.add(cid)
    return sorted(ids)


def segmentation_problem(segm, height: int, width: int) -> str | None:
    """What is wrong with a COCO ``segmentation`` for an ``height x width`` image, or None.

    Polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists) need an even number of at least
    six coordinates: pycocotools reads a 4-number "polygon" as a box and silently rasterises
    fewer points to nothing. An RLE (``{"size": [h, w], "counts": ...}``, counts a list of run
    lengths = uncompressed, or a str = compressed) must have the image's size.
    """
    if isinstance(segm, list):
        if not segm:
            return "empty segmentation (no polygon)"
        for poly in segm:
            if not isinstance(poly, list) or len(poly) % 2:
                return f"polygon is not an even-length list of coordinates: {poly!r:.60}"
            if len(poly) < 6:
                return f"polygon with {len(poly) // 2} points"
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "RLE without 'counts' and 'size'"
        if list(segm["size"]) != [height, width]:
            return f"RLE size {segm['size']} differs from the image size {[height, width]}"
        counts = segm["counts"]
        if isinstance(counts, list) and sum(counts) != height * width:
            return f"uncompressed RLE counts sum to {sum(counts)}, not {height * width}"
        if not isinstance(counts, (list, str, bytes)):
            return f"RLE counts of type {type(counts).__name__}"
        return None
    return f"segmentation of type {type(segm).__name__} (expected polygons or RLE)"


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask of a polygon list, an uncompressed RLE or a compressed RLE."""
    if isinstance(segm, list):  # polygons: rasterise each, union
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):  # uncompressed RLE -> compressed
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        counts = segm["counts"]  # compressed RLE; pycocotools wants bytes
        rle = {"size": segm["size"],
               "counts": counts.encode() if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        # pycocotools 2.0.x under NumPy 2 warns about its own np.array(copy=False) call
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rle)


class CocoDataset:
    """Images and instance targets of a COCO annotation file.

    ``dataset[i] -> (image, target)``: ``image`` (3, H, W) float32 RGB in [0, 1] and ``target``
    a dict (G instances, crowd regions included, in annotation order):

    - ``boxes`` (G, 4) float32 ``x1 y1 x2 y2``, the annotation's ``bbox`` clipped to the image;
    - ``labels`` (G,) int64 contiguous class indices 1..K-1 (0 is background);
    - ``masks`` (G, H, W) uint8, decoded with pycocotools (polygons, RLE either kind);
    - ``iscrowd`` (G,) int64: 1 marks an ignore region, never a positive (:func:`split_crowd`);
    - ``area`` (G,) float32, the file's ``area`` (what COCOeval uses for its size ranges);
    - ``image_id`` int, the COCO image id;
    - ``keypoints`` (G, 17, 3) float32 ``x, y, visibility`` when the file has keypoints
      (zeros for instances without them).

    Category mapping: the kept COCO category ids in increasing order take contiguous indices
    1..K-1 (``cat_id_to_contiguous``, ``contiguous_to_cat_id``, ``class_names[0] ==
    "__background__"``), the convention of torchvision's and detectron2's COCO loaders.
    ``coco`` is a pycocotools ``COCO`` over exactly the images, categories and annotations
    served, ready to be the ground truth of ``COCOeval``. ``images`` maps every image id of the
    file to its record; ``num_annotations`` counts the file's annotations (all categories).

    Args:
        ann_file: COCO instances (or person keypoints) JSON.
        image_dir: folder holding the images' ``file_name``.
        categories: names and/or ids of the categories to keep (None: all); annotations of the
            other categories are left out.
        skip_empty: leave out images without any non-crowd instance (they give no positives).
        check_files: check at construction that every image file exists.
        transforms: optional ``callable(image, target) -> (image, target)``.
    Raises:
        DatasetError: a bad file or record (see :func:`load_coco_json`,
            :func:`segmentation_problem`), or missing image files.
    Warns:
        DatasetWarning: with the count of annotations dropped because their box is empty
            once clipped to the image (zero-area boxes, boxes outside the image); with the
            count of labelled keypoints outside their image (read as not labelled, v = 0);
            with the count of non-crowd persons (annotations of a keypoint category) without
            any labelled keypoint.
    """

    def __init__(self, ann_file, image_dir, categories=None, skip_empty=False,
                 check_files=True, transforms=None):
        self.ann_file, self.image_dir, self.transforms = Path(ann_file), Path(image_dir), transforms
        data = load_coco_json(self.ann_file)
        images, by_id = _index_records(data, self.ann_file)
        self.cat_ids = resolve_categories(categories, by_id, self.ann_file)
        self.cat_id_to_contiguous = {cid: k + 1 for k, cid in enumerate(self.cat_ids)}
        self.contiguous_to_cat_id = {k: cid for cid, k in self.cat_id_to_contiguous.items()}
        self.class_names = ["__background__"] + [by_id[c]["name"] for c in self.cat_ids]
        self.num_classes = len(self.class_names)
        self.num_keypoints = self._count_keypoints(data, by_id)
        self.num_annotations = len(data["annotations"])  # in the file, all categories

        self._anns = {image_id: [] for image_id in images}
        dropped, self._keypoint_issues = [], {"outside": [], "none": []}
        for ann in data["annotations"]:
            if ann["category_id"] not in self.cat_id_to_contiguous:
                continue  # filtered out by `categories`, by design: no warning
            if self._check_annotation(ann, images[ann["image_id"]]):
                self._anns[ann["image_id"]].append(ann)
            else:
                dropped.append(ann["id"])
        outside, none = self._keypoint_issues["outside"], self._keypoint_issues["none"]
        n_out, kinds = sum(n for _, n in outside), "/".join(self._keypoint_names)
        for ids, what in ((dropped, f"dropped {len(dropped)} annotation(s) whose box is empty "
                                    "once clipped to the image"),
                          ([i for i, _ in outside], f"{n_out} labelled keypoint(s) of "
                           f"{len(outside)} annotation(s) outside their image, read as not "
                           "labelled"),
                          (none, f"{len(none)} {kinds} annotation(s) without a labelled "
                                 "keypoint: they train boxes and masks, not keypoints")):
            if ids:
                warnings.warn(f"{self.ann_file}: {what} (ids {ids[:10]}"
                              f"{' ...' if len(ids) > 10 else ''})", DatasetWarning, stacklevel=2)
        self.image_ids = sorted(
            i for i, anns in self._anns.items()
            if not skip_empty or any(not a.get("iscrowd", 0) for a in anns)
        )
        self.images = images
        if check_files:
            missing = [i for i in self.image_ids
                       if not (self.image_dir / images[i]["file_name"]).is_file()]
            if missing:
                listed = ", ".join(f"{images[i]['file_name']} (image {i})" for i in missing[:5])
                more = " ..." if len(missing) > 5 else ""
                raise DatasetError(f"{self.ann_file}: {len(missing)} image file(s) missing "
                                   f"from {self.image_dir}: {listed}{more}")
        served = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
        served["images"] = [images[i] for i in self.image_ids]
        served["annotations"] = [a for i in self.image_ids for a in self._anns[i]]
        served["categories"] = [by_id[c] for c in self.cat_ids]
        self.coco = COCO()
        self.coco.dataset = served
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            self.coco.createIndex()

    def _count_keypoints(self, data, by_id) -> int:
        """Keypoints per instance (17 for COCO persons), or 0 when the file has none; sets
        ``keypoint_categories``, the ids of the categories that have keypoints (those that
        declare them, else those whose annotations carry them)."""
        declared = [cid for cid in self.cat_ids if by_id[cid].get("keypoints")]
        carried = sorted({a["category_id"] for a in data["annotations"] if a.get("keypoints")
                          and a.get("category_id") in self.cat_id_to_contiguous})
        self.keypoint_categories = declared or carried
        self._keypoint_names = [by_id[c]["name"] for c in self.keypoint_categories]
        if declared:
            return len(by_id[declared[0]]["keypoints"])
        for ann in data["annotations"]:
            if ann.get("keypoints") and ann.get("category_id") in self.cat_id_to_contiguous:
                return len(ann["keypoints"]) // 3
        return 0

    def _check_annotation(self, ann, image) -> bool:
        """Raise on a malformed record; False when its clipped box is empty (to be dropped)."""
        where = f"{self.ann_file}: annotation id {ann['id']} (image {ann['image_id']})"
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and np.isfinite(v) for v in bbox
        ):
            raise DatasetError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox}")
        problem = segmentation_problem(ann.get("segmentation"), image["height"], image["width"])
        if problem:
            raise DatasetError(f"{where}: {problem}")
        self._check_keypoints(ann, where, image["height"], image["width"])
        x1, y1, x2, y2 = _clipped_box(bbox, image["height"], image["width"])
        return x2 > x1 and y2 > y1

    def _check_keypoints(self, ann, where: str, height: int, width: int) -> None:
        """Raise on a malformed keypoint array; count labelled keypoints outside the image
        and non-crowd annotations of a keypoint category without any labelled keypoint."""
        keypoints = ann.get("keypoints")
        if keypoints:
            problem = keypoints_problem(keypoints, self.num_keypoints)
            if problem:
                raise DatasetError(f"{where}: {problem}")
            n = int(outside_image(np.reshape(keypoints, (-1, 3)), height, width).sum())
            if n:
                self._keypoint_issues["outside"].append((ann["id"], n))
        if (ann["category_id"] in self.keypoint_categories and not ann.get("iscrowd", 0)
                and not (keypoints and any(v > 0 for v in keypoints[2::3]))):
            self._keypoint_issues["none"].append(ann["id"])

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> np.ndarray:
        """(3, H, W) float32 RGB in [0, 1] of the ``index``-th image, decoded by
        :func:`~npmaskrcnn.data.images.read_image` (grey -> RGB, 16-bit and float images
        scaled, not saturated)."""
        info = self.images[self.image_ids[index]]
        path = self.image_dir / info["file_name"]
        where = f"image id {info['id']} in {self.ann_file}"
        try:
            pixels = read_image(path)
        except ImageError as err:
            raise DatasetError(f"{err} ({where})") from err
        if pixels.shape[1:] != (info["height"], info["width"]):
            raise DatasetError(f"{path}: image is {pixels.shape[2]}x{pixels.shape[1]} but "
                               f"{where} says {info['width']}x{info['height']}")
        return pixels

    def load_target(self, index: int) -> dict:
        """The target dict of the ``index``-th image (see the class docstring)."""
        image_id = self.image_ids[index]
        height, width = self.images[image_id]["height"], self.images[image_id]["width"]
        anns = self._anns[image_id]
        target = {
            "boxes": np.array([_clipped_box(a["bbox"], height, width) for a in anns],
                              dtype=np.float32).reshape(-1, 4),
            "labels": np.array([self.cat_id_to_contiguous[a["category_id"]] for a in anns],
                               dtype=np.int64),
            "masks": np.stack([decode_segmentation(a["segmentation"], height, width)
                               for a in anns]) if anns else np.zeros((0, height, width), np.uint8),
            "iscrowd": np.array([a.get("iscrowd", 0) for a in anns], dtype=np.int64),
            "area": np.array([a.get("area", 0.0) for a in anns], dtype=np.float32),
            "image_id": int(image_id),
        }
        if self.num_keypoints:
            keypoints = np.zeros((len(anns), self.num_keypoints, 3), dtype=np.float32)
            for g, a in enumerate(anns):
                if a.get("keypoints"):
                    keypoints[g] = np.reshape(a["keypoints"], (self.num_keypoints, 3))
            keypoints[outside_image(keypoints, height, width)] = 0  # counted at construction
            target["keypoints"] = keypoints
        return target

    def __getitem__(self, index: int):
        image, target = self.load_image(index), self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _clipped_box(bbox, height, width) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` clipped to the ``width x height`` image."""
    x, y, w, h = bbox
    return [min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]


def split_crowd(target: dict) -> tuple[dict, dict]:
    """``(instances, crowd)``: the target's per-instance arrays split by ``iscrowd``.

    ``instances`` (iscrowd 0) are the training positives; ``crowd`` (iscrowd 1) are ignore
    regions: a proposal or anchor that overlaps them is neither positive nor negative. Keys that
    are not per-instance (``image_id``) are copied into both.
    """
    crowd = np.asarray(target["iscrowd"]).astype(bool)
    parts = ({}, {})
    for key, value in target.items():
        for part, keep in zip(parts, (~crowd, crowd)):
            part[key] = value[keep] if key in _PER_INSTANCE else value
    return parts


def ignore_mask(target: dict) -> np.ndarray:
    """(H, W) bool union of the crowd masks of a target: the pixels to ignore."""
    masks = np.asarray(target["masks"])
    crowd = np.asarray(target["iscrowd"]).astype(bool)
    return masks[crowd].any(axis=0) if crowd.any() else np.zeros(masks.shape[1:], dtype=bool)
