"""Training-time augmentation and batching (host side, NumPy; no gradient).

The model's own resize / normalise / pad lives in ``model/transform.py`` (it is part
of the network, as in torchvision). Here: a random horizontal flip applied
consistently to the image, its boxes, masks and keypoints, and a loader whose batch
order is a pure function of (seed, iteration), so that a resumed run sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import numpy as np

# COCO person keypoints: which index becomes which under a left/right flip
COCO_KEYPOINT_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def hflip(image: np.ndarray, target: dict, keypoint_flip=COCO_KEYPOINT_FLIP):
    """Mirror an image (3, H, W) and its target left to right.

    Boxes: x1' = W - x2, x2' = W - x1 (widths are x2 - x1, so this is exact).
    Masks: reversed columns. Keypoints: x' = W - x, and left/right joints swapped
    (a left wrist seen in a mirror is a right wrist).
    """
    w = image.shape[-1]
    image = image[..., ::-1].copy()
    out = dict(target)
    if "boxes" in target:
        b = np.asarray(target["boxes"]).copy()
        b[:, [0, 2]] = w - b[:, [2, 0]]
        out["boxes"] = b
    if "masks" in target:
        out["masks"] = np.asarray(target["masks"])[..., ::-1].copy()
    if target.get("keypoints") is not None:
        k = np.asarray(target["keypoints"]).copy()
        k[..., 0] = np.where(k[..., 2] > 0, w - k[..., 0], k[..., 0])
        out["keypoints"] = k[:, list(keypoint_flip)]
    return image, out


class BatchLoader:
    """Batches of dataset items in a seeded order that depends only on the iteration.

    The index stream is the concatenation of one permutation per epoch, epoch e
    drawn from ``default_rng((seed, e))``; batch i holds stream items
    [i*B, (i+1)*B). Flips are drawn from ``default_rng((seed, e, position))``.
    So ``batch(i)`` is the same whether a run got there in one go or resumed.
    """

    def __init__(self, dataset, batch_size: int = 2, seed: int = 0, flip_prob: float = 0.5):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: nothing to train on")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.flip_prob = flip_prob
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng((self.seed, epoch)).permutation(
                len(self.dataset))}
        return self._perm_cache[epoch]

    def batch(self, iteration: int):
        """(images, targets) of batch ``iteration`` (lists of NumPy arrays / dicts)."""
        n = len(self.dataset)
        images, targets = [], []
        for j in range(iteration * self.batch_size, (iteration + 1) * self.batch_size):
            epoch, pos = divmod(j, n)
            image, target = self.dataset[int(self._perm(epoch)[pos])]
            if np.random.default_rng((self.seed, epoch, pos)).random() < self.flip_prob:
                image, target = hflip(image, target)
            images.append(image)
            targets.append(target)
        return images, targets
