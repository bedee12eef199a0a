import numpy as np

from npmaskrcnn.backend import Generator
from npmaskrcnn.gradcheck import numerical_gradient, rel_error
from npmaskrcnn.model.box_head import FastRCNNPredictor, TwoMLPHead, fastrcnn_loss


def test_fastrcnn_loss_by_hand_and_gradients():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3))
    deltas = rng.standard_normal((4, 12))
    labels = np.array([0, 2, 1, 0])
    targets = rng.standard_normal((4, 4))
    lc, lb, dc, db = fastrcnn_loss(logits, deltas, labels, targets, beta=1 / 9)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert np.isclose(float(lc), -logp[np.arange(4), labels].mean())
    d = deltas.reshape(4, 3, 4)
    diff = np.abs(np.stack([d[1, 2], d[2, 1]]) - targets[[1, 2]])
    sl1 = np.where(diff < 1 / 9, 0.5 * diff**2 * 9, diff - 0.5 / 9).sum()
    assert np.isclose(float(lb), sl1 / 4)
    # only the GT class's deltas of positives get gradient
    dbr = db.reshape(4, 3, 4)
    assert np.all(dbr[0] == 0) and np.all(dbr[3] == 0) and np.all(dbr[1, :2] == 0)
    for arr, grad, which in ((logits, dc, 0), (deltas, db, 1)):
        num = numerical_gradient(
            lambda which=which: float(fastrcnn_loss(logits, deltas, labels, targets,
                                                    1 / 9)[which]), arr)
        err = rel_error(num, grad)
        print("fastrcnn_loss rel error", err)
        assert err < 1e-7


def test_box_head_names_and_backward_shapes():
    rng = Generator(0, backend="numpy")
    head = TwoMLPHead(8, 7, 32, rng, np.float32)
    pred = FastRCNNPredictor(32, 5, rng, np.float32)
    assert list(head.parameters()) == ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"]
    assert pred.parameters()["bbox_pred.weight"].shape == (20, 32)
    x = np.random.default_rng(1).standard_normal((6, 8, 7, 7)).astype(np.float32)
    cls, box = pred(head(x))
    assert cls.shape == (6, 5) and box.shape == (6, 20)
    dx = head.backward(pred.backward(np.ones_like(cls), np.ones_like(box)))
    assert dx.shape == x.shape
