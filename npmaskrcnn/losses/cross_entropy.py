"""Softmax cross-entropy, the classification loss of the box head (Fast R-CNN's L_cls).

It also serves the paper's "multinomial masks" ablation (Table 2b), where the mask
loss is a per-pixel softmax over the K classes instead of independent sigmoids: hence
spatial logits (R, K, M, M) with per-pixel labels (R, M, M) are accepted, as
``F.cross_entropy`` accepts them. :func:`soft_target_cross_entropy` takes a target
distribution per position instead of a label: the softmax arm of Table 2b trains on the
same soft mask targets as the sigmoid arm.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp


def softmax_cross_entropy(logits, labels, ignore_index: int = -100):
    """Mean negative log-likelihood of the labels under a softmax over the class axis.

    Follows ``torch.nn.functional.cross_entropy(logits, labels, ignore_index=...,
    reduction="mean")``. For each position i with label y_i != ignore_index,

        loss_i = -log softmax(z_i)[y_i] = logsumexp(z_i) - z_i[y_i],
        loss   = sum_i loss_i / #{i : y_i != ignore_index},
        dloss/dz_i = (softmax(z_i) - onehot(y_i)) / #{...}   (0 for ignored positions).

    The log-softmax subtracts each row's maximum first, so no exp overflows. As in
    PyTorch, when every position is ignored (or there is none) the loss is NaN (0/0)
    and the gradient is zero. Labels must lie in [0, K) or equal ``ignore_index``
    (not checked, to avoid a device sync).

    Args:
        logits: (R, K) or (R, K, *S), e.g. (R, K, M, M); float.
        labels: (R,) or (R, *S); integer class indices.
        ignore_index: label value that contributes neither to the loss nor the count.
    Returns:
        loss: 0-d array of logits' dtype, on logits' backend.
        dlogits: shaped and typed like ``logits``.
    """
    xp = get_xp(logits, labels)
    if tuple(labels.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(
            f"softmax_cross_entropy: labels {tuple(labels.shape)} do not match "
            f"logits {tuple(logits.shape)} without its class axis"
        )
    K = logits.shape[1]
    z = xp.moveaxis(logits, 1, -1).reshape(-1, K)  # (R, K, *S) -> (R * prod(S), K)
    y = labels.reshape(-1).astype(np.int64)  # (R, *S) -> (R * prod(S),)
    valid = y != ignore_index
    y_safe = xp.where(valid, y, 0)  # any in-range index; ignored rows are masked out below
    shifted = z - z.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1)  # (rows,)
    rows = xp.arange(z.shape[0])
    nll = xp.log(sum_exp) - shifted[rows, y_safe]  # logsumexp(z) - z_y, both less zmax
    count = valid.sum()
    zero = xp.zeros((), dtype=logits.dtype)
    total = xp.where(valid, nll, zero).sum()
    denom = xp.maximum(count, 1).astype(logits.dtype)
    loss = xp.where(count > 0, total / denom, xp.asarray(np.nan, dtype=logits.dtype))

    grad = exp
    grad /= sum_exp[:, None]  # softmax, in place of exp (not needed any more)
    grad[rows, y_safe] -= 1
    grad *= (valid / denom).astype(logits.dtype)[:, None]
    # (R * prod(S), K) -> (R, *S, K) -> (R, K, *S)
    grad = grad.reshape(labels.shape + (K,))
    dlogits = xp.ascontiguousarray(xp.moveaxis(grad, -1, 1))
    return loss.astype(logits.dtype), dlogits


def soft_target_cross_entropy(logits, target_probs):
    """Mean cross-entropy against a target *distribution* over the class axis.

    Follows ``torch.nn.functional.cross_entropy(logits, target_probs, reduction="mean")``
    with class probabilities as the target (PyTorch >= 1.10). For each position i with
    target distribution q_i (q_ik >= 0, sum_k q_ik = 1),

        loss_i = -sum_k q_ik log softmax(z_i)_k = logsumexp(z_i) - sum_k q_ik z_ik,
        loss   = sum_i loss_i / n,        n = the number of positions,
        dloss/dz_i = (softmax(z_i) - q_i) / n      (this form uses sum_k q_ik = 1).

    With a one-hot q_i this is :func:`softmax_cross_entropy`. It serves the softmax arm
    of the paper's Table 2b on *soft* mask targets (``model/mask_head.py``). The rows
    of ``target_probs`` are not checked to sum to 1 (that would cost a device sync).

    Args:
        logits: (R, K) or (R, K, *S); float.
        target_probs: the same shape: a distribution over K at every position.
    Returns:
        loss: 0-d array of logits' dtype (NaN with no position, as PyTorch's mean of
            nothing); dlogits: shaped and typed like ``logits``.
    """
    xp = get_xp(logits, target_probs)
    if tuple(target_probs.shape) != tuple(logits.shape):
        raise ValueError(f"soft_target_cross_entropy: target_probs {tuple(target_probs.shape)} "
                         f"do not match logits {tuple(logits.shape)}")
    n = logits.size // max(logits.shape[1], 1)  # positions: R * prod(S)
    if n == 0:
        return xp.asarray(np.nan, dtype=logits.dtype), xp.zeros_like(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # log-softmax over K
    q = target_probs.astype(logits.dtype)
    loss = -(q * logp).sum() / logits.dtype.type(n)
    dlogits = (xp.exp(logp) - q) / logits.dtype.type(n)
    return loss.astype(logits.dtype), dlogits
