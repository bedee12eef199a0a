"""``npmaskrcnn import-weights``: a torchvision weights file as ours, checked and reported.

Everything is decided before anything is written (:func:`~npmaskrcnn.engine.weights.
import_weights` refuses, naming the file and the key, what it cannot place); OUT is written
atomically and an existing OUT is replaced only with ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path

from .common import CommandError


def import_weights(a) -> None:
    """Convert SRC into OUT.npz and print the report."""
    from ..engine.weights import import_weights as convert

    src, out = Path(a.src), Path(a.out)
    if not src.is_file():
        raise CommandError(f"{src}: {'is a folder, not' if src.is_dir() else 'no such'} "
                           "weights file")
    if out.suffix != ".npz":
        raise CommandError(f"{out}: the output must be an .npz file",
                           hint="name it e.g. model.npz")
    if out.is_dir():
        raise CommandError(f"{out}: is a folder, but OUT.npz must be a file name")
    if out.exists() and out.resolve() == src.resolve():
        raise CommandError(f"{out}: is the input file; not written over")
    if out.exists() and not a.overwrite:
        raise CommandError(f"{out}: already exists; not replaced",
                           hint="add --overwrite to replace it, or choose another OUT.npz")
    report = convert(src, out)
    print(report)
    if report.scope == "model":
        print(f"use it as a checkpoint (npmaskrcnn predict {out} IMAGE, npmaskrcnn eval "
              f"{out} ...) or to start training (npmaskrcnn train --weights {out})")
    else:
        print(f"use it to start training: npmaskrcnn train --weights {out} with a FrozenBN "
              "preset of the same depth (r50_fpn for a ResNet-50)")
