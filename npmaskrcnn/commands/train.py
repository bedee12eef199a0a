"""``npmaskrcnn train``: check everything that can be checked, then train, evaluate, draw.

In order, before the first iteration: the run directory (:mod:`npmaskrcnn.engine.rundir`:
a run there is continued only with ``--resume``, started again only with ``--overwrite``),
the data (the COCO files and image folders, or generated shapes or stick figures, reused
only when made with the settings asked for), the model against the data (a keypoint preset
needs keypoints; keypoints a mask preset would not train are counted in a warning),
``--weights``, the validation set and its classes, the model's input size, and on
``--resume`` the checkpoint (readable, same model configuration, same classes; changed
training settings are printed). So a mistake costs seconds, not a training run.

Without ``--ann`` the data is generated (``--data shapes``, the default, or ``--data
figures``, the stick-figure person keypoints) and the defaults of ``--preset``,
``--image-size``, ``--input-size``, ``--num-train``, ``--num-val`` and ``--iters`` are that
data's (``engine.rundir.GENERATED``).

``--resume`` takes every option the run was started with from the checkpoint (its
``options``), so ``npmaskrcnn train --out DIR --resume`` is enough; options typed again
override them (a new ``--lr`` or ``--iters``; a new ``--image-size`` is refused, as it
changes the model).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from .. import backend as B
from ..config import PRESETS
from ..data.coco import DatasetWarning
from ..engine.rundir import GENERATED
from .common import MIN_INPUT_SIZE, CommandError, command_line, elapsed, plural, refuse_file

# options that are not the run's: they come from the command line of each invocation
NOT_INHERITED = ("resume", "overwrite", "debug", "backend", "out", "command", "argv")
PATH_OPTIONS = ("ann", "images", "val_ann", "val_images", "weights")


def run_options(a) -> dict:
    """The options a run is started with, as stored in its checkpoints (paths absolute, so
    that a resume from another folder finds the same files)."""
    options = {k: v for k, v in vars(a).items() if k not in NOT_INHERITED}
    for key in PATH_OPTIONS:
        if options.get(key):
            options[key] = str(Path(options[key]).resolve())
    return options


def resume_options(parser, a):
    """``a`` with every option not typed on this command line taken from the options stored
    in ``--out``'s checkpoint (unchanged when there is none: the command then says so)."""
    from ..engine.checkpoint import read_meta

    checkpoint = Path(a.out) / "checkpoint.npz"
    if not checkpoint.is_file():
        return a
    stored = read_meta(str(checkpoint)).get("options")
    if not isinstance(stored, dict):
        return a
    stored.setdefault("optimizer", "sgd")  # a run started before --optimizer trained with SGD
    # argparse leaves alone every attribute the namespace already has, unless the option is
    # typed: the stored options become the defaults of this parse
    namespace = argparse.Namespace(**{k: v for k, v in stored.items() if k not in NOT_INHERITED})
    merged = parser.command_parsers["train"].parse_args(a.argv[1:], namespace=namespace)
    merged.command, merged.argv = a.command, a.argv
    return merged


def optimizer_settings(a, generated=None) -> dict:
    """The optimiser, learning rate and weight decay of this run: the options given, else
    the generated data's optimiser (SGD with ``--ann``) with its own defaults
    (``optim.OPTIMIZERS``), the learning rate the generated data chose for it."""
    from ..engine.optim import OPTIMIZERS

    optimizer = a.optimizer or (generated.optimizer if generated else "sgd")
    _, lr, weight_decay = OPTIMIZERS[optimizer]
    if generated is not None and generated.lr and optimizer == generated.optimizer:
        lr = generated.lr
    return {"optimizer": optimizer, "lr": a.lr or lr,
            "weight_decay": weight_decay if a.weight_decay is None else a.weight_decay}


