"""The balanced sampler: pick a fixed-size, mostly-balanced minibatch of examples.

Most anchors and proposals are background. Training on all of them would drown the
few positives, so each image contributes ``batch_size_per_image`` examples, at most a
``positive_fraction`` of them positive, the rest filled with negatives (Faster R-CNN
section 3.1.3: 256 anchors, up to 1:1; Fast R-CNN section 2.3: 512 RoIs with 25 %
foreground in torchvision's Mask R-CNN).

No gradient flows through sampling: it only selects which losses are counted.
"""

from __future__ import annotations

import numpy as np

from ..backend import Generator, asnumpy, get_xp


class BalancedPositiveNegativeSampler:
    """Random positive/negative subsets of one image's labels.

    Follows ``torchvision.models.detection._utils.BalancedPositiveNegativeSampler``
    (per image instead of a list of images, and returning indices instead of masks):

        num_pos = min(int(batch_size_per_image * positive_fraction), #positives)
        num_neg = min(batch_size_per_image - num_pos, #negatives)

    and the chosen ones are the first ``num_pos`` / ``num_neg`` of a random
    permutation of the positive / negative indices (torchvision draws them with
    ``torch.randperm``).

    Determinism: the draws come only from the ``rng`` passed in, positives first,
    then negatives, one ``rng.permutation`` each. The same generator state and labels
    give the same samples, on NumPy and CuPy alike (``Generator`` draws on the host).

    Args:
        batch_size_per_image: examples per image (256 for the RPN, 512 for the box head).
        positive_fraction: largest share of positives (0.5 for the RPN, 0.25 for the
            box head).
    """

    def __init__(self, batch_size_per_image, positive_fraction):
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, labels, rng: Generator):
        """Sample one image's examples.

        Args:
            labels: (P,) int; ``>= 1`` positive, ``0`` negative, ``-1`` ignored.
            rng: the ``Generator`` that supplies the random permutations.
        Returns:
            pos_idx: (num_pos,) int64 indices into ``labels``, in random order.
            neg_idx: (num_neg,) int64 indices into ``labels``, in random order.
        """
        xp = get_xp(labels)
        positive = xp.flatnonzero(labels >= 1).astype(np.int64, copy=False)
        negative = xp.flatnonzero(labels == 0).astype(np.int64, copy=False)

        num_pos = min(int(self.batch_size_per_image * self.positive_fraction), positive.size)
        num_neg = min(self.batch_size_per_image - num_pos, negative.size)

        perm_pos = _permutation_on(xp, rng, positive.size)[:num_pos]
        perm_neg = _permutation_on(xp, rng, negative.size)[:num_neg]
        return positive[perm_pos], negative[perm_neg]


def _permutation_on(xp, rng: Generator, n: int):
    """``rng.permutation(n)`` as an int64 array of the module ``xp``.

    The generator returns arrays of its own backend, which may differ from the
    labels' (e.g. a NumPy-backed generator with CuPy labels); the permutation is
    small, so moving it through the host costs nothing worth avoiding.
    """
    perm = rng.permutation(n)
    if get_xp(perm) is not xp:
        perm = xp.asarray(asnumpy(perm))
    return perm.astype(np.int64, copy=False)
