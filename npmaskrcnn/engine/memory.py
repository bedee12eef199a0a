"""Host memory: keep the memory a step frees for the next step (glibc only).

A NumPy network allocates and frees the same temporaries every step: im2col columns of a
few MiB, activations and their gradients, padded copies of whole feature maps (55 MiB for
ResNet-50's C2 of an 800 x 1067 image). glibc's ``malloc`` gives a block larger than its
*mmap threshold* (at most 32 MiB) its own ``mmap`` and hands it back to the kernel on
``free``, and it gives the top of the heap back (``trim``) whenever more than its *trim
threshold* lies free there. The next step then takes the same memory again one 4 KiB page
at a time, each page a fault that the kernel answers with a page of zeros.

Measured on the 2-core machine (page faults and wall time, glibc's defaults against the
settings below): a stick-figure training step (``figures()``, 4 images of 240 px), about
4,000 faults and 50 ms of its 0.7 s; the R50-FPN inference of ``benchmarks/bench_model.py``,
0.7 s of its 4.3 s.

``keep_freed_memory`` turns both off with ``mallopt``: no block gets its own ``mmap``
(``M_MMAP_MAX`` 0: every block comes from the heap, so a freed one of any size can be
reused) and the heap keeps what it once grew to (``M_TRIM_THRESHOLD`` 2 GiB, the most a C
int holds). The cost is that the process holds on to its peak memory, which a training
run reaches in its first step anyway. The CUDA side needs none of this: CuPy keeps freed
device memory in its own pool, for the same reason.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# free memory at the top of the heap kept before any is given back: the largest value
# mallopt's int takes, far over what this package frees in a step
TRIM_THRESHOLD = 2**31 - 1

_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks for reuse instead of returning them to
    the kernel. Once per process; True when in effect, False where there is no glibc
    (macOS, Windows, musl), where it changes nothing."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success
    _kept = bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
