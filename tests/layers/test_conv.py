import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy, backend_name
from npmaskrcnn.gradcheck import check_layer, rel_error
from npmaskrcnn.layers import conv_fast
from npmaskrcnn.layers import im2col_fast as im2col_module
from npmaskrcnn.layers.conv import (
    Conv2d,
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_im2col_backward,
    conv2d_im2col_forward,
    conv2d_naive,
)


def _inputs(xp, x_shape, w_shape, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal(x_shape))
    w = xp.asarray(rng.standard_normal(w_shape))
    b = xp.asarray(rng.standard_normal(w_shape[0])) if bias else None
    return x, w, b


def test_hand_computed(xp):
    # x = [[1 2 3], [4 5 6], [7 8 9]], w = [[1 2], [3 4]], stride 2, padding 1, b = 0.5.
    # Padded x has a zero border; the four windows (top-left corners (0,0), (0,2),
    # (2,0), (2,2)) are [[0 0],[0 1]], [[0 0],[2 3]], [[0 4],[0 7]], [[5 6],[8 9]].
    x = xp.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = xp.asarray([0.5])
    out, cache = conv2d_forward(x, w, b, stride=2, padding=1)
    expected = np.array([[4.0, 18.0], [36.0, 77.0]]) + 0.5  # 4*1; 3*2+4*3; 2*4+4*7; 5+12+24+36
    np.testing.assert_allclose(asnumpy(out)[0, 0], expected)
    dx, dw, db = conv2d_backward(xp.ones_like(out), cache)
    # dw = sum of the four windows; each pixel is in exactly one window (stride = kernel),
    # so dx is the weight it met there; db counts the 4 output pixels.
    np.testing.assert_allclose(asnumpy(dw)[0, 0], [[5.0, 10.0], [10.0, 20.0]])
    np.testing.assert_allclose(asnumpy(dx)[0, 0], [[4, 3, 4], [2, 1, 2], [4, 3, 4]])
    np.testing.assert_allclose(asnumpy(db), [4.0])


