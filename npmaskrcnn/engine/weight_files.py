"""Weight files: named arrays in and out of ``.npz``, ``.safetensors`` and torch ``.pth``.

Host-only NumPy code: every array read here is a NumPy array; placing it on the model's
backend is ``weights.load_pretrained``'s job. Three formats, each read without unpickling
anything except through ``torch.load(weights_only=True)``:

- ``.npz``: NumPy's zip of ``.npy`` files, read with ``allow_pickle=False``. Ours come in
  two kinds: ``save_module`` (state-dict names) and the checkpoint layout of
  ``engine.checkpoint`` (``model/<name>``, ``optim/<name>``, a JSON ``meta``), which is
  also what ``weights.import_weights`` writes.
- ``.safetensors`` (Hugging Face's format, read and written here without torch and
  without the ``safetensors`` package)::

      [8 bytes: N, little-endian uint64]
      [N bytes: UTF-8 JSON {name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
                            "__metadata__": {str: str} (optional)}, padded with spaces]
      [data: raw little-endian C-order bytes; a tensor's bytes are data[b:e]]

- ``.pth`` / ``.pt``: ``torch.load(path, map_location="cpu", weights_only=True)`` when
  PyTorch is installed: a bare state dict, or one under ``"model"`` or ``"state_dict"``
  (torchvision's training references and many others wrap it so).

Every failure is a ``WeightsError`` whose message is one line, ``<file>: <key>: <problem>``
(``<file>: <problem>`` when no key is to blame, e.g. a zip archive cut short).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..backend import asnumpy
from ..files import atomic_write

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NUMPY_TO_SAFETENSORS = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 << 20  # as the reference implementation: no real header is near this
TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (".npz", ".safetensors") + TORCH_SUFFIXES
WRAPPERS = ("model", "state_dict")  # keys under which a state dict is commonly nested


class WeightsError(ValueError):
    """A weights file that cannot be read or placed; ``str()`` is one printable line."""

    def __init__(self, path, key: str | None, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class WeightsFile:
    """What a weights file holds, before any renaming.

    Attributes:
        path: the file.
        arrays: name -> NumPy array, names as in the file (a wrapper already removed).
        container: how it was stored, in words ("torch .pth, state dict under 'model'").
        meta: our checkpoint's JSON ``meta`` ({} for any other file).
        dropped: reason -> names of entries that are not weights (optimiser state, the
            other entries of a wrapper), left out while reading.
    """

    path: str
    arrays: dict
    container: str
    meta: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)


def read_weights(path) -> WeightsFile:
    """Read ``path`` (``.npz``, ``.safetensors``, ``.pth``/``.pt``) into NumPy arrays.

    Raises:
        WeightsError: unknown suffix, unreadable or truncated file, torch missing for a
            ``.pth``, an entry that is not an array.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsError(path, None, "no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".safetensors":
        arrays, _ = read_safetensors(path)
        return WeightsFile(path, arrays, "safetensors")
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise WeightsError(path, None, f"unknown weights format {suffix or '(no suffix)'!r}; "
                       f"expected one of {', '.join(SUFFIXES)}")


def save_module(module, path) -> str:
    """Write ``module``'s state dict to ``path`` atomically: ``.npz`` (state-dict names,
    no pickle) or ``.safetensors``, chosen by the suffix. Returns the path."""
    arrays = {k: asnumpy(v) for k, v in module.state_dict().items()}
    if str(path).lower().endswith(".safetensors"):
        return write_safetensors(path, arrays)
    return write_npz_atomic(path, arrays)


def load_module(module, path, strict: bool = True) -> WeightsFile:
    """Load ``path`` into ``module`` by state-dict name: a file from ``save_module``, a
    checkpoint (its ``model/`` entries) or any state dict ``read_weights`` can read.

    Raises:
        WeightsError: the file cannot be read (the message names it).
        KeyError / ValueError: names or shapes that do not fit (see ``load_state_dict``).
    """
    wf = read_weights(path)
    module.load_state_dict(wf.arrays, strict=strict)
    return wf


# ----------------------------------------------------------------------------- .npz


def _read_npz(path: str) -> WeightsFile:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise WeightsError(path, None, f"not a readable .npz (truncated, or not a zip "
                           f"archive: {_first_line(err)})") from err
    arrays = {}
    with z:
        for name in z.files:
            try:
                arrays[name] = z[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise WeightsError(path, name, f"unreadable entry ({_first_line(err)})") from err
    if "meta" not in arrays and not any(k.startswith("model/") for k in arrays):
        return WeightsFile(path, arrays, "npz state dict")
    try:
        meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    except json.JSONDecodeError as err:
        raise WeightsError(path, "meta", f"not JSON ({err})") from err
    weights = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = sorted(k for k in arrays if k.startswith("optim/"))
    other = sorted(k for k in arrays if not k.startswith(("model/", "optim/")))
    if other:
        raise WeightsError(path, other[0], "neither model/ nor optim/ in a checkpoint")
    dropped = {"optimiser state (SGD momentum buffers)": optim} if optim else {}
    what = meta.get("weights", {}).get("container")
    if what:
        container = f"npmaskrcnn weights file (from {what})"
    else:
        container = f"npmaskrcnn checkpoint (iteration {meta.get('iteration', '?')})"
    return WeightsFile(path, weights, container, meta=meta, dropped=dropped)


def write_npz_atomic(path, arrays: dict) -> str:
    """Write named arrays to ``path`` (.npz) atomically (``files.atomic_write``): a crash or
    an error mid-write leaves whatever was at ``path`` before untouched."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return str(path)


# ----------------------------------------------------------------------------- .safetensors


def read_safetensors(path) -> tuple[dict, dict]:
    """``(arrays, metadata)`` of a ``.safetensors`` file, without torch.

    BF16 is widened to float32 (its 16 bits are the top half of a float32); every other
    dtype keeps its NumPy equivalent. Each entry is checked before it is read: its dtype,
    and that ``data_offsets`` span exactly ``prod(shape) * itemsize`` bytes inside the file.

    Raises:
        WeightsError: truncated file, bad header, unknown dtype, inconsistent offsets.
    """
    path = str(path)
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise WeightsError(path, None, f"truncated: {len(blob)} bytes, shorter than the "
                           "8-byte header length of a .safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise WeightsError(path, None, f"truncated or not .safetensors: the header length "
                           f"says {n} bytes, {len(blob) - 8} follow")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(path, None, f"the .safetensors header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise WeightsError(path, None, "the .safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + n:]
    arrays = {}
    for name, info in header.items():
        try:
            dtype_name, shape = info["dtype"], tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (TypeError, KeyError, ValueError) as err:
            raise WeightsError(path, name, f"malformed header entry {info!r}") from err
        if dtype_name not in SAFETENSORS_DTYPES:
            raise WeightsError(path, name, f"unsupported dtype {dtype_name!r}; supported: "
                               f"{', '.join(SAFETENSORS_DTYPES)}")
        dtype = np.dtype(SAFETENSORS_DTYPES[dtype_name]).newbyteorder("<")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end > len(data):
            raise WeightsError(path, name, f"truncated: its bytes [{begin}, {end}) run past "
                               f"the end of the data ({len(data)} bytes)")
        if begin < 0 or end - begin != expected:
            raise WeightsError(path, name, f"data_offsets [{begin}, {end}) hold {end - begin}"
                               f" bytes; shape {shape} of {dtype_name} needs {expected}")
        a = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        if dtype_name == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = a.astype(a.dtype.newbyteorder("="))  # a native-order copy
    return arrays, metadata


def write_safetensors(path, arrays: dict, metadata: dict | None = None) -> str:
    """Write named NumPy arrays as ``.safetensors`` (atomically), readable by the
    ``safetensors`` package and ``read_safetensors``.

    Tensors are laid out in name order; the header is padded with spaces to a multiple
    of 8 bytes so that the data starts aligned, as the reference writer does.
    """
    entries, offset = {}, 0
    if metadata:
        entries["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    for name in sorted(arrays):
        a = np.asarray(arrays[name])  # tobytes() below is C order whatever the strides
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
        if a.dtype not in _NUMPY_TO_SAFETENSORS:
            raise WeightsError(path, name, f"dtype {a.dtype} has no .safetensors equivalent")
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        entries[name] = {"dtype": _NUMPY_TO_SAFETENSORS[a.dtype], "shape": list(a.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for raw in chunks:
            f.write(raw)
    return str(path)


# ----------------------------------------------------------------------------- torch .pth


def _read_torch(path: str) -> WeightsFile:
    try:
        import torch  # optional: only to read a user's own .pth
    except ImportError as err:
        raise WeightsError(path, None, "reading a .pth/.pt file needs PyTorch (torch.load "
                           "with weights_only=True), which is not installed; install it, or "
                           "export the state dict to .safetensors where torch is") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds; all of them mean "unreadable"
        raise WeightsError(path, None, f"torch.load(weights_only=True) cannot read it "
                           f"(truncated, or it holds more than tensors): "
                           f"{_first_line(err)}") from err
    if not isinstance(obj, dict):
        raise WeightsError(path, None, f"holds a {type(obj).__name__}, not a state dict")
    container, dropped = "torch .pth state dict", {}
    if not all(torch.is_tensor(v) for v in obj.values()):
        wrapper = next((w for w in WRAPPERS if isinstance(obj.get(w), dict)), None)
        if wrapper is None:
            name = next(k for k, v in obj.items() if not torch.is_tensor(v))
            raise WeightsError(path, str(name), f"a {type(obj[name]).__name__}, not a tensor, "
                               f"and no state dict under {' or '.join(map(repr, WRAPPERS))}")
        others = sorted(str(k) for k in obj if k != wrapper)
        if others:
            dropped[f"entries of the wrapper beside {wrapper!r}"] = others
        container, obj = f"torch .pth, state dict under {wrapper!r}", obj[wrapper]
    arrays = {}
    for name, t in obj.items():
        if not torch.is_tensor(t):
            raise WeightsError(path, str(name), f"a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
            t = t.float()
        arrays[str(name)] = t.numpy()
    return WeightsFile(path, arrays, container, dropped=dropped)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
