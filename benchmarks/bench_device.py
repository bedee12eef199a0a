"""What the model costs a GPU: kernel launches and host syncs counted, and wall time.

    python benchmarks/bench_device.py            # counts on the cpupy stand-in; GPU times if any
    python benchmarks/bench_device.py --quick    # fewer repeats (under 5 min on a GPU)
    python benchmarks/bench_device.py --quick --profile   # + the kernels the GPU ran (torch)
    python benchmarks/bench_device.py --count-only --trace 8   # + the busiest source lines

On a GPU, a step of small kernels is bound by how many kernels it launches (a few
microseconds each) and by how often the host waits for the device (a sync drains the
queue). Both are counted on ``cpupy``, the strict CPU stand-in for CuPy
(``npmaskrcnn/cpupy/``): deterministic, and runnable on any machine. ``ops`` ~ kernel
launches, ``syncs`` = reads of device data by the host, ``h2d`` = host-to-device copies.
Where CuPy sees a GPU, every case is also timed on it (first call apart: it includes
CuPy's kernel compilation) beside torchvision on CUDA on the same GPU. ``--profile`` then
runs one more call of each case under torch's profiler, which sees every kernel the GPU ran
(CuPy's and cuBLAS's too): how many there were against the stand-in's count, and how much
of the wall time the GPU was busy with them (the rest is the host: Python, CuPy's
dispatch, waits at syncs), so one run tells a launch-bound step from a kernel-bound one.

Cases (float32):

- ``shapes``: the ``shapes()`` preset's train step with SGD (4 images of 128 px), the
  README's default training; the batch is copied to the device in the step.
- ``train``: R50-FPN train step with SGD, 2 images of 512 px (as ``bench_model.py``).
- ``infer``: R50-FPN inference on one 800x1067 image, masks for 100 boxes.
- ``conv``: 3x3 conv 256->256 on 2x256x64x64, forward + backward.
- ``roi_align``: 7x7 RoIAlign of 512 RoIs on a 2x256x64x64 map, forward + backward.
- ``nms``: NMS of 5000 random boxes at IoU 0.5.

The budgets (``BUDGETS``) are asserted by ``tests/test_device_budget.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_model import make_batch  # noqa: E402

# case -> (max ops, max syncs) on the stand-in, asserted by tests/test_device_budget.py.
# The budgets of the GPU issue (12), counted strictly (a memset, a cast, a gather and each
# input of a concatenation are launches too); the shapes step needs ~1390 since GroupNorm's
# and the losses' elementwise steps are fused (backend.fused), ~1720 before.
BUDGETS = {"shapes": (1500, 25), "train": (2500, 30), "infer": (1500, 15)}
MODEL_CASES = ("shapes", "train", "infer")
OP_CASES = ("conv", "roi_align", "nms")


# ----------------------------------------------------------------------------- cases


def shapes_batch():
    """The ``shapes`` case's batch: 4 images of 128 px, labels 1..4 (the preset's 5 classes
    with the background), as NumPy arrays."""
    images, targets = make_batch(4, 128, 128)
    for t in targets:
        t["labels"] = t["labels"] % 4 + 1
    return images, targets


def build_ours(case: str, backend: str):
    """A zero-argument function running one step of ``case`` on ``backend``."""
    from npmaskrcnn.backend import to_backend
    from npmaskrcnn.config import r50_fpn, shapes
    from npmaskrcnn.engine.optim import SGD
    from npmaskrcnn.engine.trainer import to_device
    from npmaskrcnn.model.mask_rcnn import MaskRCNN

    if case in ("shapes", "train"):
        if case == "shapes":
            model = MaskRCNN(shapes(num_classes=5), backend=backend)
            images, targets = shapes_batch()
        else:
            cfg = r50_fpn()
            cfg.transform.min_size = cfg.transform.max_size = 512
            model = MaskRCNN(cfg, backend=backend)
            images, targets = make_batch(2, 512, 512)
        opt = SGD(model, lr=1e-4, momentum=0.9, weight_decay=1e-4)

        def step():
            model.zero_grad()
            model(*to_device(images, targets, backend))
            model.backward()
            opt.step()
        return step
    if case == "infer":
        cfg = r50_fpn()
        cfg.roi_heads.score_thresh = 0.0
        model = MaskRCNN(cfg, backend=backend).eval()
        images = [to_backend(im, backend) for im in make_batch(1, 800, 1067)[0]]

        def infer():
            out = model.predict(images)
            assert out[0]["boxes"].shape[0] == 100
        return infer
    rng = np.random.default_rng(0)
    if case == "conv":
        from npmaskrcnn.layers.conv import conv2d_backward, conv2d_forward

        x, w, b, d = (to_backend(rng.standard_normal(s).astype(np.float32), backend)
                      for s in ((2, 256, 64, 64), (256, 256, 3, 3), (256,), (2, 256, 64, 64)))

        def conv():
            out, cache = conv2d_forward(x, w, b, 1, 1)
            conv2d_backward(d, cache)
        return conv
    if case == "roi_align":
        from npmaskrcnn.layers.roi_align import roi_align_backward, roi_align_forward

        x = to_backend(rng.standard_normal((2, 256, 64, 64)).astype(np.float32), backend)
        rois = to_backend(random_rois(rng, 512, 2, 256.0), backend)
        d = to_backend(rng.standard_normal((512, 256, 7, 7)).astype(np.float32), backend)

        def roi_align():
            out, cache = roi_align_forward(x, rois, 7, 0.25, 2)
            roi_align_backward(d, cache)
        return roi_align
    if case == "nms":
        from npmaskrcnn.boxes.nms import nms

        boxes, scores = random_boxes(rng, 5000, 800.0)
        boxes, scores = to_backend(boxes, backend), to_backend(scores, backend)
        return lambda: nms(boxes, scores, 0.5)
    raise ValueError(f"unknown case {case!r}")


def random_rois(rng, n, images, size):
    """(n, 5) RoIs ``[batch, x1, y1, x2, y2]`` of 16..size/2 px inside a size x size image."""
    wh = rng.uniform(16, size / 2, (n, 2))
    xy = rng.uniform(0, size - wh)
    return np.concatenate([rng.integers(0, images, (n, 1)), xy, xy + wh], 1).astype(np.float32)


def random_boxes(rng, n, size):
    """(n, 4) boxes of 10..size/4 px and (n,) scores, as bench_ops' uniform case."""
    wh = rng.uniform(10, size / 4, (n, 2))
    xy = rng.uniform(0, size - wh)
    return (np.concatenate([xy, xy + wh], 1).astype(np.float32),
            rng.random(n).astype(np.float32))


