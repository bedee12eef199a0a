"""What the commands share: the expected-failure error, file checks, small formatting."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from ..config import MaskRCNNConfig
from ..engine.checkpoint import CheckpointError

MIN_INPUT_SIZE = 32  # the model's resize must give at least one cell of its stride-32 level


class CommandError(Exception):
    """An expected failure of a command: ``message`` names the file and the problem,
    ``hint`` (optional) says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def given(argv, option: str) -> bool:
    """Whether ``option`` was typed on the command line (as ``--opt V`` or ``--opt=V``)."""
    return any(arg == option or arg.startswith(option + "=") for arg in argv)


def load_model(checkpoint: str, backend=None):
    """A ``MaskRCNN`` rebuilt from a checkpoint's config and weights, and its meta.

    A whole model imported by ``import-weights`` is a checkpoint too (its meta has
    ``weights`` and ``model_config``, no ``class_names``: see :func:`labels_are_category_ids`).

    Raises:
        CheckpointError: an unreadable checkpoint, a config this version cannot build, or
            an imported backbone (no model to predict with).
    """
    from ..engine.checkpoint import load_checkpoint, read_meta
    from ..model.mask_rcnn import MaskRCNN

    meta = read_meta(checkpoint)
    imported = meta.get("weights")
    if isinstance(imported, dict) and imported.get("scope") == "backbone":
        raise CheckpointError(f"{checkpoint}: holds a backbone only ({imported.get('kind')}), "
                              "not a whole model: it cannot predict. Train from it with "
                              f"npmaskrcnn train --weights {checkpoint}")
    try:
        cfg = MaskRCNNConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint}: its model configuration cannot be read "
                              f"({type(err).__name__}: {err})") from err
    model = MaskRCNN(cfg, backend=backend)
    load_checkpoint(checkpoint, model)
    return model.eval(), meta


def labels_are_category_ids(meta: dict) -> bool:
    """True for a model imported whole from torchvision (``import-weights``): it was trained
    by others with COCO category ids as its labels (91 "classes", 1 = person), so its labels
    map to a COCO file's categories by identity, not through a dataset's contiguous ids."""
    return isinstance(meta.get("weights"), dict) and not meta.get("class_names")


def plural(n: int, word: str) -> str:
    """``"1 image"``, ``"2 images"``, ``"3 classes"``, ``"2 categories"``."""
    if n == 1:
        return f"{n} {word}"
    if word.endswith(("s", "x", "ch", "sh")):
        return f"{n} {word}es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}s"


def refuse_file(path, option: str) -> Path:
    """``path`` as a Path; a CommandError when it exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"{path}: is a file, but {option} must be a folder",
                           hint=f"choose another {option}")
    return path


def command_line(argv) -> str:
    """The command as a user would type it again (stored in checkpoints)."""
    return shlex.join(["npmaskrcnn", *argv])


def dump_json(path: Path, data) -> None:
    """Write JSON atomically (a temporary name, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def elapsed(t0: float) -> str:
    seconds = time.perf_counter() - t0
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
