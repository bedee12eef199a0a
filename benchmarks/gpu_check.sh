#!/usr/bin/env bash
# The GPU check in one command, for whoever has a CUDA GPU for a few minutes (about 8 on an
# H200): the tests on CuPy, the device benchmark against torchvision, and the README's
# default training run on CuPy with its AP. Run it from the repository root:
#
#     bash benchmarks/gpu_check.sh [LOG_DIR]        # logs in LOG_DIR (default gpu-check/)
#
# It needs CuPy with a visible GPU (pip install -e ".[gpu]" or ".[gpu-cuda13]"), pytest and
# pytest-xdist; torch with CUDA for the torchvision column of the benchmark (optional).
# Each stage has its own time limit (BENCH_LIMIT, TESTS_LIMIT, TRAIN_LIMIT seconds: 200, 170,
# 220), so one slow stage cannot hide the others' results and the whole fits in 10 minutes.
set -uo pipefail
LOG=${1:-gpu-check}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-8}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG/gpu.txt"
$PY -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'CUDA', cupy.cuda.runtime.runtimeGetVersion())" | tee -a "$LOG/gpu.txt"

start=$SECONDS
echo "== 1. device benchmark (counts on the stand-in, GPU wall times, the kernels of each case)"
timeout "${BENCH_LIMIT:-200}" $PY benchmarks/bench_device.py --quick --profile 2>&1 | tee "$LOG/bench.txt"

echo "bench: $((SECONDS - start)) s"; start=$SECONDS
echo "== 2. the tests that run on CuPy (every test with the xp fixture, and the model tests)"
# a fused kernel that cupy.fuse cannot compile falls back to the unfused function with a
# warning (backend.fused): here that warning fails the test that hit it
timeout "${TESTS_LIMIT:-170}" $PY -m pytest -q -o addopts="" -p no:cacheprovider -n "$WORKERS" -k cupy tests \
    -W "error:cupy.fuse could not compile:RuntimeWarning" \
    2>&1 | tee "$LOG/tests.txt" | tail -25

echo "tests: $((SECONDS - start)) s"
echo "== 3. the README's default training run on CuPy (shapes, 1500 iterations, then COCOeval)"
rm -rf /tmp/npmaskrcnn-gpu-run
start=$SECONDS
timeout "${TRAIN_LIMIT:-220}" $PY -c "import sys; from npmaskrcnn.cli import main; sys.exit(main())" \
    train --backend cupy --out /tmp/npmaskrcnn-gpu-run > "$LOG/train.txt" 2>&1
echo "train: exit $?, $((SECONDS - start)) s wall (data generation and evaluation included)"
tr '\r' '\n' < "$LOG/train.txt" | grep -v -E '^ *$' | grep -v -E 'it/s\]|s/it\]' | tail -30
