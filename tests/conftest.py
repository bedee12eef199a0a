"""Shared fixtures: ``xp`` runs a test on NumPy, on the strict CPU stand-in for CuPy
(``cpupy``), and on CuPy when a GPU is present."""

import numpy as np
import pytest

from npmaskrcnn.backend import cupy_available, get_backend, set_backend, xp_for

BACKEND_PARAMS = ["numpy", "cpupy"] + (["cupy"] if cupy_available() else [])


@pytest.fixture(autouse=True)
def default_backend():
    """Every test starts on the NumPy default backend, whatever NPMASKRCNN_BACKEND says:
    tests without the ``xp`` fixture build their modules and inputs with NumPy."""
    previous = get_backend()
    set_backend("numpy")
    yield
    set_backend(previous)


@pytest.fixture(params=BACKEND_PARAMS)
def xp(request, default_backend):
    """The array module under test: numpy and the cpupy stand-in always, cupy when a CUDA
    device is visible. It is also the default backend during the test, so modules built in
    it hold parameters of the same kind as the test's inputs."""
    set_backend(request.param)
    return xp_for(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


