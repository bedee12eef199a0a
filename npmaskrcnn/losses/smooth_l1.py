"""Smooth-L1 (Huber-like) loss: the box-regression loss of the RPN and of the box head.

torchvision uses ``F.smooth_l1_loss(pred, target, beta=1/9, reduction="sum")`` for both
and divides by the number of sampled anchors / RoIs itself; this function is that sum.
"""

from __future__ import annotations

from ..backend import fused, get_xp


def smooth_l1(pred, target, beta: float):
    """Summed smooth-L1 loss and its gradient w.r.t. ``pred``.

    Follows ``torch.nn.functional.smooth_l1_loss(pred, target, beta=beta,
    reduction="sum")``. With d = pred - target, per element

        l(d) = 0.5 d^2 / beta   if |d| < beta,
               |d| - 0.5 beta   otherwise,
        dl/dd = d / beta        if |d| < beta,   sign(d) otherwise.

    ``beta == 0`` is exactly the L1 loss |d| with gradient sign(d) (0 at d = 0), as
    PyTorch, which dispatches to ``l1_loss`` then. Any beta > 0, however small, uses
    the formula above (torchvision's detection code passes beta = 1/9).

    Args:
        pred: any shape, e.g. (R, 4) box deltas; float.
        target: same shape.
        beta: the transition point, >= 0.
    Returns:
        loss: 0-d array of pred's dtype, on pred's backend (0 for empty inputs).
        dpred: shaped and typed like ``pred``.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1: beta must be >= 0, got {beta}")
    if beta == 0:
        xp = get_xp(pred, target)
        d = pred - target
        return xp.abs(d).sum().astype(pred.dtype), xp.sign(d).astype(pred.dtype)
    per_elem, dpred = _smooth_l1_terms(pred, target, beta)
    return per_elem.sum().astype(pred.dtype, copy=False), dpred.astype(pred.dtype, copy=False)


@fused
def _smooth_l1_terms(xp, pred, target, beta):
    """Each element's loss and its gradient, beta > 0 (one kernel on a GPU)."""
    d = pred - target
    ad = xp.abs(d)
    quadratic = ad < beta
    return (xp.where(quadratic, 0.5 * d * d / beta, ad - 0.5 * beta),
            xp.where(quadratic, d / beta, xp.sign(d)))
