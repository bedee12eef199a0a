"""``npmaskrcnn eval``: COCO box, mask and keypoint AP of a checkpoint, checked against the data
first (classes; the number of keypoints; a keypoint model on data without keypoints is scored
on its boxes, with a warning)."""

from __future__ import annotations

from .common import CommandError, labels_are_category_ids, load_model, plural, refuse_file


def evaluate_checkpoint(a):
    """Check the checkpoint, the data and --out, then evaluate and print the AP table."""
    from ..data.coco import CocoDataset
    from ..engine.evaluate import evaluate, format_summary, result_line

    out = refuse_file(a.out, "--out") if a.out else None
    model, meta = load_model(a.checkpoint, a.backend)
    dataset = CocoDataset(a.ann, a.images)
    if meta.get("class_names") and meta["class_names"] != dataset.class_names:
        raise CommandError(f"{a.checkpoint}: trained on the classes {meta['class_names'][1:]}, "
                           f"but {a.ann} has {dataset.class_names[1:]}",
                           hint="evaluate on data with the checkpoint's classes (coco-subset "
                           "--categories makes such a file)")
    by_id = labels_are_category_ids(meta)
    if by_id:  # an imported torchvision model: its labels are COCO category ids
        beyond = [c for c in dataset.cat_ids if c >= model.cfg.num_classes]
        if beyond:
            raise CommandError(f"{a.checkpoint}: an imported model whose labels are category "
                               f"ids 1..{model.cfg.num_classes - 1}, but {a.ann} has category "
                               f"id {beyond[0]}")
    elif model.cfg.num_classes != dataset.num_classes:
        raise CommandError(f"{a.checkpoint}: a model of {model.cfg.num_classes - 1} classes, but "
                           f"{a.ann} has {dataset.num_classes - 1}")
    wanted = model.cfg.keypoint.num_keypoints if model.cfg.keypoint.on else 0
    if wanted and dataset.num_keypoints not in (0, wanted):
        raise CommandError(f"{a.checkpoint}: predicts {wanted} keypoints per person, but "
                           f"{a.ann} has {dataset.num_keypoints}")
    if not dataset.coco.dataset["annotations"]:
        raise CommandError(f"{a.ann}: no annotations to evaluate against (no 'annotations' "
                           "list, or an empty one)")
    metrics = evaluate(model, dataset, out_dir=out, per_category=a.per_category, verbose=False,
                       labels_are_category_ids=by_id)
    print(format_summary(metrics, percent=True))
    if out is not None:
        print(f"wrote {out / 'metrics.json'} and {out / 'detections.json'}")
    print(f"result: {result_line(metrics)} on {plural(len(dataset), 'image')} of {a.ann}")
