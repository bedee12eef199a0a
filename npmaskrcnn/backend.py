"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU, cpupy to check the GPU path.

This is the only module of npmaskrcnn that imports CuPy. Every other function finds
its array module from its inputs::

    xp = get_xp(x)          # numpy, cupy or cpupy, whichever module x belongs to
    y = xp.maximum(x, 0)

and so runs unchanged on all three. ``cpupy`` (``npmaskrcnn/cpupy/``) is a strict CPU
stand-in for CuPy: NumPy underneath, but it refuses host/device mixing as CuPy does and
counts kernel launches and host syncs, so a machine without a GPU still keeps the GPU
path honest. The few operations whose spelling differs between the libraries live here:

- ``scatter_add``: ``numpy.add.at`` vs ``cupyx.scatter_add``;
- ``asnumpy``: a device-to-host copy (a no-op for NumPy arrays);
- ``to_backend``: a host-to-device copy;
- ``fused``: one kernel for an elementwise expression (``cupy.fuse``) where each
  operator would otherwise launch its own;
- ``Generator``: random draws made on the host with NumPy's PCG64 and then moved to
  the device, so a seed gives the *same numbers* on both backends (CuPy's own
  generator would give different ones).

The default backend is read once from the environment variable
``NPMASKRCNN_BACKEND`` (``numpy``, ``cupy`` or ``cpupy``) and can be changed with
``set_backend``; the command line's ``--backend`` calls it.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any

import numpy as np

from . import cpupy

BACKENDS = ("numpy", "cupy", "cpupy")
_backend: str | None = None


class BackendError(RuntimeError):
    """The requested backend cannot be used (e.g. CuPy is not installed, or no GPU)."""


