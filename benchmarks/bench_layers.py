"""Speed of npmaskrcnn's convolutions against PyTorch on the CPU (float32).

Times ``conv2d`` and ``conv_transpose2d`` forward and forward+backward on the shapes that
dominate Mask R-CNN: the ResNet stem, a stage-2 3x3, an FPN lateral 1x1, an FPN/RPN 3x3
on two images, and the mask head's 3x3 and 2x2 stride-2 deconvolution on 128 RoIs.
NumPy and PyTorch run alternately in the same process, so that a busy machine slows both
alike, and the minimum over ``--repeat`` runs is kept. The table gives ms per call and
the ratio ours/torch, then the geometric mean of the ratios; last, the peak memory of
the largest case's forward+backward.

Usage::

    python benchmarks/bench_layers.py                   # every case, 5 repeats
    python benchmarks/bench_layers.py --cases mask3x3,deconv2x2 --repeat 10
    python benchmarks/bench_layers.py --quick           # 1 repeat, no memory measurement
    python benchmarks/bench_layers.py --threads 1 --clock cpu   # steadier when shared

Threads: BLAS (NumPy), OpenMP and MKL (torch) all get ``--threads`` (default: every core
this process may use), set before NumPy is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import tracemalloc

# (name, op, x shape, weight shape, stride, padding); weights in PyTorch's layouts.
CASES = [
    ("conv7x7s2", "conv", (1, 3, 512, 512), (64, 3, 7, 7), 2, 3),
    ("conv3x3_64", "conv", (1, 64, 128, 128), (64, 64, 3, 3), 1, 1),
    ("conv1x1_256to64", "conv", (1, 256, 128, 128), (64, 256, 1, 1), 1, 0),
    ("conv3x3_256_n2", "conv", (2, 256, 64, 64), (256, 256, 3, 3), 1, 1),
    ("mask3x3", "conv", (128, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("deconv2x2", "deconv", (128, 256, 14, 14), (256, 256, 2, 2), 2, 0),
]
MEMORY_CASE = "mask3x3"  # the largest case: the most FLOPs and the largest im2col matrix


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs per case (min is kept)")
    p.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    p.add_argument("--quick", action="store_true", help="1 repeat, skip the memory measurement")
    p.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process over all its threads "
        "(steadier on a shared machine with --threads 1; with more threads it also "
        "counts BLAS threads spinning)",
    )
    p.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _set_threads(n: int) -> int:
    """Fix the thread count of both libraries; must run before NumPy is imported."""
    n = n or len(os.sched_getaffinity(0))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


def _out_shape(case) -> tuple:
    _, op, (n, _, h, w), (k0, k1, kh, kw), s, p = case
    if op == "conv":
        return n, k0, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    return n, k1, (h - 1) * s - 2 * p + kh, (w - 1) * s - 2 * p + kw


def _make_inputs(case, seed=0):
    """float32 (x, w, b, dout) as NumPy arrays; dout is ones (no denormals either way)."""
    import numpy as np

    _, op, x_shape, w_shape, _, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32) * np.float32(0.05)
    b = rng.standard_normal(w_shape[1] if op == "deconv" else w_shape[0], dtype=np.float32)
    return x, w, b, np.ones(_out_shape(case), dtype=np.float32)


def _ours(case):
    """(forward, forward+backward) closures over npmaskrcnn's functional pair."""
    from npmaskrcnn.layers.conv import conv2d_backward, conv2d_forward
    from npmaskrcnn.layers.conv_transpose import (
        conv_transpose2d_backward,
        conv_transpose2d_forward,
    )

    _, op, _, _, stride, padding = case
    fwd, bwd = (conv2d_forward, conv2d_backward)
    if op == "deconv":
        fwd, bwd = (conv_transpose2d_forward, conv_transpose2d_backward)
    x, w, b, dout = _make_inputs(case)

    def forward():
        return fwd(x, w, b, stride, padding)[0]

    def forward_backward():
        _, cache = fwd(x, w, b, stride, padding)
        return bwd(dout, cache)

    return forward, forward_backward


def _torch(case, torch):
    """(forward, forward+backward) closures over ``torch.nn.functional``."""
    import torch.nn.functional as F

    _, op, _, _, stride, padding = case
    fn = F.conv2d if op == "conv" else F.conv_transpose2d
    x, w, b, dout = (torch.from_numpy(a) for a in _make_inputs(case))
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

    def forward():
        with torch.no_grad():
            return fn(x, w, b, stride, padding)

    def forward_backward():
        for t in (xg, wg, bg):
            t.grad = None
        fn(xg, wg, bg, stride, padding).backward(dout)
        return xg.grad, wg.grad, bg.grad

    return forward, forward_backward