# (x shape, w shape, stride, padding): every code path and shape the package uses.
CONFIGS = [
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1),  # stride 1, backward from dout columns
    ((2, 3, 7, 6), (4, 3, 3, 3), 2, 1),  # stride 2, backward by col2im
    ((2, 4, 5, 4), (3, 4, 1, 1), 1, 0),  # 1x1: plain matrix products
    ((1, 4, 5, 4), (3, 4, 1, 1), 1, 0),  # 1x1 on one image
    ((2, 4, 5, 5), (3, 4, 1, 1), 2, 0),  # 1x1 stride 2 (ResNet downsample)
    ((2, 2, 6, 7), (3, 2, 2, 3), (1, 2), (1, 0)),  # non-square kernel, stride, padding
    ((1, 2, 5, 5), (3, 2, 3, 3), 1, 1),  # F > C: stride 1 through col2im
    ((2, 3, 9, 9), (2, 3, 7, 7), 2, 3),  # the ResNet stem's 7x7/2 pad 3
    ((1, 2, 4, 4), (2, 2, 2, 2), 1, 0),  # even kernel, stride 1
    ((1, 2, 5, 4), (2, 2, 5, 5), 1, 2),  # 5x5 'same': two wrapped columns per side
    ((2, 2, 4, 5), (3, 2, 3, 3), 1, (0, 1)),  # same width, no row padding
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_loops(xp, x_shape, w_shape, stride, padding, bias):
    x, w, b = _inputs(xp, x_shape, w_shape, bias)
    out, cache = conv2d_forward(x, w, b, stride, padding)
    assert rel_error(out, conv2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    grads = conv2d_backward(dout, cache)
    expected = conv2d_backward_naive(dout, x, w, b, stride, padding)
    for g, e in zip(grads, expected):
        if b is None and e is None:
            assert g is None
            continue
        assert g.shape == e.shape
        assert rel_error(g, e) < 1e-10


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
def test_gradients(xp, x_shape, w_shape, stride, padding):
    for seed in range(3):
        x, w, b = _inputs(xp, x_shape, w_shape, seed=seed)
        errors = check_layer(
            conv2d_forward, conv2d_backward, [x, w, b], seed=seed, stride=stride, padding=padding
        )
        print(f"conv2d {x_shape} {w_shape} s={stride} p={padding} seed={seed}: {errors}")
        assert max(errors) < 1e-6


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    f=st.integers(1, 3),
    hw=st.tuples(st.integers(3, 6), st.integers(3, 6)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    seed=st.integers(0, 2**16),
)
def test_random_geometry(n, c, f, hw, kernel, stride, padding, seed):
    x, w, b = _inputs(np, (n, c, *hw), (f, c, *kernel), seed=seed)
    out, cache = conv2d_forward(x, w, b, stride, padding)
    assert rel_error(out, conv2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    for g, e in zip(conv2d_backward(dout, cache), conv2d_backward_naive(dout, x, w, b, stride,
                                                                         padding)):
        assert rel_error(g, e) < 1e-10
    errors = check_layer(conv2d_forward, conv2d_backward, [x, w, b], seed=seed,
                         stride=stride, padding=padding, max_full=60, num_checks=10)
    assert max(errors) < 1e-6, errors


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
def test_plain_im2col_version_matches_loops(xp, x_shape, w_shape, stride, padding):
    """conv.py's teaching version, ``W @ im2col(x)`` and col2im, is the loops' conv."""
    x, w, b = _inputs(xp, x_shape, w_shape)
    out, cache = conv2d_im2col_forward(x, w, b, stride, padding)
    assert rel_error(out, conv2d_naive(x, w, b, stride, padding)) < 1e-10
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    for g, e in zip(conv2d_im2col_backward(dout, cache),
                    conv2d_backward_naive(dout, x, w, b, stride, padding)):
        assert rel_error(g, e) < 1e-10


# stem 7x7/2 pad 3, strided 3x3, 1x1 strided and not, 3x3 pad 1 with an odd size
ENGINE_CASES = [((2, 3, 13, 11), (4, 3, 7, 7), 2, 3), ((2, 3, 9, 8), (5, 3, 3, 3), 2, 1),
                ((2, 4, 7, 9), (3, 4, 1, 1), 2, 0), ((2, 4, 5, 6), (3, 4, 1, 1), 1, 0),
                ((1, 2, 7, 5), (3, 2, 3, 3), 1, 1), ((1, 2, 8, 8), (3, 2, 3, 3), 3, 0)]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", ENGINE_CASES)
def test_gpu_engine_matches_cpu_engine(monkeypatch, x_shape, w_shape, stride, padding):
    """The GPU engine (batched GEMMs; dx as a convolution of the dilated dout), run on
    NumPy, computes the CPU engine's numbers; ``input_grad=False`` skips dx only."""
    x, w, b = _inputs(np, x_shape, w_shape)
    out, cache = conv2d_forward(x, w, b, stride, padding)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    grads = conv2d_backward(dout, cache)
    monkeypatch.setattr(conv_fast, "on_device", lambda xp: True)
    out_g, cache_g = conv2d_forward(x, w, b, stride, padding)
    assert rel_error(out_g, out) < 1e-12
    for g, e in zip(conv2d_backward(dout, cache_g), grads):
        assert rel_error(g, e) < 1e-12
    dx, dw, db = conv2d_backward(dout, cache_g, input_grad=False)
    assert dx is None and rel_error(dw, grads[1]) < 1e-12 and rel_error(db, grads[2]) < 1e-12


# Column budgets (CHUNK_ELEMENTS) against x (3, 2, 5, 6) and 3x3 kernels (18 column rows):
# stride 1 pad 1 has 30 columns per image (5 rows of 6): 1 -> one-row bands, 216 -> bands
# of 2, 2 and 1 rows, 1080 -> two images then one; stride 2 pad 1 has 9 (3 rows of 3).
@pytest.mark.parametrize("chunk", [1, 108, 216, 432, 1080, im2col_module.CHUNK_ELEMENTS])
@pytest.mark.parametrize("stride", [1, 2])
def test_chunking_does_not_change_results(xp, monkeypatch, chunk, stride):
    monkeypatch.setattr(im2col_module, "CHUNK_ELEMENTS", chunk)
    _assert_matches_loops(xp, (3, 2, 5, 6), (4, 2, 3, 3), stride)


def _assert_matches_loops(xp, x_shape, w_shape, stride):
    """The forward and every gradient of a pad-1 conv equal the loop references'."""
    x, w, b = _inputs(xp, x_shape, w_shape)
    out, cache = conv2d_forward(x, w, b, stride, 1)
    assert rel_error(out, conv2d_naive(x, w, b, stride, 1)) < 1e-10
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    expected = conv2d_backward_naive(dout, x, w, b, stride, 1)
    for g, e in zip(conv2d_backward(dout, cache), expected):
        assert rel_error(g, e) < 1e-10


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (7, 2, 3), (1, 1, 0)])
def test_no_input_grad_skips_dx_and_keeps_dw(xp, kernel, stride, padding):
    """``input_grad=False`` (the stem: its input is the image): dx is None, dw and db are
    those of the full backward, on each path (same-width, general, pointwise)."""
    x, w, b = _inputs(xp, (2, 3, 9, 8), (4, 3, kernel, kernel))
    out, cache = conv2d_forward(x, w, b, stride, padding)
    dout = xp.asarray(np.random.default_rng(1).standard_normal(out.shape))
    dx, dw, db = conv2d_backward(dout, cache)
    none, dw2, db2 = conv2d_backward(dout, cache, input_grad=False)
    assert dx is not None and none is None
    assert rel_error(dw2, dw) < 1e-14 and rel_error(db2, db) < 1e-14


