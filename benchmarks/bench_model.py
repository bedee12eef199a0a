"""Whole-model speed: npmaskrcnn's Mask R-CNN vs torchvision's, configured alike.

    python benchmarks/bench_model.py            # both, side by side (torch if installed)
    python benchmarks/bench_model.py --quick    # fewer repeats

Cases (float32, default threads):

- train step: forward + backward + SGD update on a batch of two 512x512 images with
  three objects each; ResNet-50-FPN with FrozenBN, stem and layer1 frozen; 91 classes;
  512 RoIs per image, 2000/2000 RPN proposals (torchvision's training defaults).
- inference: one 800x1067 image (resized to 800x1067 -> padded 800x1088), the mask head
  on 100 boxes (score threshold 0 so that 100 detections survive on random weights).
- the ``shapes()`` preset's train step (batch 4, 128x128), ours only.
- sgemm: one 2048x2048 @ 2048x2048 float32 matrix product, NumPy's ``@`` against torch's.
  Not a model case: it says how fast each framework's BLAS is on this CPU (NumPy's wheel
  ships OpenBLAS, torch's MKL and oneDNN), which moves the model ratios from one machine
  to another: our time is mostly GEMMs (``conv_fast.py``).

Each framework runs in its own subprocess so that peak RSS (``ru_maxrss``) is its own.
Ours keeps freed memory for reuse (``npmaskrcnn.engine.memory.keep_freed_memory``, as its
Trainer and command line do); torch runs with glibc's defaults, as its users get it. The
same settings for both (torch gains as much from them):

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python benchmarks/bench_model.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def make_batch(n, h, w, seed=0):
    """n images (3,h,w) in [0,1] with three rectangles each, and their targets."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        img = rng.random((3, h, w), dtype=np.float32)
        boxes, masks = [], []
        for _ in range(3):
            bw, bh = rng.integers(w // 8, w // 3), rng.integers(h // 8, h // 3)
            x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            m = np.zeros((h, w), np.uint8)
            m[y0:y0 + bh, x0:x0 + bw] = 1
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            masks.append(m)
        images.append(img)
        targets.append({"boxes": np.array(boxes, np.float32),
                        "labels": rng.integers(1, 91, 3).astype(np.int64),
                        "masks": np.stack(masks)})
    return images, targets


def timeit(fn, repeat):
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


SGEMM_SIZE = 2048


def sgemm_operands(seed=0):
    """The two (SGEMM_SIZE, SGEMM_SIZE) float32 operands of the sgemm case."""
    rng = np.random.default_rng(seed)
    return [rng.random((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32) for _ in range(2)]


def run_ours(case, repeat):
    from npmaskrcnn.config import r50_fpn, shapes
    from npmaskrcnn.engine.optim import SGD
    from npmaskrcnn.model.mask_rcnn import MaskRCNN

    if case == "train":
        cfg = r50_fpn()
        cfg.transform.min_size = cfg.transform.max_size = 512
        model = MaskRCNN(cfg)
        opt = SGD(model, lr=1e-4, momentum=0.9, weight_decay=1e-4)
        images, targets = make_batch(2, 512, 512)

        def step():
            model.zero_grad()
            model(images, targets)
            model.backward()
            opt.step()
        return timeit(step, repeat)
    if case == "infer":
        cfg = r50_fpn()
        cfg.roi_heads.score_thresh = 0.0
        model = MaskRCNN(cfg).eval()
        images, _ = make_batch(1, 800, 1067)
        out = {}

        def infer():
            out["d"] = model.predict(images)
        t = timeit(infer, repeat)
        assert len(out["d"][0]["boxes"]) == 100, len(out["d"][0]["boxes"])
        return t
    if case == "sgemm":
        a, b = sgemm_operands()
        return timeit(lambda: a @ b, repeat)
    if case == "shapes":
        model = MaskRCNN(shapes(num_classes=5))
        opt = SGD(model, lr=1e-4, momentum=0.9)
        images, targets = make_batch(4, 128, 128)
        for t in targets:
            t["labels"] = t["labels"] % 4 + 1

        def step():
            model.zero_grad()
            model(images, targets)
            model.backward()
            opt.step()
        return timeit(step, repeat)
    raise ValueError(case)


def run_torch(case, repeat):
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    def build(**kw):
        body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(body, trainable_layers=3)
        return MaskRCNN(backbone, num_classes=91, **kw)

    if case == "train":
        model = build(min_size=512, max_size=512).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                              momentum=0.9, weight_decay=1e-4)
        images, targets = make_batch(2, 512, 512)
        images = [torch.from_numpy(i) for i in images]
        targets = [{"boxes": torch.from_numpy(t["boxes"]),
                    "labels": torch.from_numpy(t["labels"]),
                    "masks": torch.from_numpy(t["masks"])} for t in targets]

        def step():
            opt.zero_grad()
            losses = model(images, targets)
            sum(losses.values()).backward()
            opt.step()
        return timeit(step, repeat)
    if case == "infer":
        model = build(box_score_thresh=0.0).eval()
        images, _ = make_batch(1, 800, 1067)
        images = [torch.from_numpy(i) for i in images]
        out = {}

        def infer():
            with torch.no_grad():
                out["d"] = model(images)
        t = timeit(infer, repeat)
        assert len(out["d"][0]["boxes"]) == 100
        return t
    if case == "sgemm":
        a, b = (torch.from_numpy(m) for m in sgemm_operands())
        return timeit(lambda: a @ b, repeat)
    raise ValueError(case)


def child(framework, case, repeat):
    if framework == "npmaskrcnn":  # as npmaskrcnn's Trainer and command line do; torch
        # runs with glibc's defaults, as it does for its users (the docstring says how to
        # give it the same settings)
        from npmaskrcnn.engine.memory import keep_freed_memory

        keep_freed_memory()
    fn = run_ours if framework == "npmaskrcnn" else run_torch
    best, median = fn(case, repeat)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"best": best, "median": median, "rss_mb": rss_mb}))


def spawn(framework, case, repeat):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", framework, case,
           "--repeat", str(repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(f"  {framework} {case} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one timed repeat")
    ap.add_argument("--cases", nargs="*", default=["train", "infer", "shapes", "sgemm"])
    ap.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "CASE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    repeat = 1 if a.quick else a.repeat
    if a.child:
        return child(a.child[0], a.child[1], repeat)
    try:
        import torchvision  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"{'case':<10} {'npmaskrcnn s':>13} {'torchvision s':>14} {'ratio':>7} "
          f"{'ours RSS MB':>12} {'tv RSS MB':>10}")
    for case in a.cases:
        ours = spawn("npmaskrcnn", case, repeat)
        theirs = spawn("torch", case, repeat) if have_torch and case != "shapes" else None
        if ours is None:
            continue
        ratio = f"{ours['best'] / theirs['best']:.2f}" if theirs else "-"
        tv_s = f"{theirs['best']:.3f}" if theirs else "-"
        tv_rss = f"{theirs['rss_mb']:.0f}" if theirs else "-"
        print(f"{case:<10} {ours['best']:>13.3f} {tv_s:>14} {ratio:>7} "
              f"{ours['rss_mb']:>12.0f} {tv_rss:>10}", flush=True)


if __name__ == "__main__":
    main()
