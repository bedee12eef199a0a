"""Size arithmetic shared by the layers: ``(height, width)`` pairs and window counts."""

from __future__ import annotations


def as_pair(value) -> tuple[int, int]:
    """An int or a pair of ints as ``(height, width)``, like PyTorch's ``_pair``."""
    if isinstance(value, (tuple, list)):
        first, second = value
        return int(first), int(second)
    return int(value), int(value)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``(size + 2 * padding - kernel) // stride + 1``: how many windows fit (floor), as
    ``torch.nn.functional.conv2d`` and ``max_pool2d`` (``ceil_mode=False``) count them."""
    return (size + 2 * padding - kernel) // stride + 1
