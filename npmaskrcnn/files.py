"""Writing files so that a crash never leaves half of one: ``atomic_write``.

Every file the package writes that a later run reads back (checkpoints, weights, the
training log, generated annotations, the ablation's metrics) goes through here. The bytes
go to a temporary file in the same folder (``.tmp-<random><suffix>``), are flushed to disk,
and the temporary file is renamed over the target with ``os.replace``, which is atomic on
POSIX and Windows. A reader therefore sees either the old file or the whole new one; an
exception mid-write removes the temporary file and leaves the old one untouched. A process
killed mid-write leaves only a ``.tmp-*`` file, which ``remove_leftovers`` clears.
"""

from __future__ import annotations

import glob
import os
import tempfile
from contextlib import contextmanager


def _new_file_mode() -> int:
    """0666 minus the process umask: the mode ``open(path, "w")`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete or not at all.

    Args:
        path: the target; its folder is created if missing.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, with ``encoding``, UTF-8 by default).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp creates 0600; give what open() would
        if "b" not in mode and encoding is None:
            encoding = "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_leftovers(directory, suffix: str = ".npz") -> list[str]:
    """Delete the ``.tmp-*<suffix>`` files that a process killed mid-write left in
    ``directory``; returns their paths. Only one process may write into a directory."""
    pattern = os.path.join(glob.escape(os.fspath(directory)), f".tmp-*{suffix}")
    leftovers = sorted(glob.glob(pattern))
    for path in leftovers:
        os.remove(path)
    return leftovers
