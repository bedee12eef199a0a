"""A run directory of ``npmaskrcnn train``: what is in it, and when it may be written over.

A run directory holds ``checkpoint.npz`` and ``log.jsonl`` (the run itself), ``loss.png``,
``eval/`` (``metrics.json``, ``detections.json``), ``examples/`` and, for generated shapes,
``data/``. The rules that keep a run from being lost:

- a directory holding a run (a checkpoint or a log) is continued only with ``--resume`` and
  started again only with ``--overwrite``, which removes exactly the files listed above
  (:func:`remove_run_files`) and nothing else the user may keep there;
- generated data is reused only when it was generated with the settings asked for
  (:func:`shapes_to_make`): otherwise it is made again for a new run, and refused for a
  resumed run, whose checkpoint was trained on the old data.
"""

from __future__ import annotations

from pathlib import Path

from ..data.shapes import DEFAULT_CLASSES, shapes_paths, shapes_settings

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


def wanted_shapes(num_images: int, image_size: int, seed: int) -> dict:
    """The settings of a generated split, as :func:`shapes_settings` reads them back."""
    return {"num_images": num_images, "image_size": [image_size, image_size], "seed": seed,
            "classes": list(DEFAULT_CLASSES)}


def shapes_to_make(data: Path, split: str, wanted: dict) -> tuple[bool, list[str]]:
    """Whether split ``split`` of generated data in ``data`` must be (re)made, and how the
    data found there differs from ``wanted`` (``"num_images 400 (asked: 10)"``; empty
    when there is none or it matches)."""
    have = shapes_settings(shapes_paths(data, split)[0])
    if have is None:
        return True, []
    differences = [f"{key} {have.get(key)} (asked: {value})" for key, value in wanted.items()
                   if have.get(key) != value]
    return bool(differences), differences
