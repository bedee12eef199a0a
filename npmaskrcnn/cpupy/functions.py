"""cpupy's functions: NumPy's, run on the data behind CuPy's rules, each call counted.

``function(name)`` wraps ``numpy.<name>`` once (cached): one op per call, plus what CuPy
adds (a sync when the output size depends on the data, a launch per axis for
``take_along_axis``, one per input for ``concatenate``). Creation functions
(``asarray``, ``array``, ``empty``) and ``scatter_add`` are written out.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .array import _call, _data_dependent, _index, _unwrap, ndarray
from .catalog import _PASSTHROUGH, _SPECIAL, FUNCTIONS, IN_PLACE, JOINING, PER_AXIS, SYNCING
from .counting import count as _count


def _join_launches(arrays) -> int:
    """Launches of ``cupy.concatenate`` (``_routines_manipulation._concatenate``)."""
    arrays = [a for a in arrays if type(a) is ndarray]
    if len(arrays) > 8 and len({a.dtype for a in arrays}) == 1:
        if sum(a.nbytes for a in arrays) < (2 << 20) * len(arrays):
            return 1
    return max(len(arrays), 1)


def _make(name):
    func = getattr(np, name)

    def wrapper(*args, **kwargs):
        r = _call(func, args, kwargs, _data_dependent(name, args, kwargs))
        if name in IN_PLACE:
            _count("ops")
        if name in PER_AXIS:
            _count("ops", args[0].ndim - 1)
        if name in JOINING:
            _count("ops", _join_launches(args[0]) - 1)
        return r

    wrapper.__name__ = name
    wrapper.__doc__ = f"``numpy.{name}`` on device arrays (counted)."
    if isinstance(func, np.ufunc):
        for method in ("reduce", "accumulate", "outer", "at"):
            setattr(wrapper, method, _make_method(func, method))
    return wrapper


def _make_method(ufunc, method):
    func = getattr(ufunc, method)

    def wrapper(*args, **kwargs):
        r = _call(func, args, kwargs)
        if method == "at":  # in place, returns None
            _count("ops")
        return r

    return wrapper


_cache: dict = {}


def function(name):
    """The counted ``cpupy.<name>``: a NumPy constant or dtype, or a wrapped function."""
    if name in _PASSTHROUGH:
        return getattr(np, name)
    if name in FUNCTIONS or name in SYNCING:
        if name not in _cache:
            _cache[name] = _make(name)
        return _cache[name]
    raise AttributeError(f"module 'cpupy' has no attribute {name!r} (CuPy has it? add it "
                         "to FUNCTIONS)")


def lookup(func):
    """Our implementation of the NumPy function ``func`` (``np.sum`` -> ``sum``), if any."""
    name = getattr(func, "__name__", "")
    module = getattr(func, "__module__", "") or ""
    if module.startswith("numpy.linalg"):
        return getattr(linalg, name, None)
    if name in FUNCTIONS or name in SYNCING or name in _SPECIAL:
        return globals().get(name) or function(name)
    return None


def asarray(a, dtype=None, order=None):
    """A device array from host data (one h2d copy) or a device array (no copy)."""
    if type(a) is ndarray:
        if dtype is None or np.dtype(dtype) == a._a.dtype:
            return a
        return a.astype(dtype)
    host = np.asarray(_host_data(a), dtype=dtype, order=order)
    _count("h2d")
    return ndarray(np.array(host, copy=True))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    """``cupy.array``: always a new device array (a copy)."""
    if type(a) is ndarray:
        r = np.array(a._a, dtype=dtype, copy=True, order=order, ndmin=ndmin)
        _count("ops")
        return ndarray(r)
    host = np.array(_host_data(a), dtype=dtype, copy=True, order=order, ndmin=ndmin)
    _count("h2d")
    return ndarray(host)


asanyarray = asarray


def _host_data(a):
    """Host data for ``asarray``: nested lists may hold device 0-d arrays (read back)."""
    if type(a) in (list, tuple):
        return [_host_data(v) for v in a]
    if type(a) is ndarray:
        return a.get()
    return a


def empty(shape, dtype=float, order="C"):
    """Uninitialised memory: an allocation, no kernel."""
    return ndarray(np.empty(shape, dtype=dtype, order=order))


def empty_like(a, dtype=None, order="K", shape=None):
    return ndarray(np.empty_like(_unwrap(a), dtype=dtype, order=order, shape=shape))


def asnumpy(a) -> np.ndarray:
    """``cupy.asnumpy``: a NumPy copy of a device array (one sync); host data unchanged."""
    return a.get() if type(a) is ndarray else np.asarray(a)


def scatter_add(target, indices, values) -> None:
    """``cupyx.scatter_add``: ``target[indices] += values`` accumulating repeats (one op)."""
    idx, _, syncs = _index(indices)
    if syncs:
        _count("syncs")
    v = values._a if type(values) is ndarray else _unwrap(values)
    np.add.at(target._a, idx if type(indices) is tuple else idx[0], v)
    _count("ops")


class _Elementwise(np.ndarray):
    """A fused function's array arguments as ``fuse`` hands them over: a NumPy view that
    refuses what a fused kernel cannot hold. ``cupy.fuse`` compiles one elementwise kernel,
    so a reduction (``x.sum()``, ``x.mean(axis, keepdims=True)``, ``np.add.reduce``), an
    index, a reshape or a transpose inside is refused here even where the output keeps
    the broadcast shape. Arithmetic, comparisons, ufuncs, ``where`` and ``astype`` pass."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":  # reduce, accumulate, outer, at
            _refuse(f"{ufunc.__name__}.{method}")
        args = [_plain(a) for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(o) for o in kwargs["out"])
        result = ufunc(*args, **kwargs)
        if type(result) is tuple:
            return tuple(_view(r) for r in result)
        return _view(result)


