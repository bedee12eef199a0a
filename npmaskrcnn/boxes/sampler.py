"""The balanced sampler: pick a fixed-size, mostly-balanced minibatch of examples.

Most anchors and proposals are background. Training on all of them would drown the
few positives, so each image contributes ``batch_size_per_image`` examples, at most a
``positive_fraction`` of them positive, the rest filled with negatives (Faster R-CNN
section 3.1.3: 256 anchors, up to 1:1; Fast R-CNN section 2.3: 512 RoIs with 25 %
foreground in torchvision's Mask R-CNN)::

    num_pos = min(int(batch_size_per_image * positive_fraction), #positives)
    num_neg = min(batch_size_per_image - num_pos, #negatives)

and the chosen ones are a uniformly random subset of each kind.

How the random subset is drawn: every example gets a random key in [0, 1), and the
``num_pos`` positives with the smallest keys are taken (likewise negatives). This is the
same distribution as torchvision's "first ``num_pos`` of a random permutation"
(``torch.randperm``), but it is a few whole-array operations (a sort, comparisons) on
every image of a batch at once, with no count read back to the host: on a GPU, no
synchronisation. The keys come from the caller (``Generator.uniform``, drawn on the
host), so the same generator state gives the same samples on every backend.

No gradient flows through sampling: it only selects which losses are counted.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp


def sample_balanced(labels, keys, batch_size_per_image: int, positive_fraction: float):
    """Random positive/negative subsets of each image's labels, as masks.

    Args:
        labels: (P,) or (N, P) int; ``>= 1`` positive, ``0`` negative, ``-1`` ignored.
        keys: random numbers of the shape of ``labels`` (a smaller key is chosen first).
        batch_size_per_image: examples per image (256 for the RPN, 512 for the box head).
        positive_fraction: largest share of positives (0.5 for the RPN, 0.25 for the
            box head).
    Returns:
        pos, neg: bool masks of the shape of ``labels``: the sampled positives and
        negatives (disjoint), ``num_pos`` and ``num_neg`` of each image (see above).
    """
    xp = get_xp(labels, keys)
    positive = labels >= 1
    negative = labels == 0
    max_pos = int(batch_size_per_image * positive_fraction)
    num_pos = xp.minimum(positive.sum(axis=-1, keepdims=True), max_pos)  # (..., 1)
    num_neg = xp.minimum(negative.sum(axis=-1, keepdims=True),
                         batch_size_per_image - num_pos)
    # One sort per image: positives by key, then negatives by key, then the ignored.
    # rank = position in that order, so the j-th positive by key has rank j and the
    # j-th negative has rank #positives + j.
    order = xp.argsort(xp.where(positive, keys, xp.where(negative, keys + 2, 4)), axis=-1)
    rank = xp.empty(order.shape, dtype=np.int64)
    xp.put_along_axis(rank, order, xp.arange(order.shape[-1]), axis=-1)
    pos = positive & (rank < num_pos)
    neg = negative & (rank < positive.sum(axis=-1, keepdims=True) + num_neg)
    return pos, neg


def sampled_first(pos, neg, keys, size: int):
    """Indices of the sampled examples, positives first, as a fixed-size array.

    The box head needs its RoIs as a compact list. Sorting by "sampled positive, then
    sampled negative, then the rest" (by key within each) and keeping the first ``size``
    gives a fixed shape without reading any count back; positions past an image's
    ``num_pos + num_neg`` are filler (``valid`` False).

    Args:
        pos, neg: (N, P) bool masks from ``sample_balanced``.
        keys: (N, P) the keys used there (they order the examples within each kind).
        size: columns of the result (``batch_size_per_image``, at most P).
    Returns:
        index: (N, size) int64 positions into the P examples of each image.
        valid: (N, size) bool, True for the sampled ones (a prefix of each row).
    """
    xp = get_xp(pos, neg, keys)
    priority = xp.where(pos, keys, xp.where(neg, keys + 2, keys + 4))
    index = xp.argsort(priority, axis=-1)[:, :size]
    valid = xp.take_along_axis(pos | neg, index, axis=-1)
    return index, valid