def _time(fn, clock) -> float:
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


def run_case(case, repeat, torch, clock):
    """Min ms over ``repeat`` alternating runs: {(lib, 'fwd'|'fwdbwd'): ms}."""
    libs = {"ours": dict(zip(("fwd", "fwdbwd"), _ours(case)))}
    if torch is not None:
        libs["torch"] = dict(zip(("fwd", "fwdbwd"), _torch(case, torch)))
    best = {}
    for kind in ("fwd", "fwdbwd"):
        for fns in libs.values():
            fns[kind]()  # warm-up: page faults, BLAS buffers, oneDNN primitives
        for _ in range(repeat):
            for lib, fns in libs.items():
                t = _time(fns[kind], clock)
                best[(lib, kind)] = min(best.get((lib, kind), math.inf), t)
    return best


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(lib: str) -> None:
    """In a fresh process: print the peak resident-set growth (MiB) of one
    forward+backward of MEMORY_CASE over the process with its inputs already made.

    The peak (VmHWM) is reset first by writing 5 to /proc/self/clear_refs (Linux), so
    that import-time peaks do not hide it.
    """
    case = next(c for c in CASES if c[0] == MEMORY_CASE)
    if lib == "torch":
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        forward_backward = _torch(case, torch)[1]
    else:
        forward_backward = _ours(case)[1]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    forward_backward()
    print((_status_kib("VmHWM") - before) / 1024)


def measure_memory(has_torch: bool) -> dict:
    """Peak memory (MiB) of MEMORY_CASE's forward+backward, excluding the inputs:
    tracemalloc (NumPy reports its buffers to it) for ours, and for both libraries the
    growth of the peak resident set (VmHWM) of a fresh subprocess."""
    case = next(c for c in CASES if c[0] == MEMORY_CASE)
    forward_backward = _ours(case)[1]
    tracemalloc.start()
    forward_backward()
    result = {"ours, tracemalloc peak": tracemalloc.get_traced_memory()[1] / 2**20}
    tracemalloc.stop()
    for lib in ("ours", "torch") if has_torch else ("ours",):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", lib]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        result[f"{lib}, peak RSS growth"] = float(out.stdout.split()[-1])
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = _set_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if args.memory_child:
        memory_child(args.memory_child)
        return
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    repeat = 1 if args.quick else args.repeat
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    names = [s for s in args.cases.split(",") if s]
    cases = [c for c in CASES if not names or c[0] in names]
    print(f"float32, {threads} threads, {args.clock} ms per call, min of {repeat} runs")
    print(f"{'case':<16} {'x shape':<15} {'kernel':<12} {'fwd ours':>9} {'torch':>8} "
          f"{'ratio':>6} {'f+b ours':>9} {'torch':>8} {'ratio':>6}")
    ratios = {"fwd": [], "fwdbwd": []}
    for case in cases:
        name, op, x_shape, w_shape, stride, padding = case
        best = run_case(case, repeat, torch, clock)
        kernel = f"{w_shape[2]}x{w_shape[3]}/{stride} p{padding}" + (" T" if op == "deconv" else "")
        row = f"{name:<16} {'x'.join(map(str, x_shape)):<15} {kernel:<12}"
        for kind in ("fwd", "fwdbwd"):
            ours = best[("ours", kind)]
            if torch is None:
                row += f" {ours:9.1f} {'-':>8} {'-':>6}"
                continue
            theirs = best[("torch", kind)]
            ratios[kind].append(ours / theirs)
            row += f" {ours:9.1f} {theirs:8.1f} {ours / theirs:6.2f}"
        print(row, flush=True)
    if torch is not None and cases:
        gm = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items()}
        print(f"geometric mean of ours/torch: forward {gm['fwd']:.2f}, "
              f"forward+backward {gm['fwdbwd']:.2f}")
    if not args.quick:
        mem = measure_memory(torch is not None)
        print(f"peak memory of {MEMORY_CASE} forward+backward, MiB: "
              + "; ".join(f"{k} {v:.0f}" for k, v in mem.items()))


if __name__ == "__main__":
    main()
