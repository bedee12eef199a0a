import numpy as np
import pytest

from npmaskrcnn import backend
from npmaskrcnn.backend import BackendError, Generator, asnumpy, get_xp, scatter_add


def test_get_xp_is_numpy_for_numpy_and_scalars():
    assert get_xp(np.zeros(2), None, 3.0) is np
    assert get_xp() is np


def test_scatter_add_accumulates_repeated_indices(xp):
    target = xp.zeros(4)
    scatter_add(target, xp.asarray([0, 2, 2, 2]), xp.asarray([1.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(asnumpy(target), [1.0, 0.0, 6.0, 0.0])


def test_scatter_add_with_index_tuple(xp):
    target = xp.zeros((2, 3))
    idx = (xp.asarray([0, 0, 1]), xp.asarray([1, 1, 2]))
    scatter_add(target, idx, xp.asarray([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(asnumpy(target), [[0, 3, 0], [0, 0, 5]])


def test_generator_is_seeded_and_restorable():
    a, b = Generator(7, backend="numpy"), Generator(7, backend="numpy")
    np.testing.assert_array_equal(a.normal(size=5), b.normal(size=5))
    state = a.get_state()
    first = a.uniform(size=3)
    a.set_state(state)
    np.testing.assert_array_equal(a.uniform(size=3), first)
    assert a.permutation(10).dtype == np.int64
    assert sorted(a.permutation(10).tolist()) == list(range(10))


def test_generator_dtype():
    assert Generator(0, backend="numpy").normal(size=3).dtype == np.float32
    assert Generator(0, backend="numpy").normal(size=3, dtype=np.float64).dtype == np.float64


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        backend.set_backend("tpu")


def test_cupy_without_gpu_is_a_clear_error(monkeypatch):
    if backend.cupy_available():
        pytest.skip("a GPU is present: this test is about machines without one")
    before = backend.get_backend()
    with pytest.raises(BackendError, match="cupy"):
        backend.set_backend("cupy")
    assert backend.get_backend() == before


def test_env_variable_chooses_default(monkeypatch):
    monkeypatch.setattr(backend, "_backend", None)
    monkeypatch.setenv("NPMASKRCNN_BACKEND", "numpy")
    assert backend.get_backend() == "numpy"
    assert backend.xp_for() is np


def test_to_backend_and_asnumpy_round_trip():
    x = [[1, 2], [3, 4]]
    y = backend.to_backend(x, "numpy", dtype=np.float32)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(asnumpy(y), np.array(x))
