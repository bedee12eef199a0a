"""Binary cross-entropy on logits: the RPN objectness loss and the Mask R-CNN mask loss.

Paper §3: "per-pixel sigmoid, and L_mask is the average binary cross-entropy loss";
for an RoI of ground-truth class k only the k-th mask enters the loss, so the caller
selects that channel (R, M, M) before calling this function.
"""

from __future__ import annotations

import numpy as np

from ..backend import fused, get_xp
from ..layers.activations import stable_sigmoid


def sigmoid_binary_cross_entropy(logits, targets, weight=None, reduction: str = "mean"):
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1].

    Follows ``torch.nn.functional.binary_cross_entropy_with_logits(logits, targets,
    weight=weight, reduction=reduction)``. Per element, in the overflow-free form

        l = w * (max(x, 0) - x * t + log(1 + exp(-|x|)))
          = w * -(t log sigma(x) + (1 - t) log(1 - sigma(x))),
        dl/dx = w * (sigma(x) - t).

    ``reduction="mean"`` divides the sum by the number of elements of ``logits`` (all
    of them, whatever their weight, as PyTorch does; NaN for an empty input);
    ``"sum"`` returns the sum.

    Ignoring elements: pass a 0/1 ``weight`` mask. Note that "mean" still divides by
    all elements; for a mean over the kept elements only, use ``reduction="sum"`` and
    divide loss and gradient by ``weight.sum()``.

    Args:
        logits: any shape, e.g. mask logits of the GT class (R, M, M); float.
        targets: same shape, values in [0, 1] (soft targets allowed).
        weight: None or an array broadcastable to ``logits``: a per-element factor.
        reduction: "mean" or "sum".
    Returns:
        loss: 0-d array of logits' dtype, on logits' backend.
        dlogits: shaped and typed like ``logits``: the gradient of ``loss``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"sigmoid_binary_cross_entropy: unknown reduction {reduction!r}")
    xp = get_xp(logits, targets, weight)
    x = logits
    t = targets.astype(x.dtype, copy=False)
    w = 1 if weight is None else xp.asarray(weight, dtype=x.dtype)
    n = x.size if reduction == "mean" else 1
    per_elem, dlogits = _bce_terms(x, t, w, max(n, 1))
    loss = per_elem.sum()
    if n == 0:
        loss = xp.asarray(np.nan, dtype=x.dtype)
    elif n > 1:
        loss = loss / n
    return loss.astype(x.dtype, copy=False), dlogits.astype(x.dtype, copy=False)


@fused
def _bce_terms(xp, x, t, w, n):
    """Each element's weighted loss and its gradient ``(sigmoid(x) - t) * w / n``
    (one kernel on a GPU). ``max(x, 0) - x t + log(1 + exp(-|x|))`` is
    ``-t log s - (1 - t) log(1 - s)`` without an ``exp`` of a large number."""
    per_elem = (xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))) * w
    return per_elem, (stable_sigmoid(xp, x) - t) * w / n
