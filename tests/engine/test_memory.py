"""Tests for npmaskrcnn/engine/memory.py: freed host memory kept for the next step."""

import subprocess
import sys
import textwrap

import pytest

from npmaskrcnn.engine.memory import keep_freed_memory

# Eight 4 MiB arrays written and freed, five times, in a fresh process: the page faults of
# each round. Without the setting glibc gives the 32 MiB back at the end of every round and
# faults it in again in the next; with it, only the first round faults.
ROUNDS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from npmaskrcnn.engine.memory import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    counts = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(1 << 20, dtype=np.float32) for _ in range(8)]
        del arrays
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*counts)
""")


def _faults(mode: str) -> list[int]:
    run = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return [int(c) for c in run.stdout.split()]


def test_freed_memory_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("no glibc mallopt on this platform: keep_freed_memory changes nothing")
    kept, default = _faults("keep"), _faults("default")
    pages = 8 * (4 << 20) // 4096  # the pages of one round (the kernel may map a few a fault)
    print("page faults per round, kept:", kept, "glibc's default:", default)
    assert kept[0] > pages // 4  # the first round takes the memory
    assert max(kept[1:]) < pages // 40  # and the next ones reuse it
    assert min(default[1:]) > pages // 4  # what the setting saves
