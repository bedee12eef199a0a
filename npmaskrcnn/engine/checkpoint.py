"""Checkpoints: one ``.npz`` file (no pickle) holding everything needed to resume.

Contents, as named arrays:

- ``model/<state-dict key>``: every parameter and buffer;
- ``optim/<param name>``: SGD momentum buffers (absent before the first step);
- ``meta``: a JSON string with the iteration, the learning rates, the random
  generator states, the model config and anything else the trainer adds.

Writes are atomic: the file is written next to its destination under a temporary
name and renamed with ``os.replace``, so a crash mid-write leaves the previous
checkpoint intact; a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from ..backend import asnumpy


def save_checkpoint(path: str, model, optimizer=None, meta: dict | None = None) -> str:
    """Atomically write ``model`` (+ optimiser state and ``meta``) to ``path``."""
    arrays = {f"model/{k}": asnumpy(v) for k, v in model.state_dict().items()}
    meta = dict(meta or {})
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optim_lr"] = state["lr"]
        for name, buf in state["buffers"].items():
            if buf is not None:
                arrays[f"optim/{name}"] = buf
    arrays["meta"] = np.array(json.dumps(meta))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str, model, optimizer=None) -> dict:
    """Restore ``model`` (and ``optimizer``) from ``path``; returns the ``meta`` dict.

    Raises:
        ValueError: the file is not a readable checkpoint (names the file).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if "meta" not in arrays:
        raise ValueError(f"{path}: not an npmaskrcnn checkpoint (no 'meta' entry)")
    meta = json.loads(str(arrays.pop("meta")))
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    if optimizer is not None:
        optimizer.load_state_dict({
            "lr": meta.get("optim_lr", [g.lr for g in optimizer.groups]),
            "buffers": {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")},
        })
    return meta


def read_meta(path: str) -> dict:
    """Only the ``meta`` JSON of a checkpoint (config, iteration) without loading weights."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
