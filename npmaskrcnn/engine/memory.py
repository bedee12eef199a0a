"""Host memory: keep the memory a training step frees for the next step (glibc only).

A NumPy network allocates and frees the same temporaries every step: im2col columns of a
few MiB, activations, their gradients. glibc's ``malloc`` gives a block larger than its
*mmap threshold* its own ``mmap`` and returns it to the kernel on ``free``, and it gives
the top of the heap back to the kernel (``trim``) whenever more than its *trim threshold*
lies free there. (Both thresholds start at 128 KiB and follow the largest block freed so
far, up to 32 MiB and 64 MiB.) A step that frees tens of MiB at its end therefore hands
them back, and the next step takes them again one 4 KiB page at a time, each page a
fault that the kernel answers with a page of zeros. Measured on the 2-core machine, a
stick-figure training step (``figures()``, 4 images of 240 px): about 4,000 page faults
and 50 ms of its 0.7 s (``/usr/bin/time -v``: 1.8 s of system time in 35 steps, 0.3 s
with the thresholds below).

``keep_freed_memory`` sets both thresholds with ``mallopt``: blocks up to 32 MiB (the
most glibc accepts) come from the heap, and the heap keeps what it once grew to. The cost
is that the process holds on to its peak memory, which a training run reaches in its
first step anyway. The CUDA side needs none of this: CuPy keeps freed device memory in
its own pool.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts: HEAP_MAX_SIZE / 2 on a 64-bit machine
MMAP_THRESHOLD_MAX = 32 << 20
# free memory at the top of the heap kept before any is given back: the largest value
# mallopt's int takes (2 GiB), far over what this package frees in a step
TRIM_THRESHOLD = 2**31 - 1

_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks (up to 32 MiB) for reuse instead of
    returning them to the kernel. Once per process; True when in effect, False where
    there is no glibc (macOS, Windows, musl), where it changes nothing."""
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
    _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
