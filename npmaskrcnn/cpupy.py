"""cpupy: a strict CPU stand-in for CuPy that counts kernel launches and host syncs.

A machine without a GPU cannot run CuPy, so the mistakes that only a GPU used to reveal
went unseen: a NumPy array mixed into device arithmetic (CuPy raises ``TypeError``), a
device array handed to host code (``np.asarray``, matplotlib, pycocotools), and code that
is correct but slow on a GPU because it launches thousands of tiny kernels or waits on
the device hundreds of times. ``cpupy`` arrays compute with NumPy but behave, at their
boundary, like ``cupy.ndarray`` (the idea of GPAW's NumPy-backed ``cpupy``):

- **No implicit conversion**: ``np.asarray(a)`` raises CuPy's ``TypeError``; so does a
  NumPy array given to a ``cpupy`` function, a ufunc or an assignment
  (``a[...] = np_array``). Data crosses only through ``cpupy.asarray`` (host to device)
  and ``a.get()`` / ``backend.asnumpy`` (device to host). NumPy arrays and lists used as
  *indices* are accepted, as CuPy accepts them (they are copied to the device).
- **Device results stay on the device**: reductions return 0-d arrays, not Python
  scalars, so a Python ``if`` on a result is a visible host sync.
- **Counting**: every call that would launch a kernel on a GPU adds one *op* (an
  arithmetic ufunc, a reduction, a copy, a gather or scatter, a creation that writes
  memory such as ``zeros``); views (``reshape`` of a contiguous array, ``transpose``,
  basic slicing, ``as_strided``) and ``empty`` launch nothing and add none. Every read
  of device data by the host adds one *sync*: ``bool``/``int``/``float``/``item``/
  ``tolist``/``get`` of an array, boolean-mask indexing (its output size is data
  dependent, CuPy reads a count back), ``nonzero`` and its relatives. Host-to-device
  copies are counted apart (*h2d*).

The counts are deterministic, so a test can assert a budget and a benchmark can report
where the launches come from (``counting(trace=True)``). One op is about one CuPy kernel
launch. Where CuPy is known to launch more, the count follows it: ``concatenate`` and
``stack`` copy each input with its own launch unless they join many small arrays (one
kernel then), and ``take_along_axis`` / ``put_along_axis`` build an index per axis. A few
library routines that take two or three kernels in CuPy (``argsort``, ``cumsum``, a
reduction with several axes) count as one: the counts are a floor, never free.

Only functions that CuPy also has are provided (``FUNCTIONS``; a test checks them
against the installed CuPy): a NumPy-only function fails here as it would on a GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

_MIXING = "Unsupported type <class 'numpy.ndarray'>"
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


# ----------------------------------------------------------------------------- counting


@dataclass
class Counts:
    """What a piece of device code cost: kernel launches, host syncs, copies."""

    ops: int = 0  # kernel launches
    syncs: int = 0  # host waits on device data (d2h reads included)
    h2d: int = 0  # host-to-device copies
    sites: Counter = field(default_factory=Counter)  # (kind, "file:line") -> count, if traced
    trace: bool = False

    def as_dict(self) -> dict:
        return {"ops": self.ops, "syncs": self.syncs, "h2d": self.h2d}

    def top_sites(self, kind: str = "ops", n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` source lines that caused the most ``kind`` events."""
        rows = [(site, c) for (k, site), c in self.sites.items() if k == kind]
        return sorted(rows, key=lambda r: (-r[1], r[0]))[:n]


_counts = Counts()
_THIS_FILE = os.path.normcase(os.path.abspath(__file__))
_NUMPY_DIR = os.path.normcase(os.path.dirname(np.__file__))


def _site() -> str:
    """``file:line`` of the first caller outside this module and NumPy."""
    frame = sys._getframe(2)
    while frame is not None:
        name = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if name != _THIS_FILE and not name.startswith(_NUMPY_DIR):
            return f"{os.path.relpath(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _count(kind: str, n: int = 1) -> None:
    c = _counts
    setattr(c, kind, getattr(c, kind) + n)
    if c.trace:
        c.sites[(kind, _site())] += n


