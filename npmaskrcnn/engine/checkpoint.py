"""Checkpoints: one ``.npz`` file (no pickle) holding everything needed to resume.

Contents, as named arrays:

- ``model/<state-dict key>``: every parameter and buffer;
- ``optim/<param name>``: SGD momentum buffers (absent before the first step);
- ``meta``: a JSON string with the iteration, the learning rates, the random
  generator states, the model config and anything else the trainer adds.

Writes are atomic: the file is written next to its destination under a temporary
name and renamed with ``os.replace``, so a crash mid-write leaves the previous
checkpoint intact; a reader never sees half a file. A process killed *during* a write
leaves its temporary ``.tmp-*.npz`` behind; ``files.remove_leftovers`` deletes such files
(the trainer calls it when it starts). The file gets the permissions of any new file
(0666 minus the umask, 0644 usually), not the 0600 of a temporary file.

Every failure to read a checkpoint is a :class:`CheckpointError` whose message starts with
the file's path and says what is wrong with it.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np

from ..backend import asnumpy
from ..files import atomic_write


class CheckpointError(ValueError):
    """A file is not a usable checkpoint; the message is ``"<path>: <problem>"``."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint does not fit the model or data it is loaded for (config, classes)."""


def save_checkpoint(path: str, model, optimizer=None, meta: dict | None = None) -> str:
    """Atomically write ``model`` (+ optimiser state and ``meta``) to ``path``."""
    arrays = {f"model/{k}": asnumpy(v) for k, v in model.state_dict().items()}
    meta = dict(meta or {})
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optim_lr"] = state["lr"]
        meta["optim_steps"] = state["steps"]
        for name, buf in state["buffers"].items():
            if buf is not None:
                arrays[f"optim/{name}"] = buf
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def _read_arrays(path: str, names=None) -> dict:
    """The named arrays of an ``.npz`` (all when ``names`` is None), or a CheckpointError
    that says why the file is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint file") from err
    except IsADirectoryError as err:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from err
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    if head != b"PK\x03\x04":  # every .npz is a zip archive
        raise CheckpointError(f"{path}: not a checkpoint: an npmaskrcnn checkpoint is an .npz "
                              f"(zip) archive, this file starts with {head!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise CheckpointError(f"{path}: not an npmaskrcnn checkpoint (a zip archive "
                                      "without the 'meta' entry)")
            return {k: z[k] for k in (z.files if names is None else names)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: truncated or damaged checkpoint ({err})") from err


def _parse_meta(path: str, array) -> dict:
    try:
        meta = json.loads(str(array))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: damaged checkpoint: its 'meta' entry is not JSON "
                              f"({err.msg})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint: its 'meta' entry is not an object")
    return meta


def load_checkpoint(path: str, model, optimizer=None) -> dict:
    """Restore ``model`` (and ``optimizer``) from ``path``; returns the ``meta`` dict.

    Raises:
        CheckpointError (a ValueError): the file is missing, empty, not an ``.npz``,
            truncated, not an npmaskrcnn checkpoint, or its weights do not fit ``model``
            (missing or unexpected names, other shapes); the message names the file.
    """
    arrays = _read_arrays(path)
    meta = _parse_meta(path, arrays.pop("meta"))
    try:
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    except (KeyError, ValueError) as err:
        raise CheckpointMismatch(f"{path}: its weights do not fit this model: "
                                 f"{err.args[0] if err.args else err}") from err
    if optimizer is not None:
        optimizer.load_state_dict({
            "lr": meta.get("optim_lr", [g.lr for g in optimizer.groups]),
            "steps": meta.get("optim_steps", 0),
            "buffers": {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")},
        })
    return meta


def read_meta(path: str) -> dict:
    """Only the ``meta`` JSON of a checkpoint (config, iteration) without loading weights.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    return _parse_meta(path, _read_arrays(path, names=["meta"])["meta"])


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """The fields in which two nested config dicts differ, as ``"name: saved -> current"``.

    Lists and tuples compare equal when their items do (a config read back from JSON has
    lists where the dataclass has tuples). Used to say *which* settings a resumed run changed.
    """
    def plain(v):
        return json.loads(json.dumps(v))

    saved, current = plain(saved), plain(current)
    out = []
    for key in list(saved) + [k for k in current if k not in saved]:
        name = f"{prefix}{key}"
        a, b = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: {a} -> {b}")
    return out
