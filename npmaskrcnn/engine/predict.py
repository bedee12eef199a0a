"""Prediction on image files, as ``npmaskrcnn predict`` runs it: any size, any shape, no loss.

Three things a plain ``model.predict([image])`` does not do for a folder of photos:

- **memory**: it pastes every detection's mask into a full-size float canvas at once, so a
  3000x4000 photo with 100 detections holds 100 x 48 MB. Here the masks stay (D, 1, M, M)
  maps over their boxes (``predict(paste_masks=False)``) and :class:`PastedMasks` pastes
  one at a time, on demand, thresholded at 0.5 (only one full-size float mask exists at a
  time, and it lives as long as one ``__getitem__``);
- **degenerate shapes**: the model resizes an image so that its long side fits
  ``max_size``; a 1x500 strip would become 0 pixels high. Such an image is padded with
  zeros at the bottom/right until its resized short side has :data:`MIN_RESIZED_SIDE`
  pixels; detections are then clipped back to the image (pixel coordinates unchanged,
  since the padding is after the last row/column);
- **names**: one drawing per input, also when two inputs share a name (``a/x.jpg`` and
  ``b/x.jpg``) and when the output folder is the input's own (the input is never
  overwritten): see :func:`drawing_paths`.

Host/device: the image goes to the model's backend; boxes, labels and scores come back to
the host with :func:`~npmaskrcnn.backend.asnumpy`; each pasted mask is thresholded on the
device and only the (H, W) bool map is copied back.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..backend import asnumpy, backend_name, to_backend
from ..model.postprocess import paste_masks_in_image
from ..model.transform import resized_image_size

MIN_RESIZED_SIDE = 32  # one cell of the stride-32 level, the coarsest the backbone pools


def drawing_paths(images, out_dir) -> list[Path]:
    """``out_dir/<stem>.png`` per input image, made unique: ``<stem>-2.png``, ``-3``, ... when
    two inputs share a stem, or when the name is one of the inputs themselves.

    Names are compared case-insensitively (two names that differ only in case are one
    file on macOS and Windows).
    """
    out_dir = Path(out_dir)
    taken = {os.path.normcase(str(Path(p).resolve())).casefold() for p in images}
    paths = []
    for image in images:
        stem = Path(image).stem or "image"
        for k in range(1, len(images) + 2):
            candidate = out_dir / (f"{stem}.png" if k == 1 else f"{stem}-{k}.png")
            key = os.path.normcase(str(candidate.resolve())).casefold()
            if key not in taken:
                break
        taken.add(key)
        paths.append(candidate)
    return paths


def model_input_size(model) -> tuple[int, int]:
    """``(min_size, max_size)`` of the model's inference resize."""
    t = model.cfg.transform
    min_size = t.min_size[-1] if isinstance(t.min_size, (tuple, list)) else t.min_size
    return int(min_size), int(t.max_size)


