"""A run directory of ``npmaskrcnn train``: what is in it, and when it may be written over.

A run directory holds ``checkpoint.npz`` and ``log.jsonl`` (the run itself), ``loss.png``,
``eval/`` (``metrics.json``, ``detections.json``), ``examples/`` and, for generated data
(shapes or stick figures, :data:`GENERATED`), ``data/``. The rules that keep a run from being
lost:

- a directory holding a run (a checkpoint or a log) is continued only with ``--resume`` and
  started again only with ``--overwrite``, which removes exactly the files listed above
  (:func:`remove_run_files`) and nothing else the user may keep there;
- generated data is reused only when it was generated with the settings asked for
  (:func:`data_to_make`): otherwise it is made again for a new run, and refused for a
  resumed run, whose checkpoint was trained on the old data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.figures import figures_paths, make_figures_dataset
from ..data.shapes import DEFAULT_CLASSES, make_shapes_dataset, shapes_paths, shapes_settings

RUN_FILES = ("checkpoint.npz", "log.jsonl", "loss.png", "eval/metrics.json",
             "eval/detections.json")
RUN_GLOBS = ("examples/example_*.png", ".tmp-*.npz")


def run_files(out: Path) -> list[Path]:
    """The files of a run that exist in ``out`` (what ``--overwrite`` would remove)."""
    out = Path(out)
    found = [out / name for name in RUN_FILES if (out / name).is_file()]
    return found + sorted(p for pattern in RUN_GLOBS for p in out.glob(pattern) if p.is_file())


def holds_run(out: Path) -> bool:
    """True when ``out`` holds a run: a checkpoint or a training log."""
    return any((Path(out) / name).is_file() for name in ("checkpoint.npz", "log.jsonl"))


def remove_run_files(out: Path) -> list[Path]:
    """Delete the files of a run in ``out`` (see :data:`RUN_FILES`); returns them."""
    removed = run_files(out)
    for path in removed:
        path.unlink()
    return removed


@dataclass(frozen=True)
class GeneratedData:
    """A dataset ``npmaskrcnn train`` generates, and how it trains on it by default.

    Attributes:
        make: ``make(out_dir, num_images, image_size=, seed=, split_name=) -> ann_file``.
        paths: ``paths(out_dir, split) -> (ann_file, image_dir)``.
        classes: the category names the files hold.
        preset: the model preset trained on it.
        image_size: side of the generated images, in pixels.
        scale: the model sees the images at ``scale * image_size`` (``--input-size``).
        num_train, num_val: images of the training and the validation split.
        iters: training iterations.
        optimizer: ``TrainConfig.optimizer`` (``--optimizer``); lr: its learning rate
            (None: the optimiser's default, ``optim.OPTIMIZERS``).
    """

    make: Callable
    paths: Callable
    classes: tuple
    preset: str
    image_size: int
    scale: float
    num_train: int
    num_val: int
    iters: int
    optimizer: str = "sgd"
    lr: float | None = None


# The defaults were chosen on validation splits of their own (README: the shapes run, the
# stick-figure keypoint run); the splits the train command evaluates on were not used. The
# stick figures train with AdamW: on their seed-1 validation split, keypoint AP 62.4 after
# 1800 iterations (lr 0.002) against 59.2 after 2400 of SGD (one run each); 1900 with the
# figures preset's cap of 12 keypoint RoIs per image (60.7 after 1800)
GENERATED = {
    "shapes": GeneratedData(make_shapes_dataset, shapes_paths, DEFAULT_CLASSES, "shapes",
                            image_size=128, scale=1.5, num_train=400, num_val=100, iters=1500),
    "figures": GeneratedData(make_figures_dataset, figures_paths, ("person",), "figures",
                             image_size=160, scale=1.5, num_train=2000, num_val=100, iters=1900,
                             optimizer="adamw", lr=0.002),
}


def wanted_data(kind: str, num_images: int, image_size: int, seed: int) -> dict:
    """The settings of a generated split of ``GENERATED[kind]``, as :func:`shapes_settings`
    reads them back."""
    return {"num_images": num_images, "image_size": [image_size, image_size], "seed": seed,
            "classes": list(GENERATED[kind].classes)}


def data_to_make(data: Path, kind: str, split: str, wanted: dict) -> tuple[bool, list[str]]:
    """Whether split ``split`` of generated data ``kind`` in ``data`` must be (re)made, and
    how the data found there differs from ``wanted`` (``"num_images 400 (asked: 10)"``;
    empty when there is none or it matches)."""
    have = shapes_settings(GENERATED[kind].paths(data, split)[0])  # any generated file
    if have is None:
        return True, []
    differences = [f"{key} {have.get(key)} (asked: {value})" for key, value in wanted.items()
                   if have.get(key) != value]
    return bool(differences), differences
