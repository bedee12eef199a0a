import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy, backend_name
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers import im2col_fast as im2col_module
from npmaskrcnn.layers.conv import conv2d_backward, conv2d_forward
from npmaskrcnn.layers.conv_transpose import (
    ConvTranspose2d,
    conv_transpose2d_backward,
    conv_transpose2d_backward_naive,
    conv_transpose2d_forward,
    conv_transpose2d_naive,
)


def _inputs(xp, x_shape, w_shape, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal(x_shape))
    w = xp.asarray(rng.standard_normal(w_shape))
    b = xp.asarray(rng.standard_normal(w_shape[1])) if bias else None
    return x, w, b


def test_hand_computed_tiling(xp):
    # 2x2 kernel, stride 2 (the mask head's upsampling): pixel (h, w) writes x[h, w] * w
    # onto output block (2h:2h+2, 2w:2w+2), and the blocks do not overlap.
    x = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = xp.asarray([[[[1.0, 10.0], [100.0, 1000.0]]]])
    b = xp.asarray([0.5])
    out, cache = conv_transpose2d_forward(x, w, b, stride=2)
    expected = np.array(
        [[1, 10, 2, 20], [100, 1000, 200, 2000], [3, 30, 4, 40], [300, 3000, 400, 4000]],
        dtype=np.float64,
    )
    np.testing.assert_allclose(asnumpy(out)[0, 0], expected + 0.5)
    dx, dw, db = conv_transpose2d_backward(xp.ones_like(out), cache)
    np.testing.assert_allclose(asnumpy(dx)[0, 0], np.full((2, 2), 1111.0))  # sum of w
    np.testing.assert_allclose(asnumpy(dw)[0, 0], np.full((2, 2), 10.0))  # sum of x
    np.testing.assert_allclose(asnumpy(db), [16.0])


def test_hand_computed_overlap_and_crop(xp):
    # x = [1 2 3], kernel [1 1 1], stride 1: the uncropped output is
    # [1, 1+2, 1+2+3, 2+3, 3]; padding (0, 1) crops one column each side.
    x = xp.asarray([[[[1.0, 2.0, 3.0]]]])
    w = xp.ones((1, 1, 1, 3))
    out, _ = conv_transpose2d_forward(x, w, None, stride=1, padding=(0, 1))
    np.testing.assert_allclose(asnumpy(out)[0, 0, 0], [3.0, 6.0, 5.0])


