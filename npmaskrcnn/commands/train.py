"""``npmaskrcnn train``: check everything that can be checked, then train, evaluate, draw.

In order, before the first iteration: the run directory (:mod:`npmaskrcnn.engine.rundir`:
a run there is continued only with ``--resume``, started again only with ``--overwrite``),
the data (the COCO files and image folders, or generated shapes reused only when made with
the settings asked for), the validation set and its classes, the model's input size, and on
``--resume`` the checkpoint (readable, same model configuration, same classes; changed
training settings are printed). So a mistake costs seconds, not a training run.

``--resume`` takes every option the run was started with from the checkpoint (its
``options``), so ``npmaskrcnn train --out DIR --resume`` is enough; options typed again
override them (a new ``--lr`` or ``--iters``; a new ``--image-size`` is refused, as it
changes the model).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import backend as B
from ..config import PRESETS
from ..data.shapes import DEFAULT_CLASSES
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
    # argparse leaves alone every attribute the namespace already has, unless the option is
    # typed: the stored options become the defaults of this parse
    namespace = argparse.Namespace(**{k: v for k, v in stored.items() if k not in NOT_INHERITED})
    merged = parser.command_parsers["train"].parse_args(a.argv[1:], namespace=namespace)
    merged.command, merged.argv = a.command, a.argv
    return merged


def _shapes_data(a, out: Path, size: int):
    """(train set, val ann, val images) of generated shapes in ``out/data``, generated when
    missing or made with other settings; a resumed run refuses other training data."""
    from ..data.coco import CocoDataset
    from ..data.shapes import make_shapes_dataset, shapes_paths
    from ..engine.rundir import shapes_to_make, wanted_shapes

    data = out / "data"
    for split, n in (("train", a.num_train), ("val", a.num_val)):
        ann_file, image_dir = shapes_paths(data, split)
        make, differences = shapes_to_make(data, split, wanted_shapes(n, size, a.seed))
        if differences and split == "train" and a.resume:
            raise CommandError(f"{ann_file}: the run's training data was generated with "
                               f"{', '.join(differences)}",
                               hint="leave out the options that change the data (--num-train, "
                               "--image-size, --seed) to resume, or start a new run in "
                               "another --out")
        if make:
            why = f" (the {split} data there had {', '.join(differences)})" if differences else ""
            print(f"generating {plural(n, 'image')} of {split} shapes in {image_dir}{why}")
            make_shapes_dataset(data, n, image_size=size, seed=a.seed, split_name=split)
        else:
            print(f"using the {plural(n, 'generated image')} in {image_dir} (same settings)")
    train_set = CocoDataset(*shapes_paths(data, "train"))
    return train_set, *(str(p) for p in shapes_paths(data, "val"))


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
    # Shapes are drawn at 128 px; the model sees them at 1.5x, so that a small object
    # covers more cells of the stride-4 P2 map its mask is pooled from: on the validation
    # shapes, mask AP 0.55 after 1500 iterations at 128 px, 0.60 after 3000, 0.63 after
    # 1500 at 192 px (about the time of 3000 at 128 px).
    size = a.input_size or (a.image_size if a.ann else int(1.5 * (a.image_size or 128)))
    if (size or PRESETS[a.preset]().transform.min_size) < MIN_INPUT_SIZE:
        raise CommandError(f"--image-size {a.image_size}: the model would see {size}-px images; "
                           f"it needs at least {MIN_INPUT_SIZE} (one cell of its stride-32 "
                           "level)", hint="raise --image-size, or set --input-size")
    if a.ann:
        train_set = CocoDataset(a.ann, a.images, skip_empty=True)
        if len(train_set) == 0:
            raise CommandError(f"{a.ann}: no image with an annotation to train on "
                               f"({plural(len(train_set.images), 'image')}, "
                               f"{plural(train_set.num_annotations, 'annotation')} in the file)")
        num_classes = train_set.num_classes
    else:
        num_classes = len(DEFAULT_CLASSES) + 1  # known before the data is generated
    cfg = PRESETS[a.preset](num_classes=num_classes)
    if size:
        cfg.transform.min_size = cfg.transform.max_size = size
    cfg.seed = a.seed
    model = MaskRCNN(cfg, backend=a.backend)
    # --weights is checked against the model before any data is generated
    initialised = _load_weights(a, model) if a.weights and meta is None else None
    if a.ann:
        val_ann, val_images = a.val_ann, a.val_images
    else:
        train_set, val_ann, val_images = _shapes_data(a, out, a.image_size or 128)
        val_ann, val_images = a.val_ann or val_ann, a.val_images or val_images
    val_set = None
    if val_ann and not a.no_eval:
        val_set = CocoDataset(val_ann, val_images)
        if val_set.class_names != train_set.class_names:
            raise CommandError(f"{val_ann}: has the classes {val_set.class_names[1:]}, but the "
                               f"training data has {train_set.class_names[1:]}")
    steps = tuple(a.steps) if a.steps is not None else (int(0.8 * a.iters), int(0.93 * a.iters))
    tcfg = TrainConfig(iters=a.iters, batch_size=a.batch_size, lr=a.lr, warmup_iters=a.warmup,
                       steps=steps, checkpoint_every=a.checkpoint_every, seed=a.seed,
                       clip_grad_norm=a.clip_grad_norm or None)
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
        print(f"resuming {trainer.checkpoint_path} at iteration {start} of {a.iters}")
        if changed:
            print(f"changed since the checkpoint: {', '.join(changed)}")
        if start >= a.iters:
            print(f"nothing left to train: the checkpoint is at iteration {start} "
                  f"(raise --iters to train longer)")
    print(f"training {a.preset} ({plural(train_set.num_classes - 1, 'class')}) on "
          f"{plural(len(train_set), 'image')} seen at {cfg.transform.min_size} px, "
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
