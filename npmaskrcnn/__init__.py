"""npmaskrcnn: Mask R-CNN from scratch in NumPy, running unchanged on CuPy."""

from .backend import (
    Generator,
    asnumpy,
    get_backend,
    get_xp,
    scatter_add,
    set_backend,
    to_backend,
)
from .config import MaskRCNNConfig
from .model.mask_rcnn import MaskRCNN

__version__ = "0.1.0"

__all__ = [
    "MaskRCNN",
    "MaskRCNNConfig",
    "Generator",
    "asnumpy",
    "get_backend",
    "get_xp",
    "scatter_add",
    "set_backend",
    "to_backend",
]