# (x shape, w shape (C_in, C_out, KH, KW), stride, padding)
CONFIGS = [
    ((2, 3, 3, 4), (3, 2, 2, 2), 2, 0),  # the mask head: 2x2/2, no overlap (fast path)
    ((2, 3, 3, 3), (3, 2, 4, 4), 2, 1),  # the keypoint head: 4x4/2 pad 1 (col2im)
    ((1, 2, 3, 4), (2, 3, 3, 2), (1, 2), (1, 0)),  # non-square, overlapping
    ((2, 2, 3, 3), (2, 2, 1, 1), 1, 0),  # 1x1
    ((1, 2, 2, 3), (2, 3, 3, 3), 3, 0),  # kernel = stride 3 (fast path)
    ((1, 2, 3, 3), (2, 2, 2, 2), 2, 1),  # kernel = stride but padded: col2im with crop
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_loops(xp, x_shape, w_shape, stride, padding, bias):
    x, w, b = _inputs(xp, x_shape, w_shape, bias)
    out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
    assert rel_error(out, conv_transpose2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    grads = conv_transpose2d_backward(dout, cache)
    expected = conv_transpose2d_backward_naive(dout, x, w, b, stride, padding)
    for g, e in zip(grads, expected):
        if e is None:
            assert g is None
            continue
        assert g.shape == e.shape
        assert rel_error(g, e) < 1e-10


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
def test_gradients(xp, x_shape, w_shape, stride, padding):
    for seed in range(3):
        x, w, b = _inputs(xp, x_shape, w_shape, seed=seed)
        errors = check_layer(
            conv_transpose2d_forward,
            conv_transpose2d_backward,
            [x, w, b],
            seed=seed,
            stride=stride,
            padding=padding,
        )
        print(f"conv_transpose2d {x_shape} {w_shape} s={stride} p={padding} seed={seed}: {errors}")
        assert max(errors) < 1e-6


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_random_geometry(n, c_in, c_out, hw, kernel, stride, padding, seed):
    x_shape, w_shape = (n, c_in, *hw), (c_in, c_out, *kernel)
    oh, ow = ((s - 1) * st_ - 2 * p + k for s, st_, p, k in zip(hw, stride, padding, kernel))
    assume(oh >= 1 and ow >= 1)
    x, w, b = _inputs(np, x_shape, w_shape, seed=seed)
    out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
    assert out.shape == (n, c_out, oh, ow)
    assert rel_error(out, conv_transpose2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    expected = conv_transpose2d_backward_naive(dout, x, w, b, stride, padding)
    for g, e in zip(conv_transpose2d_backward(dout, cache), expected):
        assert rel_error(g, e) < 1e-10
    errors = check_layer(conv_transpose2d_forward, conv_transpose2d_backward, [x, w, b],
                         seed=seed, stride=stride, padding=padding, max_full=60, num_checks=10)
    assert max(errors) < 1e-6, errors


@settings(max_examples=20, deadline=None)
@given(
    hw=st.tuples(st.integers(3, 7), st.integers(3, 7)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_is_the_input_gradient_of_conv2d(hw, kernel, stride, padding, seed):
    # conv_transpose2d(y, w) = d/dx <conv2d(x, w), y>: the adjoint of conv2d with the same
    # kernel, stride and padding, whenever the conv's windows cover the input exactly.
    h, w_ = hw
    # Floor division leaving pixels unread would break the shape round trip.
    assume(all((s + 2 * p - k) % st_ == 0 for s, p, k, st_ in zip(hw, padding, kernel, stride)))
    assume(h + 2 * padding[0] >= kernel[0] and w_ + 2 * padding[1] >= kernel[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w_))
    w = rng.standard_normal((4, 3, *kernel))  # conv2d (F=4, C=3); conv_transpose (C_in=4)
    out, cache = conv2d_forward(x, w, None, stride, padding)
    y = rng.standard_normal(out.shape)
    dx, _, _ = conv2d_backward(y, cache)
    up, _ = conv_transpose2d_forward(y, w, None, stride, padding)
    assert up.shape == x.shape
    assert rel_error(up, dx) < 1e-10


@pytest.mark.parametrize("chunk", [1, 150, 600, im2col_module.CHUNK_ELEMENTS])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (4, 2, 1)])
def test_chunking_does_not_change_results(xp, monkeypatch, chunk, kernel, stride, padding):
    # 4 images of 9 pixels; C_out*KH*KW = 8 (2x2) or 32 (4x4) column rows. 1 -> one
    # image per chunk; 150 -> two (2x2) or one (4x4); 600 -> four or two; default -> four.
    monkeypatch.setattr(im2col_module, "CHUNK_ELEMENTS", chunk)
    x, w, b = _inputs(xp, (4, 3, 3, 3), (3, 2, kernel, kernel))
    out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
    assert rel_error(out, conv_transpose2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    expected = conv_transpose2d_backward_naive(dout, x, w, b, stride, padding)
    for g, e in zip(conv_transpose2d_backward(dout, cache), expected):
        assert rel_error(g, e) < 1e-10


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (4, 2, 1)])
def test_non_contiguous_inputs(xp, kernel, stride, padding, same_on_non_contiguous):
    same_on_non_contiguous(conv_transpose2d_forward, conv_transpose2d_backward, (2, 3, 3, 4),
                           (3, 2, kernel, kernel), stride, padding, xp)


def test_output_sizes_of_the_heads(xp):
    x = xp.zeros((3, 8, 14, 14), dtype=xp.float32)
    mask, _ = conv_transpose2d_forward(x, xp.zeros((8, 5, 2, 2), xp.float32), None, 2, 0)
    keypoint, _ = conv_transpose2d_forward(x, xp.zeros((8, 5, 4, 4), xp.float32), None, 2, 1)
    assert mask.shape == keypoint.shape == (3, 5, 28, 28)
    assert mask.dtype == keypoint.dtype == xp.float32


def test_empty_batch(xp):
    for w_shape, stride, padding in [((3, 4, 2, 2), 2, 0), ((3, 4, 4, 4), 2, 1)]:
        x, w, b = _inputs(xp, (0, 3, 5, 5), w_shape)
        out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
        assert out.shape == (0, 4, 10, 10)
        dx, dw, db = conv_transpose2d_backward(out, cache)
        assert dx.shape == x.shape and dw.shape == w.shape
        assert float(abs(dw).sum()) == 0.0 and float(abs(db).sum()) == 0.0


def test_float32_stays_float32(xp):
    x, w2, b = (a.astype(xp.float32) for a in _inputs(xp, (2, 3, 4, 4), (3, 2, 2, 2)))
    w4 = _inputs(xp, (1,), (3, 2, 4, 4))[1].astype(xp.float32)
    for w, stride, padding in [(w2, 2, 0), (w4, 2, 1)]:  # fast path, col2im path
        out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
        assert out.dtype == xp.float32
        assert all(g.dtype == xp.float32 for g in conv_transpose2d_backward(out, cache))


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
def test_torch_parity(x_shape, w_shape, stride, padding):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(np, x_shape, w_shape, seed=7)
    out, cache = conv_transpose2d_forward(x, w, b, stride, padding)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride, padding)
    assert rel_error(out, t_out.detach().numpy()) < 1e-12
    dout = np.random.default_rng(8).standard_normal(out.shape)
    t_out.backward(torch.tensor(dout))
    for g, t in zip(conv_transpose2d_backward(dout, cache), (tx, tw, tb)):
        assert rel_error(g, t.grad.numpy()) < 1e-12


def test_errors(xp):
    x, w, b = _inputs(xp, (1, 3, 1, 1), (3, 2, 1, 1))
    with pytest.raises(ValueError, match="too small"):
        conv_transpose2d_forward(x, w, b, padding=1)
    with pytest.raises(ValueError, match="channels"):
        conv_transpose2d_forward(x, w[:2], b)


def test_module_parameters():
    deconv = ConvTranspose2d(6, 4, 2, stride=2)
    assert list(deconv.params) == ["weight", "bias"]
    assert deconv.params["weight"].shape == (6, 4, 2, 2)  # (C_in, C_out, KH, KW)
    assert deconv.params["bias"].shape == (4,)
    bound = 1 / np.sqrt(4 * 2 * 2)  # PyTorch's fan_in for this layout: weight.size(1)*KH*KW
    for p in deconv.params.values():
        assert float(abs(p).max()) <= bound
    assert float(deconv.params["weight"].std()) > bound / 3
    assert list(ConvTranspose2d(6, 4, 2, bias=False).params) == ["weight"]


def test_module_accumulates(xp):
    deconv = ConvTranspose2d(3, 2, 4, stride=2, padding=1).to(
        dtype=np.float64, backend=backend_name(xp)
    )
    rng = np.random.default_rng(0)
    x1, x2 = (xp.asarray(rng.standard_normal((2, 3, 3, 3))) for _ in range(2))
    w, b = deconv.params["weight"], deconv.params["bias"]
    out1, out2 = deconv(x1), deconv(x2)
    ref1, c1 = conv_transpose2d_forward(x1, w, b, 2, 1)
    ref2, c2 = conv_transpose2d_forward(x2, w, b, 2, 1)
    assert rel_error(out1, ref1) < 1e-12 and rel_error(out2, ref2) < 1e-12
    d1, d2 = (xp.asarray(rng.standard_normal(out1.shape)) for _ in range(2))
    dx2, dx1 = deconv.backward(d2), deconv.backward(d1)
    g1, g2 = conv_transpose2d_backward(d1, c1), conv_transpose2d_backward(d2, c2)
    assert rel_error(dx1, g1[0]) < 1e-12 and rel_error(dx2, g2[0]) < 1e-12
    assert rel_error(deconv.grads["weight"], g1[1] + g2[1]) < 1e-12
    assert rel_error(deconv.grads["bias"], g1[2] + g2[2]) < 1e-12


def test_module_torch_parity():
    torch = pytest.importorskip("torch")
    deconv = ConvTranspose2d(3, 4, 4, stride=2, padding=1, dtype=np.float64)
    t_deconv = torch.nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1).double()
    t_deconv.load_state_dict({k: torch.tensor(v) for k, v in deconv.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    assert rel_error(deconv(x), t_deconv(torch.tensor(x)).detach().numpy()) < 1e-12
