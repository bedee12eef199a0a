"""The RPN head: a 3x3 conv + ReLU, then 1x1 convs to objectness logits and box deltas.

The same head runs on every pyramid level (FPN paper 4.1: the head is attached to each
level, its parameters shared by all of them). Torchvision's ``RPNHead`` loops over the
levels; so does ``RPNHead.forward`` here, level by level with the ``Conv2d`` modules.
The RPN itself wants the predictions of all levels as rows (level, position, anchor),
which ``forward_flat`` / ``backward_flat`` give:

- on a CPU, by that loop and ``flatten_predictions`` (a transpose per level);
- on a GPU, as one computation over all levels at once: shared weights mean that the
  3x3 conv of every level is one GEMM over the levels' columns side by side
  (``conv2d_maps_forward``), and the two 1x1 convs are one GEMM with the stacked
  weights ``[cls_logits; bbox_pred]`` (A + 4A outputs). A handful of launches instead of
  a dozen per level.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import get_xp, on_device
from ..layers.activations import ReLU
from ..layers.conv import Conv2d
from ..layers.conv_fast import conv2d_maps_backward, conv2d_maps_forward
from ..layers.module import Module, Sequential


class RPNHead(Module):
    """3x3 conv + ReLU, then 1x1 convs to A logits and 4A deltas, shared over levels.

    Names as torchvision: ``conv.0.0``, ``cls_logits``, ``bbox_pred``; weights
    N(0, 0.01), biases 0 (tv ``RPNHead``). The same modules run on every level, so their
    caches stack and their gradients add (``Module.accumulate``).
    """

    def __init__(self, in_channels: int, num_anchors: int, rng, dtype):
        super().__init__()
        conv = Conv2d(in_channels, in_channels, 3, padding=1, rng=rng, dtype=dtype)
        self.conv = Sequential(Sequential(conv, ReLU()))
        self.cls_logits = Conv2d(in_channels, num_anchors, 1, rng=rng, dtype=dtype)
        self.bbox_pred = Conv2d(in_channels, 4 * num_anchors, 1, rng=rng, dtype=dtype)
        for m in (conv, self.cls_logits, self.bbox_pred):
            m.params["weight"][...] = rng.normal(0.0, 0.01, m.params["weight"].shape,
                                                 dtype=m.params["weight"].dtype)
            m.params["bias"][...] = 0

    def forward(self, features):
        """features: L maps (N, C, H_l, W_l) -> (logits L x (N, A, H_l, W_l),
        deltas L x (N, 4A, H_l, W_l))."""
        logits, deltas = [], []
        for f in features:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas

    def backward(self, dlogits, ddeltas):
        """Levels in reverse order (the caches are stacks); returns L x dfeatures."""
        dfeatures = [None] * len(dlogits)
        for lvl in reversed(range(len(dlogits))):
            dt = self.bbox_pred.backward(ddeltas[lvl]) + self.cls_logits.backward(dlogits[lvl])
            dfeatures[lvl] = self.conv.backward(dt)
        return dfeatures

    def forward_flat(self, features):
        """All levels' predictions as anchor rows (level, position, anchor).

        Returns:
            objectness (N, sumA), pred_deltas (N, sumA, 4), and the levels' logit shapes
            L x (N, A, H_l, W_l).
        """
        xp = get_xp(features[0])
        if on_device(xp):
            return self._forward_all_levels(features)
        logits, deltas = self(features)
        flat_logits, flat_deltas = flatten_predictions(logits, deltas)
        self.push(None)  # backward_flat: the modules' own caches hold everything
        shapes = [lg.shape for lg in logits]
        return xp.concatenate(flat_logits, axis=1), xp.concatenate(flat_deltas, axis=1), shapes

    def backward_flat(self, dobjectness, dpred_deltas, shapes):
        """Gradients of ``forward_flat``'s outputs -> L x dfeatures."""
        cache = self.pop()
        if cache is not None:
            return self._backward_all_levels(dobjectness, dpred_deltas, cache)
        return self.backward(*unflatten_gradients(dobjectness, dpred_deltas, shapes))

    def _forward_all_levels(self, features):
        """GPU: the 3x3 conv of every level in one GEMM, both 1x1 convs in another."""
        xp = get_xp(features[0])
        conv = self.conv[0][0]
        n, a = features[0].shape[0], self.cls_logits.out_channels
        t, conv_cache = conv2d_maps_forward(features, conv.params["weight"],
                                            conv.params["bias"], conv.padding)  # (N, C, L)
        mask = t > 0
        t = xp.maximum(t, 0)  # the ReLU
        c = t.shape[1]
        # [cls_logits; bbox_pred] as one (A + 4A, C) weight: one product for both outputs
        w = xp.concatenate([self.cls_logits.params["weight"].reshape(a, c),
                            self.bbox_pred.params["weight"].reshape(4 * a, c)])
        b = xp.concatenate([self.cls_logits.params["bias"], self.bbox_pred.params["bias"]])
        out = xp.matmul(w, t) + b[:, None]  # (N, 5A, L), L = sum_l H_l W_l
        # (N, A, L) -> (N, L, A) -> (N, L*A): rows (level, position, anchor)
        objectness = out[:, :a].transpose(0, 2, 1).reshape(n, -1)
        # (N, 4A, L) -> (N, A, 4, L) -> (N, L, A, 4) -> (N, L*A, 4)
        pred_deltas = out[:, a:].reshape(n, a, 4, -1).transpose(0, 3, 1, 2).reshape(n, -1, 4)
        self.push(HeadCache(conv_cache, mask, t, w))
        shapes = [(n, a) + tuple(f.shape[2:]) for f in features]
        return objectness, pred_deltas, shapes

    def _backward_all_levels(self, dobjectness, dpred_deltas, cache):
        """GPU: ``_forward_all_levels`` reversed; the parameters' gradients accumulate
        into the three convs' ``grads`` as their own backward would."""
        xp = get_xp(dobjectness)
        n, total = dobjectness.shape
        a = self.cls_logits.out_channels
        length = total // a
        dlogits = dobjectness.reshape(n, length, a).transpose(0, 2, 1)  # (N, A, L)
        ddeltas = dpred_deltas.reshape(n, length, a, 4).transpose(0, 2, 3, 1)
        dout = xp.concatenate([dlogits, ddeltas.reshape(n, 4 * a, length)], axis=1)
        dw = xp.matmul(dout, cache.t.transpose(0, 2, 1)).sum(axis=0)  # (5A, C)
        db = dout.sum(axis=(0, 2))
        for m, rows in ((self.cls_logits, slice(0, a)), (self.bbox_pred, slice(a, 5 * a))):
            m.accumulate("weight", dw[rows].reshape(m.params["weight"].shape))
            m.accumulate("bias", db[rows])
        dt = xp.where(cache.mask, xp.matmul(cache.w.T, dout), 0)  # through the ReLU
        dfeatures, dw3, db3 = conv2d_maps_backward(dt, cache.conv)
        conv = self.conv[0][0]
        conv.accumulate("weight", dw3)
        conv.accumulate("bias", db3)
        return dfeatures