def _view(a):
    return a.view(_Elementwise) if type(a) is np.ndarray else a


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, _Elementwise) else a


def _refuse(what: str):
    raise ValueError(f"cpupy.fuse: {what} inside a fused function: a fused kernel is "
                     "elementwise (arithmetic, comparisons, ufuncs, where, astype)")


def _refusing(name: str):
    def method(self, *args, **kwargs):
        _refuse(f".{name}()" if not name.startswith("__") else "indexing")
    method.__name__ = name
    return method


for _name in ("sum mean max min prod any all argmax argmin std var cumsum cumprod ptp dot "
              "reshape ravel flatten transpose swapaxes squeeze take sort argsort nonzero "
              "repeat __getitem__ __setitem__").split():
    setattr(_Elementwise, _name, _refusing(_name))
_Elementwise.T = property(lambda self: _refuse(".T"))


def fuse(*args, kernel_name=None):
    """``cupy.fuse``: an elementwise function of device arrays run as one kernel (one op).

    CuPy traces the function once per argument types and compiles one elementwise kernel
    from its operators and ufuncs, so ``a * b + c`` costs one launch instead of two. Here
    the function runs on the arrays' NumPy data (so its ufuncs must be NumPy's:
    ``backend.fused`` hands it the module) and counts one op; as a fused kernel
    it must be elementwise: every output has the broadcast shape of the array arguments,
    and the arguments are ``_Elementwise`` views that refuse a reduction, an index, a
    reshape or a transpose inside. Called without device arrays it runs as written, as
    CuPy's does.
    """

    def decorate(func):
        name = kernel_name or getattr(func, "__name__", "fused")

        def fused(*call_args):
            if not any(type(a) is ndarray for a in call_args):
                return func(*call_args)
            # a NumPy array here: CuPy's TypeError; arrays as _Elementwise views
            data = [_view(_unwrap(a)) for a in call_args]
            shape = np.broadcast_shapes(*(a.shape for a in call_args if type(a) is ndarray))
            result = func(*data)
            outputs = result if type(result) is tuple else (result,)
            for out in outputs:
                if np.shape(out) != shape:
                    raise ValueError(f"cpupy.fuse: {name} returned shape {np.shape(out)}, not "
                                     f"the broadcast shape {shape} of its arguments: a fused "
                                     "kernel is elementwise")
            _count("ops")
            # a kernel writes new arrays: an argument returned as it is is copied
            wrapped = tuple(ndarray(np.array(out, copy=any(out is d for d in data)))
                            for out in outputs)
            return wrapped if type(result) is tuple else wrapped[0]

        fused.__name__ = name
        return fused

    if len(args) == 1 and callable(args[0]) and kernel_name is None:
        return decorate(args[0])
    return decorate


def _as_strided(x, shape=None, strides=None):
    return ndarray(np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides))


lib = SimpleNamespace(stride_tricks=SimpleNamespace(as_strided=_as_strided))
linalg = SimpleNamespace(norm=_make_method(SimpleNamespace(norm=np.linalg.norm), "norm"))
