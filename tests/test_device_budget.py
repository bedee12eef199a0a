"""What the model costs a GPU, counted on the cpupy stand-in (``benchmarks/bench_device.py``).

Kernel launches ("ops") and host syncs of one step are deterministic on the stand-in,
so they are asserted here: a change that adds launches or round-trips to the GPU path
fails on any machine, without a GPU. The budgets are ``bench_device.BUDGETS``.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


def test_kernel_table_sums_each_kernels_calls_and_time():
    bench = load_bench()

    def event(name, device, start, end):
        return SimpleNamespace(name=name, device_type=device,
                               time_range=SimpleNamespace(start=start, end=end))

    events = [event("gemm", "cuda", 0.0, 30.0), event("add", "cuda", 30.0, 35.0),
              event("gemm", "cuda", 40.0, 60.0), event("aten::mm", "cpu", 0.0, 100.0)]
    table = bench.kernel_table(events, "cuda")
    assert set(table) == {"gemm", "add"}  # the host's events are not kernels
    assert table["gemm"][0] == 2 and table["add"][0] == 1
    np.testing.assert_allclose([table["gemm"][1], table["add"][1]], [50e-6, 5e-6])


def test_print_kernels_compares_kernels_with_the_count_and_the_wall_time(capsys):
    bench = load_bench()
    bench.print_kernels("shapes", 1313, 0.040, {"small": [1200, 0.004], "gemm": [100, 0.006]},
                        top=1)
    row, top = capsys.readouterr().out.splitlines()
    print(row, top, sep="\n")
    assert row.split() == ["shapes", "1313", "1300", "10.00", "40.00", "25%"]
    assert "gemm" in top and "100x" in top and "6.000 ms" in top  # the busiest kernel only
    bench.print_kernels("nms", 73, 0.004, None)
    assert "no kernels seen" in capsys.readouterr().out


def test_profile_kernels_reads_torchs_profiler_events():
    """On a machine without CUDA it gives None; the events it reads are torch's, whose
    host events (matrix products here) ``kernel_table`` sums like kernels."""
    torch = pytest.importorskip("torch")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    bench = load_bench()
    if not torch.cuda.is_available():
        assert bench.profile_kernels(lambda: None, lambda: None) is None
    x = torch.randn(64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            x @ x
    table = bench.kernel_table(prof.events(), DeviceType.CPU)
    print({k: v for k, v in table.items() if "mm" in k})
    assert table["aten::mm"][0] == 3 and table["aten::mm"][1] > 0