def settings(a) -> dict:
    """The data, preset, sizes, image counts, iterations and optimiser of this run: the
    options given, and for the others the defaults of the generated data (``GENERATED``),
    or with ``--ann`` the shapes preset, the preset's own resize, 1500 iterations and SGD."""
    from ..engine.rundir import GENERATED

    if a.ann:
        return {"data": None, "preset": a.preset or "shapes", "image_size": a.image_size,
                "input_size": a.input_size or a.image_size, "iters": a.iters or 1500,
                **optimizer_settings(a)}
    g = GENERATED[a.data or "shapes"]
    image_size = a.image_size or g.image_size
    # Shapes are drawn at 128 px; the model sees them at 1.5x, so that a small object
    # covers more cells of the stride-4 P2 map its mask is pooled from: on the validation
    # shapes, mask AP 0.55 after 1500 iterations at 128 px, 0.60 after 3000, 0.63 after
    # 1500 at 192 px (about the time of 3000 at 128 px). The stick figures: see the README.
    return {"data": a.data or "shapes", "preset": a.preset or g.preset,
            "image_size": image_size, "input_size": a.input_size or int(g.scale * image_size),
            "num_train": a.num_train or g.num_train, "num_val": a.num_val or g.num_val,
            "iters": a.iters or g.iters, **optimizer_settings(a, g)}


def _generated_data(a, out: Path, kind: str, size: int, num_train: int, num_val: int):
    """(train set, val ann, val images) of generated data ``kind`` in ``out/data``, generated
    when missing or made with other settings; a resumed run refuses other training data."""
    from ..data.coco import CocoDataset
    from ..engine.rundir import GENERATED, data_to_make, wanted_data

    data, g = out / "data", GENERATED[kind]
    for split, n in (("train", num_train), ("val", num_val)):
        ann_file, image_dir = g.paths(data, split)
        make, differences = data_to_make(data, kind, split, wanted_data(kind, n, size, a.seed))
        if differences and split == "train" and a.resume:
            raise CommandError(f"{ann_file}: the run's training data was generated with "
                               f"{', '.join(differences)}",
                               hint="leave out the options that change the data (--num-train, "
                               "--image-size, --seed) to resume, or start a new run in "
                               "another --out")
        if make:
            why = f" (the {split} data there had {', '.join(differences)})" if differences else ""
            print(f"generating {plural(n, 'image')} of {split} {kind} in {image_dir}{why}")
            g.make(data, n, image_size=size, seed=a.seed, split_name=split)
        else:
            print(f"using the {plural(n, 'generated image')} in {image_dir} (same settings)")
    train_set = CocoDataset(*g.paths(data, "train"))
    return train_set, *(str(p) for p in g.paths(data, "val"))


def _prepare_out(a, out: Path):
    """Check the run directory against --resume/--overwrite (nothing is removed yet); returns
    the checkpoint's meta when resuming (None otherwise)."""
    from ..engine.checkpoint import read_meta
    from ..engine.rundir import holds_run, run_files

    checkpoint = out / "checkpoint.npz"
    if a.resume:
        if not checkpoint.is_file():
            before = " (it stopped before its first checkpoint)" if holds_run(out) else ""
            raise CommandError(f"{checkpoint}: no checkpoint to resume{before}",
                               hint="run without --resume to start training")
        return read_meta(str(checkpoint))
    if holds_run(out) and not a.overwrite:
        found = ", ".join(p.relative_to(out).as_posix() for p in run_files(out)[:4])
        raise CommandError(f"{out}: holds a run already ({found}); not overwritten",
                           hint="add --resume to continue it, --overwrite to start it again, "
                           "or choose another --out")
    return None


def _overwrite(out: Path) -> None:
    """--overwrite: remove the old run's files, once every check has passed."""
    from ..engine.rundir import remove_run_files

    removed = remove_run_files(out)
    if removed:
        print(f"--overwrite: removed the run's {plural(len(removed), 'file')} in {out}")


