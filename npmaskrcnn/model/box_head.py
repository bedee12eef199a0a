"""The box branch: a 2-layer MLP on 7x7 pooled features, then class and box outputs.

    pooled (R, C, 7, 7) -> flatten (R, C*49) -> fc6 + ReLU -> fc7 + ReLU -> (R, 1024)
        -> cls_score (R, K)   class logits
        -> bbox_pred (R, 4K)  class-specific box deltas (weights 10, 10, 5, 5)

Loss (Fast R-CNN, as tv ``fastrcnn_loss``): softmax cross-entropy over all sampled RoIs
(mean) + smooth-L1 (beta 1/9) on the *ground-truth class's* deltas of the positive RoIs,
summed and divided by the number of sampled RoIs. Paper Fig. 4 (right), section 3.
"""

from __future__ import annotations

from ..backend import get_xp
from ..layers.activations import ReLU
from ..layers.linear import Flatten, Linear
from ..layers.module import Module
from ..losses.cross_entropy import softmax_cross_entropy
from ..losses.smooth_l1 import smooth_l1


class TwoMLPHead(Module):
    """fc6 and fc7 with ReLU (tv ``TwoMLPHead``): (R, C, P, P) -> (R, representation)."""

    def __init__(self, in_channels: int, pool_size: int, representation_size: int, rng, dtype):
        super().__init__()
        self.flatten = Flatten()  # (R, C, P, P) -> (R, C*P*P); no parameters
        self.fc6 = Linear(in_channels * pool_size * pool_size, representation_size, rng=rng,
                          dtype=dtype)
        self.relu6 = ReLU()
        self.fc7 = Linear(representation_size, representation_size, rng=rng, dtype=dtype)
        self.relu7 = ReLU()

    def forward(self, x):
        return self.relu7(self.fc7(self.relu6(self.fc6(self.flatten(x)))))

    def backward(self, dout):
        dx = self.fc6.backward(self.relu6.backward(self.fc7.backward(self.relu7.backward(dout))))
        return self.flatten.backward(dx)


class FastRCNNPredictor(Module):
    """``cls_score`` (K logits) and ``bbox_pred`` (4K deltas) from the MLP features.

    Init as Detectron: N(0, 0.01) for the classifier and N(0, 0.001) for the box
    regressor, biases 0, so that at initialisation the class loss is ~ln K.
    """

    def __init__(self, in_features: int, num_classes: int, rng, dtype):
        super().__init__()
        self.cls_score = Linear(in_features, num_classes, rng=rng, dtype=dtype)
        self.bbox_pred = Linear(in_features, 4 * num_classes, rng=rng, dtype=dtype)
        for m, std in ((self.cls_score, 0.01), (self.bbox_pred, 0.001)):
            w = m.params["weight"]
            w[...] = rng.normal(0.0, std, w.shape, dtype=w.dtype)
            m.params["bias"][...] = 0

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)

    def backward(self, dclass_logits, dbox_regression):
        return self.bbox_pred.backward(dbox_regression) + self.cls_score.backward(dclass_logits)


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets, beta: float):
    """Classification + box regression loss of the sampled RoIs (tv ``fastrcnn_loss``).

    Rows labelled ``ignore_index`` (-100, filler of a batch with too few candidates)
    count for nothing, as in ``F.cross_entropy``; the box loss sums over the positive
    rows and divides by the number of counted rows, torchvision's ``labels.numel()``.

    Args:
        class_logits: (R, K); box_regression: (R, 4K); labels: (R,) int64 in [0, K) or
            -100; regression_targets: (R, 4) encoded targets of each RoI's matched gt.
    Returns:
        (loss_classifier, loss_box_reg, dclass_logits (R, K), dbox_regression (R, 4K)).
    """
    xp = get_xp(class_logits)
    r = class_logits.shape[0]
    loss_cls, dclass_logits = softmax_cross_entropy(class_logits, labels)
    num_counted = (labels >= 0).sum()
    loss_cls = xp.where(num_counted > 0, loss_cls, 0)  # no row at all: 0, not 0/0
    positive = labels > 0
    counted = xp.maximum(num_counted, 1).astype(class_logits.dtype)
    rows = xp.arange(r)
    channel = xp.maximum(labels, 0)  # each row's own class (background rows: unused)
    deltas = box_regression.reshape(r, -1, 4)[rows, channel]  # (R, K, 4) -> (R, 4)
    # the positives only: elsewhere the prediction is replaced by its target (loss 0)
    loss_box, dsel = smooth_l1(xp.where(positive[:, None], deltas, regression_targets),
                               regression_targets, beta)
    ddeltas = xp.zeros((r, box_regression.shape[1] // 4, 4), dtype=box_regression.dtype)
    ddeltas[rows, channel] = dsel / counted  # one (row, class) pair per row: no repeats
    return loss_cls, loss_box / counted, dclass_logits, ddeltas.reshape(r, -1)


__all__ = ["TwoMLPHead", "FastRCNNPredictor", "fastrcnn_loss"]
