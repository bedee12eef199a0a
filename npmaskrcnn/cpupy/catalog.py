"""What cpupy provides and what each call costs on a GPU: the name lists.

A function or method not listed here is missing from cpupy on purpose: CuPy lacks it too
(``tests/test_cupy_api.py`` checks these lists against the installed CuPy).
"""

from __future__ import annotations

import numpy as np

_METHODS = frozenset("""
    all any argmax argmin argsort astype clip conj copy cumprod cumsum diagonal dot
    fill flatten max mean min prod ravel repeat reshape round sort squeeze std sum
    swapaxes take trace transpose var view
""".split())


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


# Functions that write into an argument and return None: one op each.
IN_PLACE = frozenset("copyto put_along_axis".split())


# Functions CuPy composes from one launch per axis (an ``arange`` for every axis but one,
# then the gather or scatter): counted as ``a.ndim`` ops.
PER_AXIS = frozenset("take_along_axis put_along_axis".split())


# Joining functions: CuPy copies each input with its own launch, except for more than 8
# same-dtype inputs of under 2 MiB on average, which one kernel copies together.
JOINING = frozenset("concatenate stack hstack vstack".split())


_SPECIAL = frozenset("asarray array asanyarray empty empty_like fuse".split())
