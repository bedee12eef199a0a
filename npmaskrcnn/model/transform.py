"""The image transform: normalise, resize, pad into a batch — and the way back.

Mask R-CNN sees every image at one scale: the shorter side resized to ``min_size``
(800 in the paper, §3.1) unless that would make the longer side exceed ``max_size``
(1333). The images are normalised with the ImageNet mean/std of the pretrained
backbone and zero-padded bottom/right into one ``(N, 3, Hp, Wp)`` batch whose sides are
multiples of 32 (the stride of the coarsest FPN level). Targets follow their image:
boxes and keypoints are scaled by the per-axis ratios, masks are resized with nearest
neighbours. After inference, ``postprocess`` undoes the resize: boxes and keypoints go
back to the original image size and the 28x28 mask probabilities are pasted there.

No gradient flows here: the transform acts on the input images and targets (and on
the final detections), never on anything the network computes a loss through.

Follows ``torchvision.models.detection.transform.GeneralizedRCNNTransform`` and
``torch.nn.functional.interpolate`` (``mode="bilinear", align_corners=False`` and
``mode="nearest"``), including their float32 index arithmetic, so that sizes, pixel
values and mask pixels agree with torchvision's.
"""

from __future__ import annotations

import numpy as np

from ..backend import Generator, get_xp
from ..layers.module import Module
from .postprocess import paste_masks_in_image
from .resize import (  # noqa: F401 - the resizing functions are part of this page's story
    linear_source_index,
    nearest_source_index,
    resize_bilinear,
    resize_bilinear_naive,
    resize_boxes,
    resize_keypoints,
    resize_nearest,
    resized_image_size,
)