@contextlib.contextmanager
def counting(trace: bool = False):
    """Count the ops, syncs and h2d copies of the code inside the ``with`` block.

    >>> with counting() as c:
    ...     y = (asarray([1.0, 2.0]) * 2).sum()
    >>> c.ops, c.syncs, c.h2d
    (2, 0, 1)

    ``trace=True`` also records the source line of each event (``Counts.top_sites``).
    Blocks nest: the outer block's counts include the inner block's.
    """
    global _counts
    outer = _counts
    inner = Counts(trace=trace or outer.trace)
    _counts = inner
    try:
        yield inner
    finally:
        _counts = outer
        outer.ops += inner.ops
        outer.syncs += inner.syncs
        outer.h2d += inner.h2d
        if outer.trace:
            outer.sites.update(inner.sites)


def counts() -> Counts:
    """The running totals of the innermost ``counting`` block (or of the process)."""
    return _counts


# ----------------------------------------------------------------------------- wrapping


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _unwrap(x):
    """Our arrays -> their NumPy data; a NumPy array -> TypeError (CuPy refuses it)."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t is np.ndarray:
        raise TypeError(_MIXING)
    if t is list or t is tuple:
        return t(_unwrap(v) for v in x)
    return x


def _wrap(r, inputs=(), out=None, same=()):
    """NumPy results -> our arrays, counting one op unless the result is a view of an input.

    A NumPy scalar (what NumPy returns for a reduction to one value) becomes a 0-d array,
    as CuPy returns one. An input returned unchanged (``ascontiguousarray`` of a
    contiguous array) comes back as the same object, as in CuPy; ``same`` lists the
    wrappers that may be returned.
    """
    t = type(r)
    if t is np.ndarray:
        if out is not None and r is out._a:
            _count("ops")
            return out
        for s in same:
            if r is s._a:
                return s
        if r.base is not None:
            root = _root(r)
            if any(type(i) is np.ndarray and _root(i) is root for i in inputs):
                return ndarray(r)  # a view: no kernel
        _count("ops")
        return ndarray(r)
    if isinstance(r, np.generic):
        _count("ops")
        return ndarray(np.asarray(r))
    if t is tuple or t is list:
        return t(_wrap(v, inputs) for v in r)
    return r


def _flat_inputs(args, kwargs) -> list:
    flat = []
    for a in list(args) + list(kwargs.values()):
        if type(a) is np.ndarray:
            flat.append(a)
        elif type(a) in (list, tuple):
            flat.extend(v for v in a if type(v) is np.ndarray)
    return flat


def _call(func, args, kwargs, syncs: int = 0, this=None):
    """Run a NumPy function (or ``this``'s method) on unwrapped arguments, wrap the result."""
    uargs = _unwrap(args)
    ukw = {k: _unwrap(v) for k, v in kwargs.items()}
    out = kwargs.get("out")
    r = func(*uargs, **ukw)
    if syncs:
        _count("syncs", syncs)
    inputs = _flat_inputs(uargs, ukw) + ([] if this is None else [this._a])
    same = [a for a in args if type(a) is ndarray] + ([] if this is None else [this])
    return _wrap(r, inputs, out if type(out) is ndarray else None, same)


# ----------------------------------------------------------------------------- ndarray


def _index(key):
    """An index for NumPy, and whether it gathers (advanced) and whether it syncs (mask)."""
    parts = key if type(key) is tuple else (key,)
    advanced = syncs = False
    out = []
    for k in parts:
        t = type(k)
        if t is ndarray:
            advanced = True
            syncs = syncs or k._a.dtype == bool
            out.append(k._a)
        elif t is np.ndarray or t is list:
            # CuPy copies host indices to the device, then indexes with them
            _count("h2d")
            k = np.asarray(k)
            advanced = True
            syncs = syncs or k.dtype == bool
            out.append(k)
        else:
            out.append(k)
    return tuple(out), advanced, syncs


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power,
    "matmul": np.matmul, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "lshift": np.left_shift, "rshift": np.right_shift,
}
_COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}
_UNARY = {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}

# ndarray methods CuPy has, run on the data; those that read data back are handled apart.
_METHODS = frozenset("""
    all any argmax argmin argsort astype clip conj copy cumprod cumsum diagonal dot
    fill flatten max mean min prod ravel repeat reshape round sort squeeze std sum
    swapaxes take trace transpose var view
""".split())