def build_torch(case: str, device: str):
    """The same step in torchvision, on ``device``."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d, nms, roi_align

    def model(**kw):
        body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        return MaskRCNN(_resnet_fpn_extractor(body, trainable_layers=3), num_classes=91,
                        **kw).to(device)

    rng = np.random.default_rng(0)
    if case == "train":
        m = model(min_size=512, max_size=512).train()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4,
                              momentum=0.9, weight_decay=1e-4)
        images, targets = make_batch(2, 512, 512)

        def step():
            ims = [torch.from_numpy(i).to(device) for i in images]
            ts = [{k: torch.from_numpy(v).to(device) for k, v in t.items()} for t in targets]
            opt.zero_grad()
            sum(m(ims, ts).values()).backward()
            opt.step()
        return step
    if case == "infer":
        m = model(box_score_thresh=0.0).eval()
        images = [torch.from_numpy(i).to(device) for i in make_batch(1, 800, 1067)[0]]

        def infer():
            with torch.no_grad():
                assert len(m(images)[0]["boxes"]) == 100
        return infer
    if case == "conv":
        x = torch.randn(2, 256, 64, 64, device=device, requires_grad=True)
        w = torch.randn(256, 256, 3, 3, device=device, requires_grad=True)
        b = torch.randn(256, device=device, requires_grad=True)
        d = torch.randn(2, 256, 64, 64, device=device)
        return lambda: F.conv2d(x, w, b, 1, 1).backward(d)
    if case == "roi_align":
        x = torch.randn(2, 256, 64, 64, device=device, requires_grad=True)
        rois = torch.from_numpy(random_rois(rng, 512, 2, 256.0)).to(device)
        d = torch.randn(512, 256, 7, 7, device=device)
        return lambda: roi_align(x, rois, 7, 0.25, 2).backward(d)
    if case == "nms":
        boxes, scores = (torch.from_numpy(a).to(device) for a in random_boxes(rng, 5000, 800.0))
        return lambda: nms(boxes, scores, 0.5)
    return None  # "shapes": no torchvision counterpart


# ----------------------------------------------------------------------------- measuring


def count(case: str, trace: bool = False):
    """Ops, syncs and h2d copies of one step of ``case`` on the stand-in (after a warm-up
    step, so one-time work such as the first anchors is not counted)."""
    from npmaskrcnn import cpupy

    step = build_ours(case, "cpupy")
    step()
    with cpupy.counting(trace=trace) as c:
        step()
    return c


def wall_times(step, sync, repeat: int):
    """(first call, best, median) seconds, ``sync()`` after each call."""
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return first, min(times), float(np.median(times))


def kernel_table(events, device_type) -> dict:
    """{name: [calls, seconds]} of the profiler events that ran on ``device_type``."""
    table = {}
    for e in events:
        if e.device_type == device_type:
            row = table.setdefault(e.name, [0, 0.0])
            row[0] += 1
            row[1] += (e.time_range.end - e.time_range.start) / 1e6  # microseconds
    return table


def profile_kernels(step, sync):
    """The kernels one call of ``step`` ran on the GPU (``kernel_table``), read with torch's
    profiler: CUPTI records every kernel of the process, whichever library launched it.
    None where torch cannot profile CUDA (no torch, no CUDA, or no kernel seen)."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    return kernel_table(prof.events(), torch.autograd.DeviceType.CUDA) or None


