"""Shared fixtures: ``xp`` runs a test on NumPy, on the strict CPU stand-in for CuPy
(``cpupy``), and on CuPy when a GPU is present. Tests that compare with PyTorch skip when it
is not installed, all under one summary line that says what to install."""

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




TORCH_SKIP = ("PyTorch/torchvision not installed: the comparisons with them run after "
              "pip install torch==2.14.1 torchvision==0.29.1")


def torch_skip_reason(longrepr):
    """A skip's ``(path, line, reason)`` with ``importorskip("torch...")``'s reason replaced
    by :data:`TORCH_SKIP` at one place, so that pytest folds all of them into one summary
    line; other skips are returned unchanged."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        if "could not import 'torch" in reason or "No module named 'torch" in reason:
            return (__file__, None, f"Skipped: {TORCH_SKIP}")
    return longrepr


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped:
        report.longrepr = torch_skip_reason(report.longrepr)
    return report
