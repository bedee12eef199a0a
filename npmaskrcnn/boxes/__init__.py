"""Box bookkeeping: IoU, coding, matching, sampling, anchors, NMS. No gradient flows here."""

from .anchors import AnchorGenerator
from .coder import BoxCoder
from .matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from .nms import batched_nms, nms, nms_naive
from .ops import box_area, box_iou, clip_boxes_to_image, remove_small_boxes
from .sampler import BalancedPositiveNegativeSampler

__all__ = [
    "AnchorGenerator", "BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS",
    "BalancedPositiveNegativeSampler", "BoxCoder", "Matcher", "batched_nms", "box_area",
    "box_iou", "clip_boxes_to_image", "nms", "nms_naive", "remove_small_boxes",
]