def gpu_times(case: str, repeat: int, profile: bool = False):
    """Our CuPy times and torchvision's CUDA times for ``case`` (None where unavailable),
    and with ``profile`` our step's kernels (``profile_kernels``)."""
    import cupy

    step, sync = build_ours(case, "cupy"), cupy.cuda.Device().synchronize
    ours = wall_times(step, sync, repeat)
    kernels = profile_kernels(step, sync) if profile else None
    theirs = None
    try:
        import torch

        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = False
            tv_step = build_torch(case, "cuda")
            if tv_step is not None:
                theirs = wall_times(tv_step, torch.cuda.synchronize, repeat)
    except ImportError:
        pass
    return ours, theirs, kernels


def print_kernels(case: str, counted, wall: float, kernels, top: int = 5) -> None:
    """One row of ``--profile``: kernels seen against ops counted, busy time against wall."""
    if not kernels:
        print(f"{case:<10} no kernels seen (profiling needs torch with CUDA)")
        return
    n = sum(calls for calls, _ in kernels.values())
    busy = sum(seconds for _, seconds in kernels.values())
    print(f"{case:<10} {counted:>8} {n:>8} {1e3 * busy:>10.2f} {1e3 * wall:>8.2f} "
          f"{100 * busy / wall:>5.0f}%")
    for name, (calls, seconds) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"    {1e3 * seconds:>8.3f} ms {calls:>5}x  {name[:70]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(MODEL_CASES + OP_CASES),
                    choices=MODEL_CASES + OP_CASES)
    ap.add_argument("--quick", action="store_true", help="2 timed repeats instead of 5")
    ap.add_argument("--count-only", action="store_true", help="no GPU timing")
    ap.add_argument("--trace", type=int, default=0, metavar="N",
                    help="list the N source lines with the most ops and syncs per case")
    ap.add_argument("--profile", action="store_true",
                    help="on a GPU: the kernels of one call, from torch's profiler")
    a = ap.parse_args(argv)
    from npmaskrcnn.backend import cupy_available

    print("counted on the cpupy stand-in (one step after a warm-up step)")
    print(f"{'case':<10} {'ops':>7} {'syncs':>6} {'h2d':>5}   budget (ops / syncs)")
    counted = {}
    for case in a.cases:
        c = count(case, trace=a.trace > 0)
        counted[case] = c.ops
        budget = BUDGETS.get(case)
        verdict = ""
        if budget:
            ok = c.ops <= budget[0] and c.syncs <= budget[1]
            verdict = f"{budget[0]:>5} / {budget[1]:<3} {'ok' if ok else 'OVER'}"
        print(f"{case:<10} {c.ops:>7} {c.syncs:>6} {c.h2d:>5}   {verdict}", flush=True)
        for kind in ("ops", "syncs") if a.trace else ():
            for site, n in c.top_sites(kind, a.trace):
                print(f"    {kind:<5} {n:>6}  {site}")
    if a.count_only:
        return
    if not cupy_available():
        print("no GPU visible to CuPy: wall times skipped")
        return
    repeat = 2 if a.quick else 5
    print(f"\nGPU wall time, best of {repeat} after a first call (ms)")
    print(f"{'case':<10} {'first':>8} {'ours':>8} {'torchvision':>12} {'ratio':>6}")
    profiles = {}
    for case in a.cases:
        ours, theirs, kernels = gpu_times(case, repeat, a.profile)
        tv = f"{1e3 * theirs[1]:>12.2f}" if theirs else f"{'-':>12}"
        ratio = f"{ours[1] / theirs[1]:>6.2f}" if theirs else f"{'-':>6}"
        print(f"{case:<10} {1e3 * ours[0]:>8.1f} {1e3 * ours[1]:>8.2f} {tv} {ratio}", flush=True)
        profiles[case] = (kernels, ours[1])
    if not a.profile:
        return
    print("\nGPU kernels of one more call (torch's profiler): kernels seen against the ops "
          "counted\non the stand-in, and kernel time against the best wall time (busy)")
    print(f"{'case':<10} {'counted':>8} {'kernels':>8} {'kernel ms':>10} {'wall ms':>8} "
          f"{'busy':>6}")
    for case, (kernels, wall) in profiles.items():
        print_kernels(case, counted[case], wall, kernels)


if __name__ == "__main__":
    main()
