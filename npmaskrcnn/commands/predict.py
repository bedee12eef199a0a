"""``npmaskrcnn predict``: drawings and ``detections.json`` for image files, nothing lost.

Before any prediction: every input is opened (a missing file or a file that is not an image
stops the command, naming it, before anything is written); one output name per input
(:func:`~npmaskrcnn.engine.predict.drawing_paths`: never an input, never twice the same);
an output that exists already is replaced only with ``--overwrite``. Each image is then
predicted with the masks pasted one at a time (:mod:`npmaskrcnn.engine.predict`), drawn,
and forgotten before the next one is read.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..data.images import ImageError, read_image
from .common import CommandError, dump_json, load_model, plural, refuse_file


def _check_inputs(paths) -> None:
    """An ImageError for the first input that is missing or not an image (header only)."""
    for path in paths:
        if not path.is_file():
            problem = "is a folder, not an image file" if path.is_dir() else "image file not found"
            raise ImageError(path, problem)
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError) as err:
            raise ImageError(path, f"cannot decode image: not a format Pillow can read "
                                   f"({type(err).__name__})") from err


def predict(a) -> None:
    """The ``predict`` command (see the module docstring)."""
    from ..engine.predict import detection_records, drawing_paths, predict_image
    from ..visualize import show_prediction

    inputs = [Path(p) for p in a.images]
    out = refuse_file(a.out if a.out else Path(a.checkpoint).parent / "predictions", "--out")
    _check_inputs(inputs)
    drawings = drawing_paths(inputs, out)
    existing = [p for p in [*drawings, out / "detections.json"] if p.exists()]
    if existing and not a.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CommandError(f"{existing[0]}: already exists{more}; not overwritten",
                           hint="add --overwrite to replace the earlier predictions, or "
                           "choose another --out")
    model, meta = load_model(a.checkpoint, a.backend)
    names = meta.get("class_names") or [str(i) for i in range(model.cfg.num_classes)]
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, drawing in zip(inputs, drawings):
        image = read_image(path, exif_orientation=True)  # (3, H, W), as a viewer shows it
        pred = predict_image(model, image, a.score_thresh, a.backend)
        # (H, W, 3): unambiguous for the drawing also when W is 1 or 3
        show_prediction(image.transpose(1, 2, 0), pred, names, path=drawing,
                        score_thresh=a.score_thresh)
        detections = detection_records(pred, names)
        results.append({"image": str(path), "drawing": str(drawing),
                        "height": int(image.shape[1]), "width": int(image.shape[2]),
                        "detections": detections})
        print(f"{path}: {plural(len(detections), 'detection')} with score >= "
              f"{a.score_thresh} -> {drawing}")
        del image, pred
    dump_json(out / "detections.json", results)
    print(f"wrote {plural(len(results), 'drawing')} and {out / 'detections.json'}")
