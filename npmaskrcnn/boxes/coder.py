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

import numpy as np

from ..backend import fused, get_xp

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
        self._pairs = {}  # (dtype, backend) -> the weights as two device pairs

    def _weights(self, dtype, xp):
        """The weights as two device pairs ``(wx, wy)``, ``(ww, wh)`` of ``dtype``, made
        once per dtype and backend: the x and y halves of the formulas go together."""
        key = (np.dtype(dtype).str, xp.__name__)
        if key not in self._pairs:
            w = np.asarray(self.weights, dtype=dtype)
            self._pairs[key] = (xp.asarray(w[:2]), xp.asarray(w[2:]))
        return self._pairs[key]

    def encode(self, reference_boxes, proposals):
        """Deltas that move each proposal onto its reference box.

        The x and y halves are computed together: a box ``(x1, y1, x2, y2)`` is read as
        the two points ``[[x1, y1], [x2, y2]]``, so ``wh = p2 - p1`` and
        ``ctr = p1 + wh / 2`` are pairs, and each line below is one array operation.

        Args:
            reference_boxes: (..., 4) target boxes (the matched ground truth), e.g. (R, 4)
                or a batch (N, R, 4).
            proposals: (..., 4) boxes the deltas are relative to (anchors or proposals),
                broadcastable against ``reference_boxes``.
        Returns:
            (..., 4) deltas ``(dx, dy, dw, dh)``, in the dtype of ``reference_boxes``.
        """
        xp = get_xp(reference_boxes, proposals)
        w_ctr, w_wh = self._weights(reference_boxes.dtype, xp)
        ex = proposals.astype(reference_boxes.dtype, copy=False)
        ex = ex.reshape(ex.shape[:-1] + (2, 2))  # (..., 4) -> (..., 2 points, (x, y))
        gt = reference_boxes.reshape(reference_boxes.shape[:-1] + (2, 2))
        d_ctr, d_wh = _encode_pairs(gt[..., 0, :], gt[..., 1, :], ex[..., 0, :], ex[..., 1, :],
                                    w_ctr, w_wh)  # (dx, dy), (dw, dh)
        return xp.concatenate([d_ctr, d_wh], axis=-1)  # (..., 4)

    def decode(self, rel_codes, boxes):
        """Apply deltas to reference boxes (one or several boxes per reference).

        ``x1 = cx - w/2``, ``x2 = cx + w/2`` (likewise y) with
        ``cx = dx/wx * pw + px`` and ``w = exp(min(dw/ww, clip)) * pw``; the x and y
        halves together, as in ``encode``.

        Args:
            rel_codes: (..., 4*k) deltas; column block ``c`` holds ``(dx, dy, dw, dh)`` of
                class (or anchor) ``c``; e.g. (R, 4K) or a batch (N, A, 4).
            boxes: (..., 4) reference boxes, broadcastable against ``rel_codes``'s leading
                axes; cast to the dtype of ``rel_codes``.
        Returns:
            (..., 4*k) decoded boxes, block ``c`` being ``(x1, y1, x2, y2)`` for delta
            block ``c``.
        """
        xp = get_xp(rel_codes, boxes)
        w_ctr, w_wh = self._weights(rel_codes.dtype, xp)
        boxes = boxes.astype(rel_codes.dtype, copy=False)
        b = boxes.reshape(boxes.shape[:-1] + (1, 2, 2))  # (..., 1 block, 2 points, (x, y))
        k = rel_codes.shape[-1] // 4
        codes = rel_codes.reshape(rel_codes.shape[:-1] + (k, 2, 2))  # (..., k, 2, 2)
        # (..., 1, 2) reference points broadcast over the k blocks of (..., k, 2) deltas
        p1, p2 = _decode_pairs(codes[..., 0, :], codes[..., 1, :], b[..., 0, :], b[..., 1, :],
                               w_ctr, w_wh, self.bbox_xform_clip)
        pred = xp.concatenate([p1, p2], axis=-1)  # (..., k, 4)
        return pred.reshape(rel_codes.shape)  # (..., k, 4) -> (..., 4*k)


# The formulas of encode and decode on (x, y) pairs, each one kernel on a GPU (``fused``):
# a dozen elementwise operations that would otherwise be a dozen launches.


@fused
def _encode_pairs(xp, gt1, gt2, ex1, ex2, w_ctr, w_wh):
    """(dx, dy) and (dw, dh) of boxes (gt1, gt2) relative to boxes (ex1, ex2) (corners)."""
    ex_wh = ex2 - ex1  # (widths, heights)
    ex_ctr = ex1 + 0.5 * ex_wh  # centres
    gt_wh = gt2 - gt1
    gt_ctr = gt1 + 0.5 * gt_wh
    return w_ctr * (gt_ctr - ex_ctr) / ex_wh, w_wh * xp.log(gt_wh / ex_wh)


@fused
def _decode_pairs(xp, d_ctr, d_wh, b1, b2, w_ctr, w_wh, clip):
    """The corners (x1, y1) and (x2, y2) of deltas (d_ctr, d_wh) applied to boxes (b1, b2)."""
    wh = b2 - b1
    ctr = b1 + 0.5 * wh
    d_ctr = d_ctr / w_ctr
    # the clamp keeps exp() finite for wild predictions early in training
    d_wh = xp.minimum(d_wh / w_wh, clip)
    pred_ctr = d_ctr * wh + ctr
    half = 0.5 * (xp.exp(d_wh) * wh)
    return pred_ctr - half, pred_ctr + half