# SMALL_MAP decides between one GEMM per image (0) and one GEMM over a chunk's images
# followed by a transposing copy (10**6), for the forward and for dx: both are the loops'.
@pytest.mark.parametrize("small_map", [0, 10**6])
@pytest.mark.parametrize("stride", [1, 2])
def test_one_gemm_per_chunk_or_per_image_same_results(xp, monkeypatch, small_map, stride):
    monkeypatch.setattr(conv_fast, "SMALL_MAP", small_map)
    _assert_matches_loops(xp, (4, 3, 6, 5), (5, 3, 3, 3), stride)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)])
def test_non_contiguous_inputs(xp, kernel, stride, padding, same_on_non_contiguous):
    same_on_non_contiguous(conv2d_forward, conv2d_backward, (2, 3, 5, 6),
                           (4, 3, kernel, kernel), stride, padding, xp)


def test_output_size_floor_and_unused_pixels(xp):
    # H = 6, K = 3, stride 2, no padding: OH = 2, and row/column 5 is never read,
    # so its gradient is exactly zero.
    x, w, b = _inputs(xp, (1, 2, 6, 6), (3, 2, 3, 3))
    out, cache = conv2d_forward(x, w, b, stride=2)
    assert out.shape == (1, 3, 2, 2)
    dx, _, _ = conv2d_backward(xp.ones_like(out), cache)
    assert float(abs(dx[:, :, 5, :]).sum()) == 0.0 and float(abs(dx[:, :, :, 5]).sum()) == 0.0
    assert float(abs(dx[:, :, 4, :]).sum()) > 0.0


def test_empty_batch(xp):
    x, w, b = _inputs(xp, (0, 3, 5, 5), (4, 3, 3, 3))
    for stride, padding in [(1, 1), (2, 1), (1, 0)]:
        out, cache = conv2d_forward(x, w, b, stride, padding)
        assert out.shape[:2] == (0, 4)
        dx, dw, db = conv2d_backward(out, cache)
        assert dx.shape == x.shape and dw.shape == w.shape
        assert float(abs(dw).sum()) == 0.0 and float(abs(db).sum()) == 0.0
    out, cache = conv2d_forward(x[:, :, :, :], w[:, :, :1, :1], b)
    assert out.shape == (0, 4, 5, 5)


