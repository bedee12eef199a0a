"""cpupy's counters: kernel launches (ops), host syncs and host-to-device copies.

Every wrapper in ``cpupy`` calls ``count`` for what CuPy would do on a GPU; ``counting()``
collects the events of a block of code, with their source lines if traced.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


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
_PACKAGE_DIR = os.path.normcase(os.path.dirname(os.path.abspath(__file__)))
_NUMPY_DIR = os.path.normcase(os.path.dirname(np.__file__))


def _site() -> str:
    """``file:line`` of the first caller outside cpupy and NumPy (and outside frames that
    hide themselves from tracebacks with ``__tracebackhide__``, such as a fused call's)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        hidden = frame.f_locals.get("__tracebackhide__", False)
        if not hidden and not name.startswith((_PACKAGE_DIR, _NUMPY_DIR)):
            return f"{os.path.relpath(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def count(kind: str, n: int = 1) -> None:
    """Add ``n`` events of ``kind`` (``"ops"``, ``"syncs"``, ``"h2d"``) to the open block."""
    c = _counts
    setattr(c, kind, getattr(c, kind) + n)
    if c.trace:
        c.sites[(kind, _site())] += n


@contextlib.contextmanager
def counting(trace: bool = False):
    """Count the ops, syncs and h2d copies of the code inside the ``with`` block.

    >>> from npmaskrcnn import cpupy
    >>> with counting() as c:
    ...     y = (cpupy.asarray([1.0, 2.0]) * 2).sum()
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