def padded_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The smallest ``(H', W') >= (height, width)``, grown along the short side only, whose
    resize has a short side of at least :data:`MIN_RESIZED_SIDE` pixels."""
    h, w = height, width
    while min(resized_image_size(h, w, min_size, max_size)) < MIN_RESIZED_SIDE:
        if h <= w:
            h = min(w, max(h + 1, math.ceil(h * 1.25)))
        else:
            w = min(h, max(w + 1, math.ceil(w * 1.25)))
        if h == w and min(resized_image_size(h, w, min_size, max_size)) < MIN_RESIZED_SIDE:
            break  # a square cannot be helped: max_size itself is too small
    return h, w


class PastedMasks:
    """The (H, W) bool masks of D detections, pasted one at a time when indexed.

    Args:
        maps: (D, 1, M, M) mask probabilities over their boxes (``predict(paste_masks=False)``).
        boxes: (D, 4) boxes in pixels of the canvas, as the model returned them.
        canvas: (H', W') size to paste into (the possibly padded image).
        size: (H, W) of the image; the pasted mask is cropped to it.
        threshold: a pixel is in the mask where its probability is > threshold (paper: 0.5).

    ``masks[d]`` is a host (H, W) bool array; ``area(d)`` its pixel count (remembered, so
    a mask that was drawn is not pasted again to be counted).
    """

    def __init__(self, maps, boxes, canvas, size, threshold: float = 0.5):
        self.maps, self.boxes = maps, boxes
        self.canvas, self.size, self.threshold = tuple(canvas), tuple(size), threshold
        self._areas: dict[int, int] = {}

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __getitem__(self, d: int) -> np.ndarray:
        if not 0 <= d < len(self):
            raise IndexError(f"mask {d} of {len(self)}")
        prob = paste_masks_in_image(self.maps[d:d + 1], self.boxes[d:d + 1], self.canvas)[0]
        h, w = self.size
        binary = asnumpy(prob[:h, :w] > self.threshold)  # (H, W) bool, on the host
        self._areas[d] = int(binary.sum())
        return binary

    def area(self, d: int) -> int:
        """Pixel count of mask ``d``."""
        if d not in self._areas:
            self[d]
        return self._areas[d]


def predict_image(model, image: np.ndarray, score_thresh: float = 0.0, backend=None) -> dict:
    """Detections of one (3, H, W) image in its pixels, kept when ``score >= score_thresh``.

    Returns:
        ``boxes`` (D, 4) float32 clipped to the image, ``labels`` (D,) int64, ``scores``
        (D,) float32 on the host, ``masks`` a :class:`PastedMasks` of D masks (absent
        when the model has no mask head), and with a keypoint head ``keypoints`` (D, K, 3)
        and ``keypoints_scores`` (D, K) float32 on the host. Detections whose clipped box is
        empty (they lay in the padding of a degenerate image) are left out.
    """
    _, height, width = image.shape
    canvas = padded_size(height, width, *model_input_size(model))
    if canvas != (height, width):
        image = np.pad(image, ((0, 0), (0, canvas[0] - height), (0, canvas[1] - width)))
    pred = model.predict([to_backend(image, backend)], paste_masks=False)[0]
    scores = asnumpy(pred["scores"]).astype(np.float32).reshape(-1)
    boxes = asnumpy(pred["boxes"]).astype(np.float32).reshape(-1, 4)
    clipped = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    keep = (scores >= score_thresh) & (clipped[:, 2] > clipped[:, 0]) & (
        clipped[:, 3] > clipped[:, 1])
    index = np.flatnonzero(keep)
    out = {"boxes": clipped[index], "labels": asnumpy(pred["labels"]).astype(np.int64)[index],
           "scores": scores[index]}
    for key in ("keypoints", "keypoints_scores"):
        if pred.get(key) is not None:
            out[key] = asnumpy(pred[key]).astype(np.float32)[index]
    if pred.get("masks") is not None:
        on_device = to_backend(index, backend_name(pred["masks"]))  # index where the maps are
        out["masks"] = PastedMasks(pred["masks"][on_device], pred["boxes"][on_device], canvas,
                                   (height, width))
    return out


def detection_records(pred: dict, class_names) -> list[dict]:
    """JSON-ready records of :func:`predict_image`'s detections: label name, score, box
    ``[x1, y1, x2, y2]`` in pixels, with masks ``mask_area`` in pixels, and with keypoints
    ``keypoints`` ``[[x, y], ...]`` in pixels and ``keypoint_scores`` (the heatmap logit at
    each)."""
    records = []
    for d in range(len(pred["scores"])):
        label = int(pred["labels"][d])
        record = {"label": class_names[label] if 0 <= label < len(class_names) else str(label),
                  "score": float(pred["scores"][d]),
                  "box": [float(v) for v in pred["boxes"][d]]}
        if "masks" in pred:
            record["mask_area"] = pred["masks"].area(d)
        if "keypoints" in pred:
            record["keypoints"] = [[float(x), float(y)] for x, y in pred["keypoints"][d, :, :2]]
            record["keypoint_scores"] = [float(v) for v in pred["keypoints_scores"][d]]
        records.append(record)
    return records
