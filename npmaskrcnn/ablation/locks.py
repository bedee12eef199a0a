"""Per-run lock files: several ``ablate`` processes share the runs, none trains one twice."""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def claim(run_dir: Path):
    """Hold ``run_dir/running.lock`` while a run trains, so that several ``ablate`` processes
    (``--jobs``, or the same command started twice) share the runs without training one twice.

    Yields True when this process holds the lock, False when another live process does. A
    lock left behind by a process that died (a crash, a kill) is taken over.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / "running.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_holder_alive(lock):
                yield False
                return
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False  # lost a race for the lock twice: leave the run to the winner


def _lock_holder_alive(lock: Path) -> bool:
    """Whether the process named in a lock file ("host pid") is still running. A lock from
    another host counts as alive (it cannot be checked); an empty one (its writer is between
    open and write) as alive for its first 10 seconds."""
    try:
        text, age = lock.read_text().split(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if len(text) != 2 or not text[1].isdigit():
        return age < 10
    if text[0] != socket.gethostname():
        return True
    try:
        os.kill(int(text[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True