class GeneralizedRCNNTransform(Module):
    """Normalise, resize and batch images (and their targets); undo it on detections.

    Args:
        min_size: target length of the shorter side; a tuple of several lengths picks
            one at random per image in training (scale augmentation) and the last one
            in eval.
        max_size: bound on the longer side.
        image_mean, image_std: per-channel statistics (3,) of the [0, 1] inputs.
        size_divisible: the padded batch sides are multiples of this.
        rng: draws the training scale when ``min_size`` has several values.
    torchvision: ``models.detection.transform.GeneralizedRCNNTransform`` (without
    ``fixed_size``). Like it, ``postprocess`` returns the detections unchanged in
    training mode (the default mode of a new module; call ``eval()`` first).
    """

    def __init__(
        self,
        min_size,
        max_size: int,
        image_mean,
        image_std,
        size_divisible: int = 32,
        rng: Generator | None = None,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.size_divisible = size_divisible
        self.rng = rng if rng is not None else Generator(0)
        self._stats = {}  # (dtype, backend) -> the mean and std as device arrays

    def forward(self, images, targets=None):
        """Turn a list of images (and targets) into one padded, normalised batch.

        Args:
            images: list of N arrays (3, H_i, W_i), floating, values in [0, 1].
            targets: None, or a list of N dicts with ``boxes`` (G, 4) float,
                ``labels`` (G,) int64, optionally ``masks`` (G, H_i, W_i) uint8 and
                ``keypoints`` (G, 17, 3); other keys are passed through.
        Returns:
            batch: (N, 3, Hp, Wp), Hp and Wp multiples of ``size_divisible``, zeros in
                the padding.
            image_sizes: list of N (h_i, w_i), each image's size after the resize.
            targets: new dicts (the inputs are not modified) in resized coordinates,
                or None.
        """
        for image in images:
            if image.ndim != 3:
                raise ValueError(f"images are expected as (C, H, W) arrays, got {image.shape}")
            if image.dtype.kind != "f":
                raise TypeError(f"images must be floating with values in [0, 1], got "
                                f"{image.dtype}")
        xp = get_xp(*images)
        sizes = [tuple(int(v) for v in im.shape[-2:]) for im in images]
        new_sizes = [resized_image_size(h, w, self._scale(), self.max_size) for h, w in sizes]
        if len(set(sizes)) == 1 and len(set(new_sizes)) == 1:
            # the same sizes give the same interpolation: the whole batch in one resize
            batch = resize_bilinear(self.normalize(xp.stack(images)), new_sizes[0])
            batch = self.pad(batch)
        else:
            batch = self.batch_images([resize_bilinear(self.normalize(im), size)
                                       for im, size in zip(images, new_sizes)])
        out_targets = None
        if targets is not None:
            out_targets = [resize_target(dict(t), size, new)
                           for t, size, new in zip(targets, sizes, new_sizes)]
        return batch, new_sizes, out_targets

    def _scale(self) -> int:
        """The shorter-side target of the next image: a random choice of ``min_size`` in
        training (scale augmentation), its last value in eval."""
        if self.training:
            return self.min_size[int(self.rng.host.integers(len(self.min_size)))]
        return self.min_size[-1]

    def normalize(self, image):
        """``(image - mean) / std`` per channel; (..., 3, H, W) -> (..., 3, H, W)."""
        xp = get_xp(image)
        key = (image.dtype.str, xp.__name__)
        if key not in self._stats:  # the (3, 1, 1) statistics on the device, made once
            self._stats[key] = tuple(
                xp.asarray(np.asarray(v, dtype=image.dtype)[:, None, None])
                for v in (self.image_mean, self.image_std))
        mean, std = self._stats[key]
        return (image - mean) / std

    def pad(self, batch):
        """Zero-pad an (N, C, h, w) batch bottom/right to sides divisible by
        ``size_divisible`` (the batch itself when they already are)."""
        d = self.size_divisible
        n, c, h, w = batch.shape
        hp, wp = -(-h // d) * d, -(-w // d) * d
        if (hp, wp) == (h, w):
            return batch
        out = get_xp(batch).zeros((n, c, hp, wp), dtype=batch.dtype)
        out[:, :, :h, :w] = batch
        return out

    def batch_images(self, images):
        """Zero-pad images bottom/right to a common size divisible by ``size_divisible``.

        Args:
            images: list of N arrays (C, h_i, w_i).
        Returns:
            (N, C, Hp, Wp) with Hp = ceil(max h_i / d) * d, Wp likewise.
        """
        xp = get_xp(*images)
        d = self.size_divisible
        c = max(im.shape[0] for im in images)
        hp = -(-max(im.shape[1] for im in images) // d) * d
        wp = -(-max(im.shape[2] for im in images) // d) * d
        batch = xp.zeros((len(images), c, hp, wp), dtype=images[0].dtype)
        for i, im in enumerate(images):
            batch[i, : im.shape[0], : im.shape[1], : im.shape[2]] = im
        return batch

    def postprocess(self, detections, image_sizes, original_sizes, paste_masks: bool = True):
        """Bring detections from the resized images back to the original images.

        Args:
            detections: list of N dicts with ``boxes`` (D, 4) in resized pixels and
                optionally ``masks`` (D, 1, M, M) or (D, M, M) probabilities and
                ``keypoints`` (D, 17, 3); other keys are passed through.
            image_sizes: list of N (h, w) after the resize (from ``forward``).
            original_sizes: list of N (H0, W0) of the input images.
            paste_masks: paste the masks into the images (default), or leave them as
                (D, 1, M, M) maps over their boxes, for the caller to paste one at a
                time with ``paste_masks_in_image`` (a large photo's D full-size masks
                would not fit in memory at once).
        Returns:
            New dicts with boxes (D, 4) and keypoints in original pixels and masks
            pasted to (D, H0, W0) probabilities (torchvision keeps a channel axis,
            (D, 1, H0, W0)). In training mode the detections are returned unchanged.
        """
        if self.training:
            return detections
        results = []
        for pred, size, original in zip(detections, image_sizes, original_sizes, strict=True):
            pred = dict(pred)
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred and paste_masks:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], original)
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], size, original)
            results.append(pred)
        return results


def resize_target(target: dict, size, new_size) -> dict:
    """A target dict of an image resized from ``size`` to ``new_size`` (modified in place:
    pass a copy): boxes and keypoints scaled, masks resized by nearest neighbour (uint8)."""
    target["boxes"] = resize_boxes(target["boxes"], size, new_size)
    if "masks" in target:
        masks = target["masks"]
        target["masks"] = resize_nearest(masks, new_size).astype(np.uint8, copy=False)
    if "keypoints" in target:
        target["keypoints"] = resize_keypoints(target["keypoints"], size, new_size)
    return target


def mirror_batch(batch, image_sizes):
    """The padded batch (N, C, Hp, Wp) with each image mirrored left to right within its own
    width w_n (the padding stays at the right), so that a box x1..x2 of image n is
    w_n - x2..w_n - x1 in the mirror (``KeypointConfig.flip_test``)."""
    out = batch.copy()
    for n, (_, w) in enumerate(image_sizes):
        out[n, :, :, :w] = batch[n, :, :, :w][..., ::-1]
    return out
