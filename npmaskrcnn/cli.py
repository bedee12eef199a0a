"""The ``npmaskrcnn`` command line.

    npmaskrcnn make-shapes  OUT_DIR            generate the synthetic shapes data (COCO format)
    npmaskrcnn coco-subset  ANN OUT            a small COCO JSON: chosen categories, N images
    npmaskrcnn train        [--ann --images]   train (default: fresh shapes data, shapes preset)
    npmaskrcnn eval         CHECKPOINT ...     COCOeval bbox + segm on a COCO dataset
    npmaskrcnn predict      CHECKPOINT IMAGES  PNGs with masks drawn + detections JSON
    npmaskrcnn ablate       [--quick|--full]   the RoIAlign vs RoIPool ablation (Table 2)

Every subcommand takes ``--backend numpy|cupy``; ``npmaskrcnn SUBCOMMAND --help``
explains the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import backend as B
from .config import PRESETS, MaskRCNNConfig


def _add_backend(p):
    p.add_argument("--backend", choices=B.BACKENDS, default=None,
                   help="array backend (default: $NPMASKRCNN_BACKEND or numpy)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npmaskrcnn", description="Mask R-CNN from scratch in NumPy/CuPy.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-shapes", help="generate the synthetic shapes dataset",
                       description="Write PNG images and a COCO instances JSON of random "
                                   "squares, circles, triangles, rings and crosses.")
    p.add_argument("out_dir")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--split", default="train")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("coco-subset", help="write a small COCO subset JSON",
                       description="Keep only the chosen categories and at most N images "
                                   "(seeded choice) of a COCO annotation file.")
    p.add_argument("ann_file")
    p.add_argument("out_file")
    p.add_argument("--categories", nargs="*", default=None, help="names or ids (default all)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train Mask R-CNN",
                       description="Train on a COCO-format dataset (--ann/--images); with no "
                                   "dataset, generate shapes data and train the shapes preset, "
                                   "then evaluate on a held-out generated split.")
    p.add_argument("--ann", help="COCO annotation JSON (default: generated shapes)")
    p.add_argument("--images", help="image folder of --ann")
    p.add_argument("--val-ann")
    p.add_argument("--val-images")
    p.add_argument("--preset", choices=sorted(PRESETS), default="shapes")
    p.add_argument("--image-size", type=int, default=None,
                   help="size of the generated shapes images (default 128), and the model's "
                   "resize when --input-size is not given")
    p.add_argument("--input-size", type=int, default=None,
                   help="the model's resize: short and long side of the images it sees "
                   "(default: 1.5 x --image-size for generated shapes, 192 px, as Mask R-CNN "
                   "upsamples COCO images to 800; with --ann, --image-size or the preset's)")
    p.add_argument("--out", default="runs/shapes", help="run directory (checkpoints, logs)")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="*", default=None,
                   help="lr x0.1 at these iterations (default: 80%% and 93%% of --iters)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--num-train", type=int, default=400, help="generated shapes images")
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--clip-grad-norm", type=float, default=10.0)
    _add_backend(p)

    p = sub.add_parser("eval", help="COCOeval a checkpoint on a COCO-format dataset")
    p.add_argument("checkpoint")
    p.add_argument("--ann", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", default=None, help="write detections.json and metrics.json here")
    p.add_argument("--per-category", action="store_true")
    _add_backend(p)

    sub.add_parser("ablate", help="the RoIAlign vs RoIPool ablation (paper Table 2)",
                   add_help=False, description="Runs npmaskrcnn.engine.ablation; "
                   "'npmaskrcnn ablate --help' lists its options.")

    p = sub.add_parser("predict", help="draw predicted masks on images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="predictions")
    p.add_argument("--score-thresh", type=float, default=0.5)
    _add_backend(p)
    return parser


def load_model(checkpoint: str, backend=None):
    """A ``MaskRCNN`` rebuilt from a checkpoint's config and weights, and its meta."""
    from .engine.checkpoint import load_checkpoint, read_meta
    from .model.mask_rcnn import MaskRCNN

    meta = read_meta(checkpoint)
    model = MaskRCNN(MaskRCNNConfig.from_dict(meta["model_config"]), backend=backend)
    load_checkpoint(checkpoint, model)
    return model.eval(), meta


def cmd_make_shapes(a):
    from .data.shapes import make_shapes_dataset

    path = make_shapes_dataset(a.out_dir, a.num_images, image_size=a.image_size, seed=a.seed,
                               split_name=a.split)
    print(f"wrote {a.num_images} images and {path}")


def cmd_coco_subset(a):
    from .data.coco import make_coco_subset

    stats = make_coco_subset(a.ann_file, a.out_file, categories=a.categories,
                             max_images=a.max_images, seed=a.seed)
    print(json.dumps(stats, indent=1, default=str))


