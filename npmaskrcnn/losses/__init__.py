"""Losses: each returns ``(loss, dlogits)`` — the value and its gradient."""

from .cross_entropy import softmax_cross_entropy
from .sigmoid_bce import sigmoid_binary_cross_entropy
from .smooth_l1 import smooth_l1

__all__ = ["sigmoid_binary_cross_entropy", "smooth_l1", "softmax_cross_entropy"]
