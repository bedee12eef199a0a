"""The box coder: boxes <-> regression deltas relative to a reference box.

R-CNN parametrisation (Girshick et al. 2014, appendix C; Faster R-CNN eq. 2): a box
``g`` is described relative to a reference box ``p`` (an anchor or a proposal) by

    dx = wx * (gx - px) / pw        dy = wy * (gy - py) / ph
    dw = ww * log(gw / pw)          dh = wh * log(gh / ph)

where ``(gx, gy)`` / ``(px, py)`` are box centres and ``w``, ``h`` widths and heights
(``x2 - x1`` without +1, see ``boxes/ops.py``). The weights ``(wx, wy, ww, wh)`` scale
the deltas to roughly unit variance: ``(1, 1, 1, 1)`` for the RPN and
``(10, 10, 5, 5)`` for the box head in torchvision's Mask R-CNN.

No gradient flows through the coder: ``encode`` builds regression *targets* from
ground truth (constants), and ``decode`` turns predicted deltas into proposals or
detections, which torchvision detaches as well.
"""

from __future__ import annotations

import math

from ..backend import get_xp

# torchvision's default clamp on decoded dw, dh: a box grows at most 1000/16 = 62.5x
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas and decode deltas back, as torchvision's ``BoxCoder``.

    Follows ``torchvision.models.detection._utils.BoxCoder`` (``encode_single`` /
    ``decode_single``) operation for operation, so float32 results agree to rounding.

    Args:
        weights: ``(wx, wy, ww, wh)`` multiplying the four deltas.
        bbox_xform_clip: upper clamp on the decoded ``dw``, ``dh`` before ``exp``, so a
            wild prediction cannot overflow; ``BBOX_XFORM_CLIP = log(1000 / 16)``.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=BBOX_XFORM_CLIP):
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference_boxes, proposals):
        """Deltas that move each proposal onto its reference box.

        Args:
            reference_boxes: (R, 4) target boxes (the matched ground truth).
            proposals: (R, 4) boxes the deltas are relative to (anchors or proposals).
        Returns:
            (R, 4) deltas ``(dx, dy, dw, dh)``, in the dtype of ``reference_boxes``.
        """
        xp = get_xp(reference_boxes, proposals)
        wx, wy, ww, wh = self.weights
        proposals = proposals.astype(reference_boxes.dtype, copy=False)

        ex_widths = proposals[:, 2] - proposals[:, 0]
        ex_heights = proposals[:, 3] - proposals[:, 1]
        ex_ctr_x = proposals[:, 0] + 0.5 * ex_widths
        ex_ctr_y = proposals[:, 1] + 0.5 * ex_heights

        gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_heights

        dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        dw = ww * xp.log(gt_widths / ex_widths)
        dh = wh * xp.log(gt_heights / ex_heights)
        return xp.stack([dx, dy, dw, dh], axis=1)  # 4 x (R,) -> (R, 4)

    def decode(self, rel_codes, boxes):
        """Apply deltas to reference boxes (one or several boxes per reference).

        ``x1 = cx - w/2``, ``x2 = cx + w/2`` (likewise y) with
        ``cx = dx/wx * pw + px`` and ``w = exp(min(dw/ww, clip)) * pw``.

        Args:
            rel_codes: (R, 4*k) deltas; column block ``c`` holds ``(dx, dy, dw, dh)`` of
                class (or anchor) ``c``.
            boxes: (R, 4) reference boxes; cast to the dtype of ``rel_codes``.
        Returns:
            (R, 4*k) decoded boxes, block ``c`` being ``(x1, y1, x2, y2)`` for delta
            block ``c``.
        """
        xp = get_xp(rel_codes, boxes)
        boxes = boxes.astype(rel_codes.dtype, copy=False)
        wx, wy, ww, wh = self.weights

        widths = (boxes[:, 2] - boxes[:, 0])[:, None]  # (R, 1), broadcast over the k blocks
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        ctr_x = boxes[:, 0:1] + 0.5 * widths
        ctr_y = boxes[:, 1:2] + 0.5 * heights

        dx = rel_codes[:, 0::4] / wx  # (R, k) each
        dy = rel_codes[:, 1::4] / wy
        # the clamp keeps exp() finite for wild predictions early in training
        dw = xp.minimum(rel_codes[:, 2::4] / ww, self.bbox_xform_clip)
        dh = xp.minimum(rel_codes[:, 3::4] / wh, self.bbox_xform_clip)

        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (xp.exp(dw) * widths)
        half_h = 0.5 * (xp.exp(dh) * heights)

        pred = xp.stack(
            [pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h],
            axis=2,
        )  # (R, k, 4)
        return pred.reshape(rel_codes.shape)  # (R, k, 4) -> (R, 4*k)
