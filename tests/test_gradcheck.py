import numpy as np
import pytest

from npmaskrcnn.gradcheck import (
    check_layer,
    directional_check,
    numerical_gradient,
    rel_error,
    sparse_gradient_check,
)


def test_rel_error_basic():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))


def test_numerical_gradient_of_a_quadratic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    a = rng.standard_normal((3, 4))
    grad = numerical_gradient(lambda: float((a * x**2).sum()), x)
    err = rel_error(grad, 2 * a * x)
    print("quadratic rel error", err)
    assert err < 1e-8


def test_sparse_and_directional_detect_a_wrong_gradient():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(50)
    f = lambda: float(np.sin(x).sum())  # noqa: E731
    good, bad = np.cos(x), np.cos(x) * 1.1
    assert sparse_gradient_check(f, x, good) < 1e-8
    assert sparse_gradient_check(f, x, bad) > 1e-3
    assert directional_check(f, [x], [good]) < 1e-8
    assert directional_check(f, [x], [bad]) > 1e-3


def test_directional_check_restores_arrays():
    x = np.arange(5.0)
    before = x.copy()
    directional_check(lambda: float((x**2).sum()), [x], [2 * x])
    np.testing.assert_allclose(x, before, atol=1e-12)


def _scale_forward(x, w):
    return x * w, (x, w)


def _scale_backward(dout, cache):
    x, w = cache
    return dout * w, dout * x


def _broken_backward(dout, cache):
    x, w = cache
    return dout * w, dout * x * 2


def test_check_layer_passes_correct_and_fails_broken_backward():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    errs = check_layer(_scale_forward, _scale_backward, [x, w])
    print("check_layer errors", errs)
    assert max(errs) < 1e-8
    errs = check_layer(_scale_forward, _broken_backward, [x, w])
    assert errs[1] > 1e-2
