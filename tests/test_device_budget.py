"""What the model costs a GPU, counted on the cpupy stand-in (``benchmarks/bench_device.py``).

Kernel launches ("ops") and host syncs of one step are deterministic on the stand-in,
so they are asserted here: a change that adds launches or round-trips to the GPU path
fails on any machine, without a GPU. The budgets are ``bench_device.BUDGETS``.
"""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_device.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_device", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ["shapes", "train", "infer"])
def test_step_stays_within_its_launch_and_sync_budget(case):
    bench = load_bench()
    counts = bench.count(case)
    max_ops, max_syncs = bench.BUDGETS[case]
    print(f"{case}: {counts.as_dict()} (budget {max_ops} ops, {max_syncs} syncs)")
    assert counts.syncs <= max_syncs
    assert counts.ops <= max_ops


def test_counts_are_deterministic():
    bench = load_bench()
    first, second = bench.count("shapes"), bench.count("shapes")
    assert first.as_dict() == second.as_dict()
