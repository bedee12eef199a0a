"""Speed of npmaskrcnn's detection ops against torchvision on the CPU (float32).

RoI ops: a 1x256x200x200 feature map (stride 4 of an 800x800 image, spatial_scale 1/4)
and 512 or 2000 random valid RoIs in the image (x1 < x2, y1 < y2: sorted uniform pairs,
fixed seed): roi_align 7x7 and 14x14 (sampling_ratio 2, aligned False and True) and
roi_pool 7x7, forward and forward+backward. Boxes: nms and batched_nms (5 groups) at IoU
0.7 on 1000, 5000 and 20000 boxes in an 800x1067 image, "uniform" (random boxes, almost
all kept) and "clustered" (about 50 jittered boxes around each object, RPN-like, most
suppressed), and batched_nms over 90 classes keeping the best 100 (detection's last step:
ours with ``top_k=100``, torchvision's full result cut to 100); box_iou 2000x50.

npmaskrcnn and torchvision are timed alternately in one process (a busy machine slows
both alike) and the minimum over ``--repeat`` runs is kept. Prints ms per call and, with
torchvision installed, its ms and the ratio ours/torchvision (< 1: we are faster).
The NMS rows are skipped when ``npmaskrcnn.boxes`` is not there yet.

Usage::

    python benchmarks/bench_ops.py                 # everything, 3 repeats, 2 threads
    python benchmarks/bench_ops.py --quick         # 1 repeat, 512 RoIs, 5000 boxes
    python benchmarks/bench_ops.py --only roi --repeat 5
    python benchmarks/bench_ops.py --only roi --match "roi_pool 7x7 R=512"
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

FEATURE_SHAPE = (1, 256, 200, 200)
IMAGE = 800
NMS_IMAGE = (800, 1067)  # (H, W)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="timed runs per case (min is kept)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 512 RoIs, 5000 boxes")
    p.add_argument("--threads", type=int, default=2, help="BLAS and torch threads")
    p.add_argument("--only", choices=("roi", "nms", "iou"), default=None)
    p.add_argument("--match", default="", help="only the RoI/NMS cases whose label has this")
    return p.parse_args(argv)


def _set_threads(n: int) -> None:
    """Fix both libraries' thread counts; must run before NumPy is imported."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def random_rois(rng, R: int):
    """(R, 5) float32 RoIs ``[0, x1, y1, x2, y2]`` inside the IMAGE x IMAGE image."""
    import numpy as np

    x = np.sort(rng.uniform(0, IMAGE, (R, 2)), axis=1)
    y = np.sort(rng.uniform(0, IMAGE, (R, 2)), axis=1)
    return np.stack([np.zeros(R), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).astype(np.float32)


def random_boxes(rng, n: int, kind: str):
    """(n, 4) float32 boxes and (n,) scores: uniform random, or ~50 jitters per object."""
    import numpy as np

    H, W = NMS_IMAGE
    if kind == "uniform":
        wh = rng.uniform(8, 128, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([W, H]) - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
    else:
        objects = max(n // 50, 1)
        wh = rng.uniform(32, 256, (objects, 2))
        xy = rng.uniform(0, 1, (objects, 2)) * (np.array([W, H]) - wh)
        centre = np.concatenate([xy, xy + wh], axis=1)[rng.integers(0, objects, n)]
        size = np.repeat(centre[:, 2:] - centre[:, :2], 2, axis=0).reshape(n, 4)
        boxes = centre + rng.normal(0, 0.06, (n, 4)) * size
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes.astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


def roi_cases(Rs):
    """(name, ours fwd, ours fwd+bwd, tv fwd, tv fwd+bwd) for every RoI case."""
    import numpy as np

    from npmaskrcnn.layers.roi_align import roi_align_backward, roi_align_forward
    from npmaskrcnn.layers.roi_pool import roi_pool_backward, roi_pool_forward

    rng = np.random.default_rng(0)
    x = rng.standard_normal(FEATURE_SHAPE, dtype=np.float32)
    specs = [("roi_align", 7, False), ("roi_align", 7, True), ("roi_align", 14, False),
             ("roi_align", 14, True), ("roi_pool", 7, None)]
    for R in Rs:
        rois = random_rois(rng, R)
        for op, size, aligned in specs:
            if op == "roi_align":
                args = (size, 0.25, 2, aligned)
                fwd, bwd, name = roi_align_forward, roi_align_backward, f"aligned={aligned}"
            else:
                args, fwd, bwd, name = (size, 0.25), roi_pool_forward, roi_pool_backward, ""
            dout = rng.standard_normal((R, FEATURE_SHAPE[1], size, size), dtype=np.float32)
            label = f"{op} {size}x{size} R={R} {name}".strip()
            yield (label,
                   lambda f=fwd, a=args, r=rois: f(x, r, *a),
                   lambda f=fwd, b=bwd, a=args, r=rois, d=dout: b(d, f(x, r, *a)[1]),
                   op, x, rois, args, dout)


def torch_roi(torch, op, x, rois, args, dout):
    """torchvision's (fwd, fwd+bwd) closures for one RoI case."""
    import torchvision.ops as tv_ops

    fn = tv_ops.roi_align if op == "roi_align" else tv_ops.roi_pool
    tx, trois, tdout = (torch.from_numpy(a) for a in (x, rois, dout))
    txg = tx.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            return fn(tx, trois, *args)

    def forward_backward():
        txg.grad = None
        fn(txg, trois, *args).backward(tdout)
        return txg.grad

    return forward, forward_backward


def best_of(fns, repeat: int) -> list:
    """Min ms of each function over ``repeat`` alternating runs, after one warm-up each."""
    for f in fns:
        f()
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def row(label: str, ours: float, theirs: float | None) -> str:
    if theirs is None:
        return f"{label:<48} {ours:10.1f} {'-':>10} {'-':>6}"
    return f"{label:<48} {ours:10.1f} {theirs:10.1f} {ours / theirs:6.2f}"


def run_roi(torch, repeat, Rs, match=""):
    print(f"{'RoI op (forward | forward+backward)':<48} {'ours ms':>10} {'tv ms':>10} "
          f"{'ratio':>6}")
    for label, fwd, fb, op, x, rois, args, dout in roi_cases(Rs):
        if match not in label:
            continue
        fns = [fwd, fb] + (list(torch_roi(torch, op, x, rois, args, dout)) if torch else [])
        t = best_of(fns, repeat)
        print(row(label + " fwd", t[0], t[2] if torch else None), flush=True)
        print(row(label + " f+b", t[1], t[3] if torch else None), flush=True)


def run_nms(torch, repeat, ns, match=""):
    import numpy as np

    try:
        from npmaskrcnn.boxes.nms import batched_nms, nms
    except ImportError as err:
        print(f"nms: skipped ({err})")
        return
    rng = np.random.default_rng(1)
    print(f"{'NMS at IoU 0.7 (kept by ours)':<48} {'ours ms':>10} {'tv ms':>10} {'ratio':>6}")
    for n in ns:
        for kind in ("uniform", "clustered"):
            boxes, scores = random_boxes(rng, n, kind)
            groups = rng.integers(0, 5, n)
            classes = rng.integers(1, 91, n)  # detection: 90 classes, the best 100 kept
            cases = [("nms", lambda b=boxes, s=scores: nms(b, s, 0.7)),
                     ("batched_nms", lambda b=boxes, s=scores, g=groups: batched_nms(b, s, g, 0.7)),
                     ("batched_nms top100", lambda b=boxes, s=scores, g=classes:
                      batched_nms(b, s, g, 0.7, top_k=100))]
            for name, ours in cases:
                if match not in f"{name} {kind} n={n}":
                    continue
                fns = [ours]
                if torch:
                    import torchvision.ops as tv_ops

                    tb, ts, tg, tc = (torch.from_numpy(a)
                                      for a in (boxes, scores, groups, classes))
                    if name == "nms":
                        fns.append(lambda b=tb, s=ts: tv_ops.nms(b, s, 0.7))
                    elif name == "batched_nms":
                        fns.append(lambda b=tb, s=ts, g=tg: tv_ops.batched_nms(b, s, g, 0.7))
                    else:  # torchvision decides every box, then the detector keeps 100
                        fns.append(lambda b=tb, s=ts, g=tc: tv_ops.batched_nms(b, s, g, 0.7)[:100])
                t = best_of(fns, repeat)
                label = f"{name} {kind} n={n} (kept {len(ours())})"
                print(row(label, t[0], t[1] if torch else None), flush=True)


def run_iou(torch, repeat):
    import numpy as np

    try:
        from npmaskrcnn.boxes.ops import box_iou
    except ImportError as err:
        print(f"box_iou: skipped ({err})")
        return
    rng = np.random.default_rng(2)
    a, _ = random_boxes(rng, 2000, "uniform")
    b, _ = random_boxes(rng, 50, "uniform")
    fns = [lambda: box_iou(a, b)]
    if torch:
        import torchvision.ops as tv_ops

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fns.append(lambda: tv_ops.box_iou(ta, tb))
    t = best_of(fns, repeat)
    print(row("box_iou 2000x50", t[0], t[1] if torch else None), flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    _set_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    try:
        import torch
        import torchvision  # noqa: F401  (registers the ops)

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    repeat = 1 if args.quick else args.repeat
    print(f"float32, {args.threads} threads, min of {repeat} alternating runs, ms per call; "
          f"ratio = ours / torchvision")
    if args.only in (None, "roi"):
        run_roi(torch, repeat, [512] if args.quick else [512, 2000], args.match)
    if args.only in (None, "nms"):
        run_nms(torch, repeat, [5000] if args.quick else [1000, 5000, 20000], args.match)
    if args.only in (None, "iou"):
        run_iou(torch, repeat)


if __name__ == "__main__":
    main()
