"""Shared fixtures: ``xp`` runs a test on NumPy, and on CuPy when a GPU is present."""

import numpy as np
import pytest

from npmaskrcnn.backend import cupy_available, xp_for

BACKEND_PARAMS = ["numpy"] + (["cupy"] if cupy_available() else [])


@pytest.fixture(params=BACKEND_PARAMS)
def xp(request):
    """The array module under test: numpy always, cupy when a CUDA device is visible."""
    return xp_for(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