def _import_cupy():
    try:
        import cupy  # the one place CuPy is imported
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise BackendError(
            "backend 'cupy' was requested but CuPy is not installed: "
            "pip install 'npmaskrcnn[gpu]' (cupy-cuda12x) on a machine with an NVIDIA GPU"
        ) from err
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports *and* at least one CUDA device is visible."""
    try:
        cupy = _import_cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_backend() -> str:
    """The name of the default backend: ``NPMASKRCNN_BACKEND`` or ``'numpy'``."""
    global _backend
    if _backend is None:
        set_backend(os.environ.get("NPMASKRCNN_BACKEND", "numpy"))
    return _backend  # type: ignore[return-value]


def set_backend(name: str) -> None:
    """Choose the default backend (``'numpy'``, ``'cupy'`` or ``'cpupy'``) for new arrays."""
    global _backend
    name = str(name).lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of {BACKENDS}")
    if name == "cupy" and not cupy_available():
        _import_cupy()  # raises the install message when CuPy is missing
        raise BackendError("backend 'cupy' was requested but CuPy sees no CUDA device")
    _backend = name


def xp_for(name: str | None = None):
    """The array module of backend ``name`` (the default backend when None)."""
    name = get_backend() if name is None else name
    if name == "numpy":
        return np
    if name == "cupy":
        return _import_cupy()
    if name == "cpupy":
        return cpupy
    raise BackendError(f"unknown backend {name!r}: choose one of {BACKENDS}")


def on_device(xp) -> bool:
    """The one backend choice of the fast engines: batch everything (True) or loop (False).

    A CPU is fastest when each piece of work stays in its cache: the fast engines then
    loop over small blocks (one RoI, a few MiB of convolution columns, 256 boxes of NMS),
    each a quick BLAS call or vector pass. On a GPU every array operation is a kernel
    launch costing microseconds however small, and every read of device data by the host
    waits for the whole queue: the same work then goes in as few large, batched
    operations, even at the price of padding or of a few values computed for nothing.
    True for CuPy and for cpupy, its stand-in, so that cpupy counts the GPU's launches.
    """
    return xp is not np


class fused:
    """Kernel fusion: an elementwise function run as *one* kernel on a GPU.

    On a GPU every operator of ``rstd * (g - m1 - xhat * m2)`` is a kernel launch that
    reads its inputs from memory and writes a full-size temporary back: four launches and
    three temporaries for one line. ``cupy.fuse`` traces the Python function once per
    argument types and compiles a single elementwise kernel from it, so the line costs
    one launch and no temporary. NumPy has no such thing, and the function simply runs
    as written, which keeps it the readable reference; ``cpupy`` counts it as one op.

    Decorate a function ``fn(xp, *args)`` that uses only arithmetic, comparisons and
    ``xp``'s elementwise ufuncs (``xp.maximum``, ``xp.where``, ``xp.exp``, ``astype``) on
    arrays that broadcast against each other: no reduction, indexing or reshape (cpupy
    refuses them inside, and an output not of the arguments' broadcast shape). It is
    called without ``xp``: ``y = f(a, b)``.
    """

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._kernels: dict = {}  # array module -> its fused function

    def __call__(self, *args):
        __tracebackhide__ = True  # cpupy's trace names the caller's line, not this one
        xp = get_xp(*args)
        if xp is np:
            return self.fn(np, *args)
        kernel = self._kernels.get(xp)
        if kernel is None:  # cpupy's fuse runs the function on the arrays' NumPy data
            inner = np if xp is cpupy else xp
            kernel = xp.fuse(kernel_name=self.__name__)(functools.partial(self.fn, inner))
            self._kernels[xp] = kernel
        if xp is cpupy:  # its refusals are the caller's errors: no fallback for them
            return kernel(*args)
        try:
            return kernel(*args)
        except Exception as err:  # pragma: no cover - needs a GPU: never lose the step
            warnings.warn(f"cupy.fuse could not compile {self.__name__} ({err}); it runs "
                          "unfused from now on", RuntimeWarning, stacklevel=2)
            self._kernels[xp] = functools.partial(self.fn, xp)
            return self.fn(xp, *args)


def backend_name(xp_or_array: Any) -> str:
    """``"numpy"``, ``"cupy"`` or ``"cpupy"``: the backend of an array module or array."""
    modules = (np, cpupy, sys.modules.get("cupy"))
    xp = xp_or_array if any(xp_or_array is m for m in modules) else get_xp(xp_or_array)
    return "numpy" if xp is np else "cpupy" if xp is cpupy else "cupy"


def is_cupy_array(x: Any) -> bool:
    """True for a ``cupy.ndarray``; never imports CuPy to find out."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def is_device_array(x: Any) -> bool:
    """True for an array of a device backend: ``cupy.ndarray`` or ``cpupy.ndarray``."""
    return type(x) is cpupy.ndarray or is_cupy_array(x)


def get_xp(*arrays: Any):
    """The array module (numpy, cupy or cpupy) that the given arrays belong to.

    Non-array arguments (None, Python scalars) are ignored; with no device array
    among the arguments the answer is NumPy.
    """
    for a in arrays:
        if type(a) is np.ndarray:
            continue
        if type(a) is cpupy.ndarray:
            return cpupy
        if is_cupy_array(a):
            return sys.modules["cupy"]
    return np


def asnumpy(x: Any) -> np.ndarray:
    """A NumPy copy of ``x`` on the host (no copy when it already is NumPy)."""
    __tracebackhide__ = True  # cpupy's trace names the caller's line (the sync is theirs)
    if is_device_array(x):
        return x.get()
    return np.asarray(x)


def to_backend(x: Any, backend: str | None = None, dtype=None):
    """``x`` as an array of ``backend`` (default: the default backend)."""
    __tracebackhide__ = True  # cpupy's trace names the caller's line
    xp = xp_for(backend)
    if xp is np:
        return np.asarray(asnumpy(x), dtype=dtype)
    if is_device_array(x) and get_xp(x) is not xp:
        x = asnumpy(x)  # from one device backend to another: through the host
    return xp.asarray(x, dtype=dtype)


def scatter_add(target, indices, values) -> None:
    """``target[indices] += values`` with repeated indices accumulated, in place.

    NumPy spells this ``np.add.at``; CuPy spells it ``cupyx.scatter_add``. Plain
    ``target[indices] += values`` would keep only one of several writes to the same
    element, which is wrong for every backward pass that scatters gradients.
    """
    __tracebackhide__ = True  # cpupy's trace names the caller's line
    if type(target) is cpupy.ndarray:
        cpupy.scatter_add(target, indices, values)
    elif is_cupy_array(target):
        import cupyx  # noqa: PLC0415 - only reachable with CuPy arrays

        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)


class Generator:
    """A seeded random generator that gives the same draws on NumPy and CuPy.

    Draws are made on the host with ``numpy.random.Generator(PCG64(seed))`` and then
    moved to the backend, so a training run on the GPU sees exactly the numbers
    that the CPU run sees. The state can be saved and restored (checkpoints).
    """

    def __init__(self, seed: int | None = 0, backend: str | None = None):
        self.seed = seed
        self.backend = backend
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def _out(self, a, dtype=None):
        return to_backend(a, self.backend, dtype=dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=np.float32):
        return self._out(self._rng.normal(loc, scale, size), dtype)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float32):
        return self._out(self._rng.uniform(low, high, size), dtype)

    def integers(self, low, high=None, size=None):
        return self._out(self._rng.integers(low, high, size), np.int64)

    def permutation(self, n: int):
        """A random permutation of ``range(n)`` as an int64 array on the backend."""
        return self._out(self._rng.permutation(n), np.int64)

    def spawn_seed(self) -> int:
        """A fresh integer seed drawn from this generator (for child generators)."""
        return int(self._rng.integers(0, 2**31 - 1))

    @property
    def host(self) -> np.random.Generator:
        """The underlying NumPy generator (host-only code: data loading, plotting)."""
        return self._rng

    def get_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state