def cmd_train(a):
    from .data.coco import CocoDataset
    from .data.shapes import make_shapes_dataset, shapes_paths
    from .engine.evaluate import evaluate, format_summary
    from .engine.trainer import TrainConfig, Trainer
    from .model.mask_rcnn import MaskRCNN

    out = Path(a.out)
    if a.ann:
        if not a.images:
            raise SystemExit("npmaskrcnn train: --ann needs --images")
        train_set = CocoDataset(a.ann, a.images, skip_empty=True)
        val_ann, val_images = a.val_ann, a.val_images
    else:
        size = a.image_size or 128
        data = out / "data"
        for split, n in (("train", a.num_train), ("val", a.num_val)):
            ann_file, _ = shapes_paths(data, split)
            if not ann_file.exists():
                print(f"generating {n} {split} shapes images in {data}")
                make_shapes_dataset(data, n, image_size=size, seed=a.seed, split_name=split)
        ann_file, image_dir = shapes_paths(data, "train")
        train_set = CocoDataset(ann_file, image_dir)
        val_ann, val_images = (str(p) for p in shapes_paths(data, "val"))
    cfg = PRESETS[a.preset](num_classes=train_set.num_classes)
    # Shapes are drawn at 128 px; the model sees them at 1.5x, so that a small object
    # covers more cells of the stride-4 P2 map its mask is pooled from: on the validation
    # shapes, mask AP 0.55 after 1500 iterations at 128 px, 0.60 after 3000, 0.63 after
    # 1500 at 192 px (about the time of 3000 at 128 px).
    size = a.input_size or (a.image_size if a.ann else int(1.5 * (a.image_size or 128)))
    if size:
        cfg.transform.min_size = cfg.transform.max_size = size
    cfg.seed = a.seed
    model = MaskRCNN(cfg, backend=a.backend)
    steps = tuple(a.steps) if a.steps is not None else (int(0.8 * a.iters), int(0.93 * a.iters))
    tcfg = TrainConfig(iters=a.iters, batch_size=a.batch_size, lr=a.lr, warmup_iters=a.warmup,
                       steps=steps, checkpoint_every=a.checkpoint_every, seed=a.seed,
                       clip_grad_norm=a.clip_grad_norm)
    trainer = Trainer(model, train_set, tcfg, str(out), backend=a.backend,
                      extra_meta={"class_names": train_set.class_names,
                                  "contiguous_to_cat_id": {str(k): v for k, v in
                                                           train_set.contiguous_to_cat_id.items()}})
    t0 = time.perf_counter()
    trainer.train(resume=a.resume)
    print(f"trained {a.iters} iterations in {time.perf_counter() - t0:.0f} s; "
          f"checkpoint {trainer.checkpoint_path}")
    if a.no_eval or not val_ann:
        return
    val_set = CocoDataset(val_ann, val_images)
    metrics = evaluate(model, val_set, out_dir=str(out / "eval"))
    print(format_summary(metrics))
    _save_examples(model, val_set, out / "examples", n=6)


def _save_examples(model, dataset, out_dir: Path, n: int = 6, score_thresh: float = 0.5):
    from .visualize import show_gt_vs_pred

    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, len(dataset))):
        image, target = dataset[i]
        pred = model.predict([B.to_backend(image)])[0]
        pred = {k: B.asnumpy(v) for k, v in pred.items()}
        show_gt_vs_pred(image, target, pred, dataset.class_names,
                        path=str(out_dir / f"example_{i}.png"))
    print(f"example predictions drawn in {out_dir}")


def cmd_eval(a):
    from .data.coco import CocoDataset
    from .engine.evaluate import evaluate, format_summary

    model, meta = load_model(a.checkpoint, a.backend)
    dataset = CocoDataset(a.ann, a.images)
    if meta.get("class_names") and meta["class_names"] != dataset.class_names:
        raise SystemExit(f"npmaskrcnn eval: {a.ann} has classes {dataset.class_names[1:]} but "
                         f"{a.checkpoint} was trained on {meta['class_names'][1:]}")
    metrics = evaluate(model, dataset, out_dir=a.out, per_category=a.per_category)
    print(format_summary(metrics))


def cmd_predict(a):
    from PIL import Image, UnidentifiedImageError

    from .visualize import show_prediction

    model, meta = load_model(a.checkpoint, a.backend)
    names = meta.get("class_names") or [str(i) for i in range(model.cfg.num_classes)]
    os.makedirs(a.out, exist_ok=True)
    results = []
    for path in a.images:
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        except (OSError, UnidentifiedImageError) as err:
            raise SystemExit(f"npmaskrcnn predict: cannot read image {path}: {err}") from err
        pred = {k: B.asnumpy(v) for k, v in model.predict([B.to_backend(image)])[0].items()}
        stem = Path(path).stem
        show_prediction(image, pred, names, path=os.path.join(a.out, f"{stem}.png"),
                        score_thresh=a.score_thresh)
        keep = pred["scores"] >= a.score_thresh
        results.append({"image": str(path), "detections": [
            {"label": names[int(lb)], "score": float(s), "box": [float(v) for v in b],
             "mask_area": int((m >= 0.5).sum())}
            for b, lb, s, m in zip(pred["boxes"][keep], pred["labels"][keep],
                                   pred["scores"][keep], pred["masks"][keep])]})
    with open(os.path.join(a.out, "detections.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {len(results)} drawings and detections.json to {a.out}")


COMMANDS = {"make-shapes": cmd_make_shapes, "coco-subset": cmd_coco_subset,
            "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ablate"]:  # its own parser: all remaining options are the ablation's
        from .engine.ablation import main as ablate_main

        return ablate_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    if getattr(args, "backend", None):
        try:
            B.set_backend(args.backend)
        except B.BackendError as err:
            raise SystemExit(f"npmaskrcnn: {err}") from err
    COMMANDS[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
