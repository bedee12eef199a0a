"""``cpupy.ndarray``: NumPy data behind CuPy's boundary rules, and the wrapping of results.

``_call`` runs a NumPy function on unwrapped arguments and wraps its result, counting
one op unless the result is a view of an input; ``ndarray`` refuses implicit conversion
(``np.asarray(a)``), counts a sync for every read of its data by the host, and sends
NumPy functions called on it (``__array_function__``, ``__array_ufunc__``) back through
the counted wrappers of ``functions.py``.
"""

from __future__ import annotations

import numpy as np

from .catalog import _METHODS, SYNCING, UFUNCS
from .counting import count as _count

_MIXING = "Unsupported type <class 'numpy.ndarray'>"
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


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
        impl = functions.lookup(func)
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
        if isinstance(value, (list, tuple)):  # CuPy reads a sequence as a host array: refused
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill "
                             "(cpupy, as CuPy: assign a device array or a scalar)")
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
        return functions.function("nonzero")(self)


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



# the counted functions, read at call time only (functions.py imports this module)
from . import functions  # noqa: E402