class HeadCache(NamedTuple):
    """What ``RPNHead._backward_all_levels`` needs."""

    conv: Any  # conv2d_maps_forward's cache (the columns of every level)
    mask: Any  # (N, C, L) bool: where the 3x3 conv's output was positive (the ReLU)
    t: Any  # (N, C, L) the ReLU's output, input of the 1x1 convs
    w: Any  # (5A, C) the stacked 1x1 weights


def flatten_predictions(logits, deltas):
    """Per-level head outputs -> anchor-ordered rows (level, position, anchor).

    (N, A, H, W) -> (N, H*W*A) and (N, 4A, H, W) -> (N, H*W*A, 4), per level;
    tv ``concat_box_prediction_layers`` (which also concatenates the levels).
    """
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        n, a, h, w = lg.shape
        flat_logits.append(lg.transpose(0, 2, 3, 1).reshape(n, h * w * a))
        # (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)
        flat_deltas.append(dl.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return flat_logits, flat_deltas


def unflatten_gradients(dlogits, ddeltas, shapes):
    """The inverse of ``flatten_predictions`` + concatenation, for the gradients.

    Args:
        dlogits: (N, sumA); ddeltas: (N, sumA, 4); shapes: the (N, A, H, W) of each level.
    Returns:
        L x (N, A, H, W) and L x (N, 4A, H, W).
    """
    out_logits, out_deltas = [], []
    start = 0
    for n, a, h, w in shapes:
        stop = start + h * w * a
        out_logits.append(dlogits[:, start:stop].reshape(n, h, w, a).transpose(0, 3, 1, 2))
        dd = ddeltas[:, start:stop].reshape(n, h, w, a, 4).transpose(0, 3, 4, 1, 2)
        out_deltas.append(dd.reshape(n, a * 4, h, w))
        start = stop
    return out_logits, out_deltas
