"""The ground truth of a batch, padded into arrays, and the samples a training step used.

The RPN and the RoI heads match every image's anchors or proposals against its own
ground truth. Images have different numbers of objects, so the boxes are padded to the
largest count G of the batch and a ``valid`` mask marks the real ones: then matching,
sampling and targets are computed for all images at once (one set of array operations
instead of one per image, which is what a GPU needs). Padding rows, crowd regions and
degenerate boxes are simply not valid.

``TrainingSamples`` is everything a training step *chose* rather than computed
differentiably: the RPN's sampled anchors, the proposals, the RoI heads' sampled RoIs
and their targets. ``MaskRCNN.forward_batch`` returns it and accepts it back, so that a
gradient check can re-run the step with the same choices (finite differences would
otherwise flip a sample or a proposal between the two probes).

No gradient flows through anything here.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from ..backend import asnumpy, get_xp


class GroundTruth(NamedTuple):
    """A batch's ground truth, padded to G objects per image."""

    boxes: Any  # (N, G, 4) x1, y1, x2, y2 in the resized image's pixels (0 for padding)
    labels: Any  # (N, G) int64 class ids (0 for padding)
    valid: Any  # (N, G) bool: a real, non-crowd box of positive width and height
    masks: list  # N arrays (G_i, H_i, W_i) uint8, or None when the targets have none
    keypoints: Any = None  # (N, G, K, 3) x, y, visibility (0 for padding), or None

    @property
    def num_images(self) -> int:
        return self.boxes.shape[0]


class Proposals(NamedTuple):
    """The RPN's boxes for each image, padded to P per image (no gradient)."""

    boxes: Any  # (N, P, 4) best first
    valid: Any  # (N, P) bool


def pad_proposals(boxes_per_image) -> Proposals:
    """N arrays (P_i, 4) -> ``Proposals`` padded to max P_i (e.g. proposals of your own)."""
    xp = get_xp(*boxes_per_image)
    n = len(boxes_per_image)
    p = max([int(b.shape[0]) for b in boxes_per_image] + [0])
    dtype = boxes_per_image[0].dtype if n else np.float32
    boxes = xp.zeros((n, p, 4), dtype=dtype)
    valid = xp.zeros((n, p), dtype=bool)
    for i, b in enumerate(boxes_per_image):
        boxes[i, :len(b)] = b
        valid[i, :len(b)] = True
    return Proposals(boxes, valid)


class TrainingSamples(NamedTuple):
    """What one training step sampled (see the module docstring)."""

    rpn: Any  # rpn.AnchorSamples
    proposals: Proposals
    roi: Any  # roi_heads.RoISamples


def batch_ground_truth(targets, dtype) -> GroundTruth:
    """Pad N target dicts into a ``GroundTruth``; warn about degenerate boxes.

    Args:
        targets: N dicts with ``boxes`` (G_i, 4), ``labels`` (G_i,), optionally
            ``masks`` (G_i, H_i, W_i), ``keypoints`` (G_i, K, 3) and ``iscrowd`` (G_i,),
            all on one backend.
        dtype: the float dtype of the boxes.
    Returns:
        The padded ground truth. A box of zero width or height has no valid regression
        target (log 0) and would put a NaN into the loss, and crowd regions are never
        positives (torchvision drops both before matching): both are not ``valid``.
    """
    xp = get_xp(*[t["boxes"] for t in targets])
    n = len(targets)
    counts = [int(t["boxes"].shape[0]) for t in targets]
    g = max(counts + [0])
    # (image, slot) of every box, built on the host: each field is filled in one scatter
    image = xp.asarray(np.repeat(np.arange(n), counts))
    slot = xp.asarray(np.concatenate([np.arange(k) for k in counts] + [np.zeros(0, int)]))

    def padded(key, fill_dtype, shape=()):
        out = xp.zeros((n, g) + shape, dtype=fill_dtype)
        if sum(counts):
            out[image, slot] = xp.concatenate([xp.asarray(t[key]).astype(fill_dtype)
                                               for t in targets])
        return out

    boxes = padded("boxes", dtype, (4,))
    labels = padded("labels", np.int64)
    real = xp.zeros((n, g), dtype=bool)
    real[image, slot] = True
    crowd = (padded("iscrowd", np.int64) != 0 if all("iscrowd" in t for t in targets)
             else xp.zeros((n, g), dtype=bool))
    wh = boxes[..., 2:] - boxes[..., :2]
    degenerate = real & ~(wh > 0).all(axis=-1)
    bad = asnumpy(degenerate.sum(axis=1))  # host round-trip: one count per image
    for i in np.flatnonzero(bad):
        warnings.warn(f"image {i}: dropped {int(bad[i])} ground-truth box(es) of zero width "
                      "or height", stacklevel=3)
    masks = [t.get("masks") for t in targets]
    keypoints = None
    if targets and all(t.get("keypoints") is not None for t in targets):
        keypoints = padded("keypoints", dtype, tuple(targets[0]["keypoints"].shape[1:]))
    return GroundTruth(boxes, labels, real & ~degenerate & ~crowd,
                       None if any(m is None for m in masks) else masks, keypoints)