def train(a) -> None:
    """The ``train`` command (see the module docstring)."""
    from ..data.coco import CocoDataset
    from ..engine.evaluate import evaluate, format_summary, result_line
    from ..engine.trainer import TrainConfig, Trainer, TrainingDiverged
    from ..model.mask_rcnn import MaskRCNN

    out = refuse_file(a.out, "--out")
    meta = _prepare_out(a, out)
    run = settings(a)
    size = run["input_size"]
    smallest = size or min(_sides(PRESETS[run["preset"]]().transform.min_size))
    if smallest < MIN_INPUT_SIZE:
        raise CommandError(f"--image-size {a.image_size}: the model would see {size}-px images; "
                           f"it needs at least {MIN_INPUT_SIZE} (one cell of its stride-32 "
                           "level)", hint="raise --image-size, or set --input-size")
    if a.ann:
        train_set = CocoDataset(a.ann, a.images, skip_empty=True)
        if len(train_set) == 0:
            raise CommandError(f"{a.ann}: no image with an annotation to train on "
                               f"({plural(len(train_set.images), 'image')}, "
                               f"{plural(train_set.num_annotations, 'annotation')} in the file)")
        num_classes, num_keypoints = train_set.num_classes, train_set.num_keypoints
    else:  # known before the data is generated
        classes = GENERATED[run["data"]].classes
        num_classes, num_keypoints = len(classes) + 1, 17 * (run["data"] == "figures")
    cfg = PRESETS[run["preset"]](num_classes=num_classes)
    _check_keypoints(cfg, run["preset"], num_keypoints, a.ann, train_set if a.ann else None)
    if size:
        cfg.transform.min_size = cfg.transform.max_size = size
    cfg.seed = a.seed
    model = MaskRCNN(cfg, backend=a.backend)
    # --weights is checked against the model before any data is generated
    initialised = _load_weights(a, model) if a.weights and meta is None else None
    if a.ann:
        val_ann, val_images = a.val_ann, a.val_images
    else:
        train_set, val_ann, val_images = _generated_data(
            a, out, run["data"], run["image_size"], run["num_train"], run["num_val"])
        val_ann, val_images = a.val_ann or val_ann, a.val_images or val_images
    val_set = None
    if val_ann and not a.no_eval:
        val_set = CocoDataset(val_ann, val_images)
        if val_set.class_names != train_set.class_names:
            raise CommandError(f"{val_ann}: has the classes {val_set.class_names[1:]}, but the "
                               f"training data has {train_set.class_names[1:]}")
    iters = run["iters"]
    steps = tuple(a.steps) if a.steps is not None else (int(0.8 * iters), int(0.93 * iters))
    tcfg = TrainConfig(iters=iters, batch_size=a.batch_size, lr=run["lr"], warmup_iters=a.warmup,
                       steps=steps, checkpoint_every=a.checkpoint_every, seed=a.seed,
                       clip_grad_norm=a.clip_grad_norm or None, optimizer=run["optimizer"],
                       weight_decay=run["weight_decay"])
    command = command_line(a.argv)
    if meta is not None and meta.get("command"):
        command = meta["command"]  # the command that started the run, kept across resumes
    trainer = Trainer(model, train_set, tcfg, str(out), backend=a.backend,
                      extra_meta={"class_names": train_set.class_names,
                                  "contiguous_to_cat_id": {str(k): v for k, v in
                                                           train_set.contiguous_to_cat_id.items()},
                                  "command": command, "options": run_options(a)})
    if initialised is not None:
        trainer.extra_meta["initialised_from"] = initialised
    elif meta is not None and meta.get("initialised_from"):
        trainer.extra_meta["initialised_from"] = meta["initialised_from"]
    start = 0
    if meta is not None:
        from ..engine.checkpoint import CheckpointMismatch

        try:
            changed = trainer.check_checkpoint(meta)
        except CheckpointMismatch as err:
            raise CommandError(str(err), hint="--resume takes the model's options from the "
                               "checkpoint: leave out the ones that change the model, or start "
                               f"a new run in another --out (the run began as: {command})"
                               ) from err
        start = int(meta["iteration"])
        print(f"resuming {trainer.checkpoint_path} at iteration {start} of {iters}")
        if changed:
            print(f"changed since the checkpoint: {', '.join(changed)}")
        if start >= a.iters:
            print(f"nothing left to train: the checkpoint is at iteration {start} "
                  f"(raise --iters to train longer)")
    seen = "/".join(map(str, _sides(cfg.transform.min_size)))
    print(f"training {run['preset']} ({plural(train_set.num_classes - 1, 'class')}) on "
          f"{plural(len(train_set), 'image')} seen at {seen} px with "
          f"{'AdamW' if tcfg.optimizer == 'adamw' else 'SGD'} (lr {tcfg.lr:g}), "
          f"backend {B.get_backend() if a.backend is None else a.backend}; "
          f"a checkpoint every {a.checkpoint_every} iterations in {out}")
    if a.overwrite:
        _overwrite(out)
    t0 = time.perf_counter()
    try:
        trainer.train(resume=meta is not None)
    except TrainingDiverged as err:
        err.hint = ("lower --lr (or --clip-grad-norm), then add --resume to continue from the "
                    "checkpoint" if Path(trainer.checkpoint_path).is_file() else
                    "lower --lr (or --clip-grad-norm) and start again with --overwrite")
        raise
    print(f"trained iterations {start}..{trainer.iteration} in {elapsed(t0)}; "
          f"checkpoint {trainer.checkpoint_path}")
    if val_set is None:
        if not a.no_eval:
            print("no validation set (--val-ann/--val-images): not evaluated")
        return
    metrics = evaluate(model, val_set, out_dir=str(out / "eval"), verbose=False)
    print(format_summary(metrics, percent=True))
    _save_examples(model, val_set, out / "examples", n=6)
    print(f"result: {result_line(metrics)} on {plural(len(val_set), 'image')} of {val_ann}")