class ndarray:  # noqa: N801 - CuPy's name
    """A device array of the stand-in: NumPy data behind CuPy's boundary rules."""

    __slots__ = ("_a",)
    __hash__ = None  # arrays are mutable and compare elementwise

    def __init__(self, data: np.ndarray):
        self._a = data

    # -- metadata (no device access) --
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    @property
    def real(self):
        return _wrap(self._a.real, (self._a,))

    @property
    def imag(self):
        return _wrap(self._a.imag, (self._a,))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- the boundary --
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        """A NumPy copy on the host (one sync)."""
        _count("syncs")
        return np.array(self._a, copy=True)

    def item(self):
        _count("syncs")
        return self._a.item()

    def tolist(self):
        _count("syncs")
        return self._a.tolist()

    def __bool__(self):
        _count("syncs")
        return bool(self._a)

    def __int__(self):
        _count("syncs")
        return int(self._a)

    def __float__(self):
        _count("syncs")
        return float(self._a)

    def __complex__(self):
        _count("syncs")
        return complex(self._a)

    def __index__(self):
        _count("syncs")
        return self._a.__index__()

    def __repr__(self):
        return "cpupy." + repr(self.get())[0:]  # CuPy's repr reads the data back too

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        raise TypeError("cpupy arrays are not pickled: use .get() first")

    # -- NumPy protocols: NumPy functions on device arrays dispatch here, as CuPy's do --
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method not in ("__call__", "reduce", "accumulate", "outer", "at"):
            return NotImplemented
        if ufunc.__name__ not in UFUNCS:
            return NotImplemented
        out = kwargs.get("out")
        if type(out) is tuple:
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out = out[0]
        func = ufunc if method == "__call__" else getattr(ufunc, method)
        return _call(func, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        impl = _lookup(func)
        if impl is None:
            return NotImplemented
        return impl(*args, **kwargs)

    # -- indexing --
    def __getitem__(self, key):
        idx, advanced, syncs = _index(key)
        if not advanced and all(type(k) is int for k in idx) and len(idx) == self._a.ndim:
            idx = idx + (Ellipsis,)  # a 0-d view, as CuPy's, not a NumPy scalar
        r = self._a[idx]
        if syncs:
            _count("syncs")
        if advanced:
            _count("ops")
            return ndarray(r)
        return ndarray(r) if type(r) is np.ndarray else _wrap(r)

    def __setitem__(self, key, value):
        idx, _, syncs = _index(key)
        if type(value) is np.ndarray:
            raise TypeError(_MIXING)  # CuPy refuses assignment from host arrays
        self._a[idx] = value._a if type(value) is ndarray else value
        if syncs:
            _count("syncs")
        _count("ops")

    def __contains__(self, value):
        return bool((self == value).any())

    # -- methods --
    def __getattr__(self, name):
        if name not in _METHODS:
            raise AttributeError(f"'cpupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._a, name)

        def call(*args, **kwargs):
            if name == "astype" and not kwargs.get("copy", True):
                if np.dtype(args[0] if args else kwargs["dtype"]) == self._a.dtype:
                    return self
            if name in ("fill", "sort"):  # in place
                method(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
                _count("ops")
                return None
            if name == "view":
                return ndarray(method(*args, **kwargs))
            syncs = _data_dependent(name, (self,) + args, kwargs)
            return _call(method, args, kwargs, syncs, this=self)

        return call

    def nonzero(self):
        return __getattr__("nonzero")(self)


def _binary(name, func):
    def op(self, other):
        return _call(func, (self, other), {})

    def rop(self, other):
        return _call(func, (other, self), {})

    def iop(self, other):
        _call(func, (self, other), {"out": self})
        return self

    op.__name__, rop.__name__, iop.__name__ = f"__{name}__", f"__r{name}__", f"__i{name}__"
    return op, rop, iop


for _name, _func in _BINARY.items():
    _op, _rop, _iop = _binary(_name, _func)
    setattr(ndarray, _op.__name__, _op)
    setattr(ndarray, _rop.__name__, _rop)
    setattr(ndarray, _iop.__name__, _iop)
for _name, _func in _COMPARE.items():
    setattr(ndarray, f"__{_name}__", _binary(_name, _func)[0])
for _name, _func in _UNARY.items():
    setattr(ndarray, f"__{_name}__", lambda self, _f=_func: _call(_f, (self,), {}))


# ----------------------------------------------------------------------------- functions

# NumPy functions that CuPy also provides, run on the data and counted as one op each.
FUNCTIONS = frozenset("""
    abs absolute add all allclose amax amin any arange arccos arcsin arctan arctan2
    argmax argmin argsort around array_equal ascontiguousarray atleast_1d atleast_2d
    bitwise_and bitwise_not bitwise_or broadcast_arrays broadcast_to ceil clip
    concatenate copy copyto cos cosh count_nonzero cumprod cumsum diag diff divide dot
    einsum equal exp expand_dims expm1 eye flip floor floor_divide fmax fmin full
    full_like greater greater_equal hstack hypot identity inner invert isclose isfinite
    isin isinf isnan kron less less_equal linspace log log10 log1p log2 logaddexp
    logical_and logical_not logical_or logical_xor matmul max maximum mean median meshgrid
    min minimum mod moveaxis multiply negative nextafter not_equal ones ones_like outer pad
    positive power prod ptp put_along_axis ravel reciprocal remainder repeat reshape rint roll
    rollaxis round searchsorted sign sin sinh sort split sqrt square squeeze stack std subtract sum
    swapaxes take take_along_axis tan tanh tensordot tile trace transpose tril triu
    true_divide trunc var vstack where zeros zeros_like
""".split())

# Functions whose output size depends on the data: CuPy reads a count back (one sync).
SYNCING = frozenset("nonzero flatnonzero argwhere unique".split())

# ufuncs reachable through NumPy's ``np.<ufunc>(device_array)`` dispatch.
UFUNCS = frozenset(n for n in FUNCTIONS if isinstance(getattr(np, n, None), np.ufunc))

# dtype helpers and constants: host-side, no device work.
_PASSTHROUGH = frozenset("""
    bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64
    complex64 complex128 intp dtype finfo iinfo result_type promote_types can_cast
    issubdtype inf nan pi e newaxis integer floating number generic
""".split())


def _data_dependent(name, args, kwargs) -> int:
    """1 when the call's output size depends on device data (CuPy reads it back)."""
    if name in SYNCING:
        return 1
    if name == "where" and len(args) + len(kwargs) == 1:
        return 1  # where(condition) is nonzero(condition)
    if name == "repeat":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return int(type(repeats) is ndarray)
    return 0


# Functions that write into an argument and return None: one op each.
IN_PLACE = frozenset("copyto put_along_axis".split())


# Functions CuPy composes from one launch per axis (an ``arange`` for every axis but one,
# then the gather or scatter): counted as ``a.ndim`` ops.
PER_AXIS = frozenset("take_along_axis put_along_axis".split())


# Joining functions: CuPy copies each input with its own launch, except for more than 8
# same-dtype inputs of under 2 MiB on average, which one kernel copies together.
JOINING = frozenset("concatenate stack hstack vstack".split())


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


def __getattr__(name):  # PEP 562: cpupy.<name> for the functions above
    if name in _PASSTHROUGH:
        return getattr(np, name)
    if name in FUNCTIONS or name in SYNCING:
        if name not in _cache:
            _cache[name] = _make(name)
        return _cache[name]
    raise AttributeError(f"module 'cpupy' has no attribute {name!r} (CuPy has it? add it "
                         "to FUNCTIONS)")


def _lookup(func):
    """Our implementation of the NumPy function ``func`` (``np.sum`` -> ``sum``), if any."""
    name = getattr(func, "__name__", "")
    module = getattr(func, "__module__", "") or ""
    if module.startswith("numpy.linalg"):
        return getattr(linalg, name, None)
    if name in FUNCTIONS or name in SYNCING or name in _SPECIAL:
        return globals().get(name) or __getattr__(name)
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


_SPECIAL = frozenset("asarray array asanyarray empty empty_like".split())


def _as_strided(x, shape=None, strides=None):
    return ndarray(np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides))


lib = SimpleNamespace(stride_tricks=SimpleNamespace(as_strided=_as_strided))
linalg = SimpleNamespace(norm=_make_method(SimpleNamespace(norm=np.linalg.norm), "norm"))
