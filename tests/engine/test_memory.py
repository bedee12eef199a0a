"""Tests for npmaskrcnn/engine/memory.py: freed host memory kept for the next step."""

import subprocess
import sys
import textwrap

import pytest

from npmaskrcnn.engine.memory import keep_freed_memory

# Eight 4 MiB arrays, or one of 64 MiB (over any mmap threshold glibc takes), written and
# freed five times in a fresh process: the page faults of each round. Without the setting
# glibc gives the memory back at the end of every round and faults it in again in the
# next; with it, only the first round faults.
ROUNDS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from npmaskrcnn.engine.memory import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    sizes = [1 << 20] * 8 if sys.argv[2] == "small" else [1 << 24]
    counts = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(n, dtype=np.float32) for n in sizes]
        del arrays
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*counts)
""")


def _faults(mode: str, sizes: str) -> list[int]:
    run = subprocess.run([sys.executable, "-c", ROUNDS, mode, sizes], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return [int(c) for c in run.stdout.split()]


@pytest.mark.parametrize("sizes", ["small", "large"])
def test_freed_memory_is_reused_without_page_faults(sizes):
    if not keep_freed_memory():
        pytest.skip("no glibc mallopt on this platform: keep_freed_memory changes nothing")
    kept, default = _faults("keep", sizes), _faults("default", sizes)
    print(f"{sizes}: page faults per round, kept:", kept, "glibc's default:", default)
    # (the kernel may map a 4 KiB page or a 2 MiB one a fault: counts, not sizes, compared)
    assert min(default[1:]) > 100  # by default every round faults the memory in again
    assert kept[0] > min(default[1:]) // 2  # with the setting the first round does
    assert max(kept[1:]) * 20 < min(default[1:])  # and the next ones reuse it
