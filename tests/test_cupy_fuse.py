"""Every fused function of the package traces into *one* CuPy elementwise kernel.

``backend.fused`` runs a function through ``cupy.fuse`` on a GPU and, should CuPy fail to
fuse it, warns and runs it unfused (the step goes on, slower). Whether CuPy can fuse a
function is decided by tracing it, which needs only the arguments' dtypes and ranks: so
without a GPU, this runs CuPy's own tracer on the arguments every fused function receives
in a training step and in inference of the ``shapes()`` model (recorded on cpupy),
with CuPy arrays that stand on borrowed addresses and are never read. CuPy stops when it
would launch the kernel (no GPU), by then the kernel is built. Each must be one elementwise
kernel (not a reduction, not CuPy's fallback fusion) whose outputs have the dtypes NumPy
gives the same function, in float32 and in float64 (gradient checks).

What this cannot check is the CUDA compilation of the kernels: ``gpu_check.sh`` runs the
tests on CuPy with the fallback's warning made an error. On a machine with a GPU this
file is skipped (there the CuPy tests run the kernels for real).
"""

import functools

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from test_device_budget import load_bench  # noqa: E402 - bench_device's shapes batch

from npmaskrcnn import backend, cpupy  # noqa: E402
from npmaskrcnn.backend import cupy_available  # noqa: E402

pytestmark = pytest.mark.skipif(cupy_available(), reason="a GPU runs the fused kernels")


def signature(a):
    """What CuPy's tracer keys on: an array's dtype (and shape, for the stand-ins), or the
    scalar itself."""
    if type(a) is cpupy.ndarray:
        return ("array", a.dtype.str, a.shape)
    if isinstance(a, np.generic):
        return ("scalar", a.dtype.str)
    return ("python", a)


@pytest.fixture(scope="module")
def fused_calls():
    """{fused function: set of argument signatures} of a shapes() training step with SGD
    and of inference, recorded on cpupy."""
    from npmaskrcnn.config import shapes
    from npmaskrcnn.engine.optim import SGD
    from npmaskrcnn.engine.trainer import to_device
    from npmaskrcnn.model.mask_rcnn import MaskRCNN

    calls: dict = {}
    original = backend.fused.__call__

    def recording(self, *args):
        calls.setdefault(self, set()).add(tuple(signature(a) for a in args))
        return original(self, *args)

    images, targets = to_device(*load_bench().shapes_batch(), "cpupy")
    backend.fused.__call__ = recording
    try:
        model = MaskRCNN(shapes(num_classes=5), backend="cpupy")
        model(images, targets)
        model.backward()
        SGD(model, lr=0.01, momentum=0.9).step()
        model.eval().predict(images)
    finally:
        backend.fused.__call__ = original
    return calls


@pytest.fixture
def cupy_without_memory():
    """CuPy arrays on a borrowed address: enough for the tracer, which reads no data."""
    from cupy.cuda import memory

    def borrowed(size):
        return memory.MemoryPointer(memory.UnownedMemory(1 << 20, max(size, 1), None,
                                                         device_id=0), 0)

    previous = cupy.cuda.get_allocator()
    cupy.cuda.set_allocator(borrowed)
    yield lambda shape, dtype: cupy.ndarray(shape, dtype, borrowed(0))
    cupy.cuda.set_allocator(previous)


def arguments(args, array):
    """Arguments of the signatures ``args``: arrays made by ``array(shape, dtype)``, NumPy
    scalars of value 1, Python values as recorded."""
    return [array(s[2], np.dtype(s[1])) if s[0] == "array"
            else np.dtype(s[1]).type(1) if s[0] == "scalar" else s[1] for s in args]


def fused_kernel(fn, args, array):
    """The kernel ``cupy.fuse`` builds for ``fn(cupy, *args)``, as the package calls it, and
    its output dtypes; ``(None, why)`` where CuPy fell back to its other fusion (which the
    package never relies on) or refused the function."""
    fusion = cupy.fuse(kernel_name=fn.__name__)(functools.partial(fn, cupy))
    try:
        fusion(*arguments(args, array))
    except cupy.cuda.runtime.CUDARuntimeError:
        pass  # the launch, after the kernel was built: no GPU here
    except Exception as err:  # noqa: BLE001 - what CuPy refused is the answer
        return None, f"refused: {type(err).__name__}: {err}"
    if fusion.new_fusion is not None:
        return None, "CuPy fell back to its other fusion"
    (kernel, _), = fusion._memo.values()
    return kernel, [p.dtype for p in kernel.out_params]


def numpy_dtypes(fn, args):
    """The output dtypes of ``fn`` run as written on NumPy arrays of ``args``' signatures."""
    with np.errstate(all="ignore"):  # ones everywhere: zero widths in the box coder
        out = fn(np, *arguments(args, np.ones))
    return [np.asarray(o).dtype for o in (out if isinstance(out, tuple) else (out,))]


def in_float64(args):
    return tuple((s[0], "<f8", *s[2:]) if s[0] != "python" and s[1] == "<f4" else s
                 for s in args)


def test_every_fused_function_traces_into_one_elementwise_kernel(fused_calls,
                                                                  cupy_without_memory):
    names = sorted(f.__name__ for f in fused_calls)
    print(f"{len(names)} fused functions: {', '.join(names)}")
    assert len(names) >= 12  # GroupNorm's five, ReLU, IoU, the coder's two, bilinear, losses
    for f, signatures in fused_calls.items():
        for args in signatures:
            for case in (args, in_float64(args)):
                kernel, dtypes = fused_kernel(f.fn, case, cupy_without_memory)
                assert isinstance(kernel, cupy.ElementwiseKernel), (f.__name__, case, dtypes)
                assert dtypes == numpy_dtypes(f.fn, case), (f.__name__, case)


def test_the_check_refuses_what_cupy_does_not_fuse_into_one_elementwise_kernel(
        cupy_without_memory):
    x = (("array", "<f4", (3, 4)),)

    def total(xp, a):  # a reduction: one kernel, but a reduction kernel
        return (a * a).sum()

    def centred(xp, a):  # a reduction feeding elementwise work: not one kernel
        return a - a.sum()

    def sorted_(xp, a):  # no elementwise form at all
        return xp.sort(a)

    def doubled(xp, a):
        return (a * 2).astype(np.float32, copy=False)

    def halved(xp, a):
        return a * 0.5

    for fn in (total, centred, sorted_):
        kernel, why = fused_kernel(fn, x, cupy_without_memory)
        print(fn.__name__, type(kernel).__name__, why)
        assert not isinstance(kernel, cupy.ElementwiseKernel)
    kernel, dtypes = fused_kernel(doubled, x, cupy_without_memory)
    assert isinstance(kernel, cupy.ElementwiseKernel) and dtypes == [np.dtype(np.float32)]
    assert numpy_dtypes(doubled, x) == dtypes
    # a Python float is weak on both: float32 stays float32, float64 stays float64
    for case, dtype in ((x, np.float32), (in_float64(x), np.float64)):
        kernel, dtypes = fused_kernel(halved, case, cupy_without_memory)
        assert dtypes == numpy_dtypes(halved, case) == [np.dtype(dtype)]
