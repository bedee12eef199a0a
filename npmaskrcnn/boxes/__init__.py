"""Box bookkeeping: IoU, coding, matching, sampling, anchors, NMS. No gradient flows here."""

from .anchors import AnchorGenerator
from .coder import BoxCoder
from .matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from .nms import batched_nms, batched_nms_naive, nms, nms_naive, nms_padded
from .ops import box_area, box_iou, clip_boxes_to_image, remove_small_boxes
from .sampler import sample_balanced, sampled_first

__all__ = [
    "AnchorGenerator", "BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "BoxCoder", "Matcher",
    "batched_nms", "batched_nms_naive", "box_area", "box_iou", "clip_boxes_to_image", "nms",
    "nms_naive", "nms_padded", "remove_small_boxes", "sample_balanced", "sampled_first",
]