def _sides(min_size) -> tuple:
    """A preset's short-side sizes as a tuple (one size, or the training scales)."""
    return tuple(min_size) if isinstance(min_size, (tuple, list)) else (min_size,)


def _check_keypoints(cfg, preset: str, num_keypoints: int, ann, dataset) -> None:
    """A keypoint preset needs data with COCO's 17 person keypoints; keypoints that a mask
    preset would not train are counted in a warning."""
    if cfg.keypoint.on and num_keypoints != cfg.keypoint.num_keypoints:
        have = f"{num_keypoints} keypoints per instance" if num_keypoints else "no keypoints"
        raise CommandError(f"{ann}: has {have}, but the preset {preset} trains "
                           f"{cfg.keypoint.num_keypoints} (COCO's person keypoints, whose "
                           "left/right swap the training flips use)",
                           hint="a person keypoints file (--ann person_keypoints_*.json), or "
                           "a preset without keypoints (shapes, r50_fpn)")
    if not cfg.keypoint.on and num_keypoints and dataset is not None:
        n = sum(1 for a in dataset.coco.dataset["annotations"]
                if any(v > 0 for v in (a.get("keypoints") or [])[2::3]))
        warnings.warn(DatasetWarning(
            f"{ann}: {n} annotation(s) have keypoints, but the preset {preset} has no keypoint "
            "branch: they are not trained (keypoint presets: figures, keypoint_r50_fpn, "
            "keypoint_mask_r50_fpn)"), stacklevel=2)


def _load_weights(a, model) -> dict:
    """``--weights``: initialise the model from the file, print the report (what was placed,
    skipped and left fresh: the class-specific layers of another number of classes) and
    return it for the checkpoints' meta."""
    from ..engine.weights import load_pretrained

    report = load_pretrained(model, a.weights, backbone_only=a.backbone_only)
    print("\n".join(["initialised from --weights:", *report.lines()]))
    summary = report.as_dict()  # counts per reason; the layers left fresh by name
    summary["fresh"] = {reason: names if len(names) <= 12 else len(names)
                        for reason, names in report.fresh.items()}
    return summary


def _save_examples(model, dataset, out_dir: Path, n: int = 6, score_thresh: float = 0.5):
    from ..visualize import show_gt_vs_pred

    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, len(dataset))):
        image, target = dataset[i]
        pred = model.predict([B.to_backend(image)])[0]
        pred = {k: B.asnumpy(v) for k, v in pred.items()}
        show_gt_vs_pred(image.transpose(1, 2, 0), target, pred, dataset.class_names,
                        path=str(out_dir / f"example_{i}.png"), score_thresh=score_thresh)
    print(f"example predictions drawn in {out_dir}")
