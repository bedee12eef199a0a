"""The strict CPU stand-in for CuPy: CuPy's boundary rules, and honest counts."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from npmaskrcnn import cpupy as cp  # noqa: E402
from npmaskrcnn.backend import asnumpy, fused, get_xp, scatter_add, to_backend  # noqa: E402


@pytest.fixture
def a():
    return cp.asarray([1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- refusals


def test_no_implicit_conversion_to_numpy(a):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([a, a])


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h,
    lambda a, h: h + a,
    lambda a, h: a * h[0:3],
    lambda a, h: np.maximum(a, h),
    lambda a, h: cp.maximum(a, h),
    lambda a, h: cp.concatenate([a, h]),
    lambda a, h: np.concatenate([a, h]),
    lambda a, h: cp.where(a > 1, h, a),
    lambda a, h: a.__setitem__(slice(None), h),
], ids=["add", "radd", "mul-view", "np-ufunc", "cp-ufunc", "cp-func", "np-func", "where",
        "setitem"])
def test_host_arrays_never_mix_with_device_arrays(a, mix):
    with pytest.raises(TypeError, match="Unsupported type"):
        mix(a, np.ones(3))


def test_host_libraries_refuse_device_arrays(a):
    with pytest.raises(TypeError, match="Implicit conversion"):
        plt.plot(a)
    plt.close("all")
    mask_utils = pytest.importorskip("pycocotools.mask")
    with pytest.raises(TypeError):
        mask_utils.encode(cp.zeros((4, 4, 1), dtype=np.uint8))


def test_numpy_only_functions_are_missing():
    with pytest.raises(AttributeError, match="no attribute 'fancy_numpy_only'"):
        cp.fancy_numpy_only  # noqa: B018
    assert not hasattr(cp, "random")  # seeded draws go through backend.Generator


def test_host_indices_and_scalars_are_accepted(a):
    np.testing.assert_array_equal(asnumpy(a[np.array([2, 0])]), [3.0, 1.0])
    np.testing.assert_array_equal(asnumpy(a[[1, 1]]), [2.0, 2.0])
    np.testing.assert_array_equal(asnumpy(a * np.float32(2) + 1), [3.0, 5.0, 7.0])


# ----------------------------------------------------------------------------- semantics


def test_results_stay_on_the_device(a):
    total = a.sum()
    assert type(total) is cp.ndarray and total.shape == ()
    assert type(a[0]) is cp.ndarray and a[0].shape == ()
    assert type(np.exp(a)) is cp.ndarray  # NumPy's ufuncs dispatch to the stand-in
    assert type(np.concatenate([a, a])) is cp.ndarray
    assert get_xp(a) is cp and get_xp(np.ones(2), a) is cp


def test_in_place_and_views_share_memory(a):
    v = a.reshape(3, 1)
    v += 1  # a view: writes through
    np.testing.assert_array_equal(asnumpy(a), [2.0, 3.0, 4.0])
    a[0] += 10  # 0-d view, as CuPy's
    assert float(a[0]) == 12.0
    assert cp.ascontiguousarray(a) is a


def test_moving_between_backends():
    h = np.arange(6.0).reshape(2, 3)
    d = to_backend(h, "cpupy")
    assert type(d) is cp.ndarray
    np.testing.assert_array_equal(asnumpy(d), h)
    assert type(to_backend(d, "numpy")) is np.ndarray
    t = cp.zeros(4)
    scatter_add(t, cp.asarray([0, 2, 2]), cp.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(asnumpy(t), [1.0, 0.0, 5.0, 0.0])


# ----------------------------------------------------------------------------- counting


def test_counts_launches_not_views(a):
    with cp.counting() as c:
        v = a.reshape(3, 1).T[:, 1:]  # views: no kernel
        cp.lib.stride_tricks.as_strided(a, (2,), (8,))
        cp.empty((100,))
        assert c.ops == 0
        y = a * 2  # 1
        y += a  # 1
        z = y.sum()  # 1
        cp.zeros(3)  # 1: a memset
        a[cp.asarray([0, 1])]  # 1 gather (+ 1 h2d for the index)
        a[0:2] = v[0]  # 1 copy
    assert (c.ops, c.syncs, c.h2d) == (6, 0, 1)
    assert type(z) is cp.ndarray


def test_counts_every_host_sync(a):
    with cp.counting() as c:
        bool(a[0] > 0)
        int(a[0])
        float(a.max())
        a.max().item()
        a.tolist()
        a.get()
        a[a > 1]  # boolean mask: its size is read back
        cp.nonzero(a > 1)
        cp.flatnonzero(a)
        a[a > 1] = 0  # a masked write reads the count too
        cp.repeat(a, cp.asarray([1, 2, 0]))  # data-dependent output size
        range(cp.asarray(2))  # __index__
    assert c.syncs == 12


def test_counting_nests_and_traces(a):
    with cp.counting(trace=True) as outer:
        a + 1
        with cp.counting() as inner:
            a * 2
            a * 3
        float(a[0])
    assert inner.ops == 2 and outer.ops == 3 and outer.syncs == 1
    sites = dict(outer.top_sites("ops"))
    assert len(sites) == 3 and all("test_cpupy.py" in s for s in sites)
    assert sum(sites.values()) == 3


def test_a_sequence_is_not_assigned_into_a_device_array():
    # CuPy reads a list as a host array and refuses it (the GPU-only failure of the keypoint
    # loss test on 2026-12-04); a device array or a scalar is assigned as in NumPy.
    a = cp.zeros(5)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[:3] = [1.0, 2.0, 3.0]
    a[:3] = cp.asarray([1.0, 2.0, 3.0])
    a[3:] = 7.0
    assert asnumpy(a).tolist() == [1.0, 2.0, 3.0, 7.0, 7.0]


# ----------------------------------------------------------------------------- kernel fusion


@fused
def _axpy_and_sign(xp, a, x, y):
    z = a * x + y
    return z, xp.where(z > 0, 1.0, -1.0)


def test_a_fused_function_is_one_launch_with_numpy_results():
    x, y = np.linspace(-1.0, 1.0, 12).reshape(3, 4), np.arange(4.0)
    expected = _axpy_and_sign(2.0, x, y)  # NumPy: the function as written
    assert np.allclose(expected[0], 2.0 * x + y)
    dx, dy = cp.asarray(x), cp.asarray(y)
    with cp.counting(trace=True) as c:
        z, s = _axpy_and_sign(2.0, dx, dy)  # four operators, one kernel
    print(f"fused: {c.ops} op(s); unfused the same line is 4")
    assert c.ops == 1 and c.syncs == 0
    assert get_xp(z) is cp and z.shape == (3, 4)
    np.testing.assert_array_equal(asnumpy(z), expected[0])
    np.testing.assert_array_equal(asnumpy(s), expected[1])
    (site, _), = c.top_sites("ops")
    assert "test_cpupy.py" in site  # the caller's line, not backend.py's


def test_fusion_refuses_what_a_fused_kernel_cannot_do():
    @fused
    def total(xp, x):  # a reduction: not elementwise
        return x.sum(axis=0)

    with pytest.raises(ValueError, match="a fused kernel is elementwise"):
        total(cp.ones((3, 2)))
    with pytest.raises(TypeError, match="Unsupported type"):
        _axpy_and_sign(1.0, cp.ones(3), np.ones(3))  # a host array mixed in
    # refused even where the output keeps the broadcast shape: a reduction, an index,
    # a reshape or a transpose is not one elementwise kernel
    x = cp.ones((3, 3))
    for body in (lambda xp, a: a - a.mean(axis=1, keepdims=True),
                 lambda xp, a: a - xp.add.reduce(a, axis=0, keepdims=True),
                 lambda xp, a: a[::-1] * 2, lambda xp, a: a.reshape(3, 3) + 1,
                 lambda xp, a: a.T + a):
        with pytest.raises(ValueError, match="a fused kernel is elementwise"):
            fused(body)(x)
    ok = fused(lambda xp, a: xp.where(a > 0, xp.exp(a), 0).astype(np.float32) * 2)(x)
    assert ok.dtype == np.float32 and float(ok.sum()) == pytest.approx(18 * np.e, rel=1e-6)
    out = cp.fuse(lambda x: x)(cp.ones(2))  # an input returned is copied, as a kernel writes
    with cp.counting() as c:
        z = cp.fuse(lambda x, y: x + y)(1.0, 2.0)  # no device array: runs as written
    assert z == 3.0 and c.ops == 0 and get_xp(out) is cp


def test_backend_helpers_leave_their_events_to_the_caller():
    """A sync made through ``backend.asnumpy`` (or an op through ``scatter_add`` or
    ``to_backend``) is traced to the line that called it, as a fused call's is."""
    a = cp.ones(4)
    with cp.counting(trace=True) as c:
        asnumpy(a)
        scatter_add(a, cp.asarray(np.array([0, 0])), cp.ones(2))
        to_backend(np.ones(2), "cpupy")
    sites = [site for (kind, site), _ in c.sites.items()]
    print(sites)
    assert sites and all("test_cpupy.py" in site for site in sites)
