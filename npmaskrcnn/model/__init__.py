"""Mask R-CNN's stages: transform, backbone, FPN, RPN, poolers, heads, post-processing."""

from .mask_rcnn import MaskRCNN

__all__ = ["MaskRCNN"]
