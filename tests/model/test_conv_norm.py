"""conv_norm: a FrozenBN folded into the convolution before it, in training too."""

import numpy as np
import pytest

from npmaskrcnn.backend import Generator
from npmaskrcnn.gradcheck import rel_error
from npmaskrcnn.layers.conv import Conv2d
from npmaskrcnn.layers.norm import FrozenBatchNorm2d
from npmaskrcnn.model.conv_norm import conv_norm, conv_norm_backward


def _pair(bias, seed):
    rng = np.random.default_rng(seed)
    conv = Conv2d(3, 5, 3, stride=2, padding=1, bias=bias, rng=Generator(seed),
                  dtype=np.float64)
    norm = FrozenBatchNorm2d(5, dtype=np.float64)
    for name, lo in (("weight", -2.0), ("bias", -1.0), ("running_mean", -1.0),
                     ("running_var", 0.2)):
        norm.buffers[name][...] = rng.uniform(lo, 2.0, 5)
    return conv, norm


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("input_grad", [True, False])
def test_folded_equals_the_two_layers_in_turn(bias, input_grad):
    """Output, dx and the conv's gradients of the folded pair equal conv then norm
    run as two layers (float64), and the norm keeps no cache."""
    conv, norm = _pair(bias, 0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8))
    dout = rng.standard_normal((2, 5, 5, 4))
    expected = norm(conv(x))
    dx_expected = conv.backward(norm.backward(dout), input_grad)
    grads_expected = {k: g.copy() for k, g in conv.grads.items()}
    conv.zero_grad()
    out = conv_norm(conv, norm, x)
    assert not norm._caches and len(conv._caches) == 1
    dx = conv_norm_backward(conv, norm, dout, input_grad)
    print("out", rel_error(out, expected), {k: rel_error(conv.grads[k], g)
                                            for k, g in grads_expected.items()})
    assert rel_error(out, expected) < 1e-13
    if input_grad:
        assert rel_error(dx, dx_expected) < 1e-13
    else:
        assert dx is None and dx_expected is None
    for k, g in grads_expected.items():
        assert rel_error(conv.grads[k], g) < 1e-13, k
    # the weight's gradient is the folded weight's scaled back: without the scale it fails
    scale = norm.affine()[0]
    assert rel_error(conv.grads["weight"] / scale.reshape(-1, 1, 1, 1),
                     grads_expected["weight"]) > 1e-2


def test_inference_keeps_nothing():
    conv, norm = _pair(False, 2)
    conv.eval(), norm.eval()
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6))
    out = conv_norm(conv, norm, x)
    assert not conv._caches and not norm._caches
    conv.train(), norm.train()
    assert rel_error(out, norm(conv(x))) < 1e-13
