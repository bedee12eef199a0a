"""Binary cross-entropy on logits: the RPN objectness loss and the Mask R-CNN mask loss.

Paper §3: "per-pixel sigmoid, and L_mask is the average binary cross-entropy loss";
for an RoI of ground-truth class k only the k-th mask enters the loss, so the caller
selects that channel (R, M, M) before calling this function.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..layers.activations import sigmoid


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
    t = targets.astype(x.dtype)
    per_elem = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
    dlogits = sigmoid(x) - t
    if weight is not None:
        w = xp.asarray(weight, dtype=x.dtype)
        per_elem = per_elem * w
        dlogits = dlogits * w
    loss = per_elem.sum()
    if reduction == "mean":
        n = x.size
        if n == 0:
            loss = xp.asarray(np.nan, dtype=x.dtype)
        else:
            loss = loss / n
            dlogits = dlogits / n
    return loss.astype(x.dtype), dlogits.astype(x.dtype, copy=False)
