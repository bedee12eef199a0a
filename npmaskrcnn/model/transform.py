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


def _float_dtype(x):
    """The dtype interpolation is computed in: the input's if floating, else float32."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


def linear_source_index(in_size: int, out_size: int, dtype, xp):
    """Neighbours and weights of 1-D linear interpolation, ``align_corners=False``.

    Output pixel ``d`` samples the input at ``s = max((d + 0.5) * in/out - 0.5, 0)``
    (pixel centres at half-integers, the sample clamped at the first centre); its
    neighbours are ``i0 = floor(s)`` and ``i1 = min(i0 + 1, in - 1)`` with weights
    ``1 - l`` and ``l = s - i0``. The arithmetic is done in ``dtype``, as PyTorch's
    ``area_pixel_compute_source_index`` does it in the input's precision.

    Returns:
        i0, i1: (out_size,) int64 input indices.
        l0, l1: (out_size,) weights of ``i0`` and ``i1`` in ``dtype`` (``l0 + l1 = 1``).
    """
    scale = xp.asarray(in_size, dtype=dtype) / xp.asarray(out_size, dtype=dtype)
    dst = xp.arange(out_size, dtype=np.float64)
    # scale * (d + 0.5) - 0.5 rounded once to dtype, as the fused multiply-add of
    # PyTorch's compiled kernel rounds it (exact in float64 for float32 scales)
    src = (scale.astype(np.float64) * (dst + 0.5) - 0.5).astype(dtype)
    src = xp.maximum(src, 0)
    i0 = xp.minimum(xp.floor(src).astype(np.int64), in_size - 1)
    l1 = xp.clip(src - i0.astype(dtype), 0, 1)
    # at the last input pixel the right neighbour is the pixel itself (edge clamp)
    i1 = i0 + (i0 < in_size - 1).astype(np.int64)
    return i0, i1, 1 - l1, l1


def resize_bilinear(x, size):
    """Bilinear resize of the last two axes, as ``F.interpolate(mode="bilinear")``.

    ``align_corners=False``: output pixel ``(i, j)`` samples the input at
    ``y = max((i + 0.5) * H/h - 0.5, 0)``, ``x = max((j + 0.5) * W/w - 0.5, 0)`` and
    mixes the four neighbours (clamped at the bottom/right edge)::

        out = (1-ly) * ((1-lx) * in[y0, x0] + lx * in[y0, x1])
              + ly   * ((1-lx) * in[y1, x0] + lx * in[y1, x1])

    Separable, so it is done as two gathers: first along the columns, then along the
    rows (the order in which PyTorch's CPU kernel multiplies the weights).

    Args:
        x: (..., H, W), e.g. an image (C, H, W) or a batch (N, C, H, W).
        size: (h, w) output size.
    Returns:
        (..., h, w) in the input's dtype if floating, else float32.
    """
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    H, W = x.shape[-2:]
    c0, c1, lc0, lc1 = linear_source_index(W, w, dtype, xp)
    r0, r1, lr0, lr1 = linear_source_index(H, h, dtype, xp)
    cols = x[..., c0] * lc0 + x[..., c1] * lc1  # (..., H, W) -> (..., H, w)
    return cols[..., r0, :] * lr0[:, None] + cols[..., r1, :] * lr1[:, None]  # (..., h, w)


def resize_bilinear_naive(x, size):
    """Loop reference for ``resize_bilinear``: one output pixel at a time (tests only)."""
    xp = get_xp(x)
    h, w = int(size[0]), int(size[1])
    dtype = _float_dtype(x)
    x = x.astype(dtype, copy=False)
    H, W = x.shape[-2:]
    out = xp.zeros(x.shape[:-2] + (h, w), dtype=dtype)
    for i in range(h):
        y = max((i + 0.5) * (H / h) - 0.5, 0.0)
        y0 = min(int(y), H - 1)
        y1 = min(y0 + 1, H - 1)
        ly = min(y - y0, 1.0)
        for j in range(w):
            s = max((j + 0.5) * (W / w) - 0.5, 0.0)
            x0 = min(int(s), W - 1)
            x1 = min(x0 + 1, W - 1)
            lx = min(s - x0, 1.0)
            top = (1 - lx) * x[..., y0, x0] + lx * x[..., y0, x1]
            bottom = (1 - lx) * x[..., y1, x0] + lx * x[..., y1, x1]
            out[..., i, j] = (1 - ly) * top + ly * bottom
    return out


def nearest_source_index(in_size: int, out_size: int, xp):
    """Input index of each output pixel for ``mode="nearest"``: ``min(floor(d*in/out), in-1)``.

    The product is taken in float32, as PyTorch's ``nearest_idx`` does (``floorf``), so
    the chosen pixels are the same even where ``d * in/out`` is close to an integer.
    """
    scale = xp.asarray(in_size, dtype=np.float32) / xp.asarray(out_size, dtype=np.float32)
    dst = xp.arange(out_size, dtype=np.float32)
    return xp.minimum(xp.floor(dst * scale).astype(np.int64), in_size - 1)


def resize_nearest(x, size):
    """Nearest-neighbour resize of the last two axes, as ``F.interpolate(mode="nearest")``.

    Output pixel ``(i, j)`` copies input pixel ``(floor(i*H/h), floor(j*W/w))`` (the
    legacy "nearest" rule, not "nearest-exact"). A pure gather, so any dtype works and
    is kept: binary uint8 masks stay binary.

    Args:
        x: (..., H, W), e.g. masks (G, H, W).
        size: (h, w) output size.
    Returns:
        (..., h, w), same dtype as ``x``.
    """
    xp = get_xp(x)
    H, W = x.shape[-2:]
    rows = nearest_source_index(H, int(size[0]), xp)
    cols = nearest_source_index(W, int(size[1]), xp)
    return x[..., rows[:, None], cols[None, :]]  # (..., H, W) -> (..., h, w)


def _ratios(original_size, new_size, dtype, xp):
    """(ratio_h, ratio_w) = new / original, divided in float32 as torchvision does."""
    rh = np.float32(new_size[0]) / np.float32(original_size[0])
    rw = np.float32(new_size[1]) / np.float32(original_size[1])
    return xp.asarray(rh, dtype=dtype), xp.asarray(rw, dtype=dtype)


def resize_boxes(boxes, original_size, new_size):
    """Scale ``(x1, y1, x2, y2)`` boxes from an image of ``original_size`` to ``new_size``.

    Args:
        boxes: (G, 4) boxes in pixels of the original image.
        original_size, new_size: (h, w).
    Returns:
        (G, 4): x coordinates times ``w_new / w``, y coordinates times ``h_new / h``.
    torchvision: ``models.detection.transform.resize_boxes``.
    """
    xp = get_xp(boxes)
    boxes = boxes.astype(_float_dtype(boxes), copy=False)
    rh, rw = _ratios(original_size, new_size, boxes.dtype, xp)
    return boxes * xp.stack([rw, rh, rw, rh])


def resize_keypoints(keypoints, original_size, new_size):
    """Scale keypoints ``(x, y, visibility)`` like ``resize_boxes``; visibility is kept.

    Args:
        keypoints: (G, 17, 3).
        original_size, new_size: (h, w).
    Returns:
        (G, 17, 3) with x and y scaled.
    torchvision: ``models.detection.transform.resize_keypoints``.
    """
    xp = get_xp(keypoints)
    out = keypoints.astype(_float_dtype(keypoints), copy=True)
    rh, rw = _ratios(original_size, new_size, out.dtype, xp)
    out[..., 0] *= rw
    out[..., 1] *= rh
    return out


def resized_image_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Size after scaling by ``min(min_size / short side, max_size / long side)``.

    Each side is ``floor(side * scale)``, in double precision: what ``F.interpolate``
    computes with ``scale_factor`` and ``recompute_scale_factor=True``.
    """
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return int(h * scale), int(w * scale)


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
        out_images, out_targets = [], None if targets is None else []
        for i, image in enumerate(images):
            if image.ndim != 3:
                raise ValueError(f"images are expected as (C, H, W) arrays, got {image.shape}")
            target = None if targets is None else dict(targets[i])
            image = self.normalize(image)
            image, target = self.resize(image, target)
            out_images.append(image)
            if out_targets is not None:
                out_targets.append(target)
        image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in out_images]
        return self.batch_images(out_images), image_sizes, out_targets

    def normalize(self, image):
        """``(image - mean) / std`` per channel; (3, H, W) -> (3, H, W)."""
        if image.dtype.kind != "f":
            raise TypeError(f"images must be floating with values in [0, 1], got {image.dtype}")
        xp = get_xp(image)
        mean = xp.asarray(self.image_mean, dtype=image.dtype)[:, None, None]
        std = xp.asarray(self.image_std, dtype=image.dtype)[:, None, None]
        return (image - mean) / std

    def resize(self, image, target=None):
        """Resize one image to the min/max size rule and its target with it.

        Args:
            image: (3, H, W).
            target: None or a dict (modified in place: pass a copy).
        Returns:
            image (3, h, w) and the target with ``boxes``, ``masks``, ``keypoints``
            resized (masks by nearest neighbour, as uint8).
        """
        h, w = image.shape[-2:]
        if self.training:
            size = self.min_size[int(self.rng.host.integers(len(self.min_size)))]
        else:
            size = self.min_size[-1]
        new_size = resized_image_size(h, w, size, self.max_size)
        image = resize_bilinear(image, new_size)
        if target is None:
            return image, target
        xp = get_xp(image)
        target["boxes"] = resize_boxes(target["boxes"], (h, w), new_size)
        if "masks" in target:
            target["masks"] = resize_nearest(target["masks"], new_size).astype(xp.uint8)
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (h, w), new_size)
        return image, target

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
        # imported here: postprocess.py builds on this file's resize_bilinear
        from .postprocess import paste_masks_in_image

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
