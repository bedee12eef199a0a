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
  copies are counted apart (*h2d*). ``cpupy.fuse``, as ``cupy.fuse``, makes one kernel
  (one op) of an elementwise function; it refuses a reduction, an index, a reshape or a
  transpose inside, and an output not of the arguments' broadcast shape.

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

from .array import ndarray
from .catalog import FUNCTIONS, SYNCING, UFUNCS  # noqa: F401
from .counting import Counts, counting, counts  # noqa: F401
from .functions import (  # noqa: F401
    array,
    asanyarray,
    asarray,
    asnumpy,
    empty,
    empty_like,
    function,
    fuse,
    lib,
    linalg,
    scatter_add,
)


def __getattr__(name):  # PEP 562: cpupy.<name> for every function CuPy also has
    return function(name)


__all__ = ["Counts", "asarray", "asnumpy", "counting", "counts", "fuse", "ndarray", "scatter_add"]