def test_errors(xp):
    x, w, b = _inputs(xp, (1, 3, 2, 2), (4, 3, 3, 3))
    with pytest.raises(ValueError, match="too small"):
        conv2d_forward(x, w, b)
    with pytest.raises(ValueError, match="channels"):
        conv2d_forward(x, w[:, :2], b, padding=1)


def test_float32_stays_float32(xp):
    x, w, b = (a.astype(xp.float32) for a in _inputs(xp, (2, 3, 6, 6), (4, 3, 3, 3)))
    for stride in (1, 2):
        out, cache = conv2d_forward(x, w, b, stride, 1)
        assert out.dtype == xp.float32
        assert all(g.dtype == xp.float32 for g in conv2d_backward(out, cache))


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONFIGS)
def test_torch_parity(x_shape, w_shape, stride, padding):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(np, x_shape, w_shape, seed=7)
    out, cache = conv2d_forward(x, w, b, stride, padding)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride, padding)
    assert rel_error(out, t_out.detach().numpy()) < 1e-12
    dout = np.random.default_rng(8).standard_normal(out.shape)
    t_out.backward(torch.tensor(dout))
    for g, t in zip(conv2d_backward(dout, cache), (tx, tw, tb)):
        assert rel_error(g, t.grad.numpy()) < 1e-12
    # float32 in, float32 out, agreeing to float32 precision
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    out32, _ = conv2d_forward(x32, w32, b32, stride, padding)
    t32 = torch.nn.functional.conv2d(*(torch.tensor(a) for a in (x32, w32, b32)), stride, padding)
    assert rel_error(out32, t32.numpy()) < 1e-5


def _module(xp, *args, **kwargs):
    return Conv2d(*args, **kwargs).to(dtype=np.float64, backend=backend_name(xp))


def test_module_parameters():
    conv = Conv2d(3, 8, (3, 2), stride=2, padding=1)
    assert list(conv.params) == ["weight", "bias"]
    assert conv.params["weight"].shape == (8, 3, 3, 2)
    assert conv.params["bias"].shape == (8,)
    assert conv.params["weight"].dtype == np.float32
    bound = 1 / np.sqrt(3 * 3 * 2)  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for p in conv.params.values():
        assert float(abs(p).max()) <= bound
    assert float(conv.params["weight"].std()) > bound / 3  # drawn, not zeros
    assert list(Conv2d(3, 8, 1, bias=False).params) == ["weight"]


def test_module_matches_functional_and_accumulates(xp):
    conv = _module(xp, 3, 4, 3, padding=1)
    rng = np.random.default_rng(0)
    x1, x2 = (xp.asarray(rng.standard_normal((2, 3, 5, 5))) for _ in range(2))
    w, b = conv.params["weight"], conv.params["bias"]
    out1, out2 = conv(x1), conv(x2)
    ref1, c1 = conv2d_forward(x1, w, b, 1, 1)
    ref2, c2 = conv2d_forward(x2, w, b, 1, 1)
    assert rel_error(out1, ref1) < 1e-12 and rel_error(out2, ref2) < 1e-12
    d1, d2 = xp.ones_like(out1), xp.asarray(rng.standard_normal(out2.shape))
    dx2 = conv.backward(d2)  # the cache stack: last forward first
    dx1 = conv.backward(d1)
    g1, g2 = conv2d_backward(d1, c1), conv2d_backward(d2, c2)
    assert rel_error(dx1, g1[0]) < 1e-12 and rel_error(dx2, g2[0]) < 1e-12
    assert rel_error(conv.grads["weight"], g1[1] + g2[1]) < 1e-12
    assert rel_error(conv.grads["bias"], g1[2] + g2[2]) < 1e-12
    with pytest.raises(RuntimeError):
        conv.backward(d1)


def test_module_torch_parity():
    torch = pytest.importorskip("torch")
    conv = Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dtype=np.float64)
    t_conv = torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0)).double()
    t_conv.load_state_dict({k: torch.tensor(v) for k, v in conv.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    assert rel_error(conv(x), t_conv(torch.tensor(x)).detach().numpy()) < 1e-12
