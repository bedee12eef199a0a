"""The ``npmaskrcnn`` command line: the parser, the commands, and one error path.

    npmaskrcnn make-shapes  OUT_DIR            generate the synthetic shapes data (COCO format)
    npmaskrcnn make-figures OUT_DIR            generate the stick-figure person keypoints
    npmaskrcnn coco-subset  ANN OUT            a small COCO JSON: chosen categories, N images
    npmaskrcnn train        [--ann --images]   train (default: fresh shapes data, shapes preset)
    npmaskrcnn eval         CHECKPOINT ...     COCOeval bbox + segm on a COCO dataset
    npmaskrcnn predict      CHECKPOINT IMAGES  PNGs with masks drawn + detections JSON
    npmaskrcnn import-weights SRC OUT.npz    torchvision weights -> our weights file
    npmaskrcnn ablate       [--quick|--full]   the RoIAlign vs RoIPool ablation (Tables 2, 6)

Expected failures -- a bad data file or record, a bad checkpoint, a missing file, a refused
overwrite, a diverged run -- end with one line ``npmaskrcnn <command>: error: <file>:
<problem>`` (plus, where it helps, one line saying what to do) and exit status 1; bad
arguments are refused by the parser the same way (status 2); Ctrl-C ends with one line and
status 130. A traceback means a bug, or ``--debug`` was given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from . import backend as B
from .commands.arguments import HelpFormatter, Parser, float_in, int_at_least, split_name
from .commands.common import MIN_INPUT_SIZE, CommandError, given, load_model
from .config import PRESETS
from .data.coco import DatasetError
from .data.images import ImageError
from .data.shapes import DEFAULT_CLASSES, SHAPE_CLASSES
from .engine.checkpoint import CheckpointError
from .engine.memory import keep_freed_memory
from .engine.rundir import GENERATED
from .engine.trainer import TrainingDiverged
from .engine.weight_files import WeightsError

__all__ = ["build_parser", "main", "load_model", "CommandError"]

EPILOG = """\
commands:
  make-shapes OUT_DIR             generate the synthetic shapes data (COCO format)
  make-figures OUT_DIR            generate stick-figure person keypoints (COCO format)
  coco-subset ANN OUT             a small COCO JSON: chosen categories, at most N images
  train [--ann A --images DIR]    train (default: generated shapes; --data figures: keypoints)
  eval CHECKPOINT --ann --images  COCO box, mask and keypoint AP of a checkpoint
  predict CHECKPOINT IMAGE ...    drawings with the predicted masks, skeletons + detections
  import-weights SRC OUT.npz      a torchvision weights file as ours (checked, reported)
  ablate [--quick | --full]       the RoIAlign vs RoIPool ablation (paper Tables 2, 6)

'npmaskrcnn COMMAND --help' lists a command's options; train, eval and predict take
--backend numpy|cupy|cpupy, ablate --backend numpy|cupy. Errors are one line; --debug shows
the full traceback.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="npmaskrcnn", description="Mask R-CNN from scratch in NumPy/CuPy.",
                    formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="on an error, show the full Python traceback")
    device = Parser(add_help=False)
    device.add_argument("--backend", choices=B.BACKENDS, default=None,
                        help="array backend (default: $NPMASKRCNN_BACKEND, else numpy)")

    def command(name, help, description, parents=(common,)):
        return sub.add_parser(name, help=help, description=description, parents=list(parents),
                              formatter_class=HelpFormatter)

    def generator_arguments(p, min_size: int, default_size: int):
        """The options make-shapes and make-figures share."""
        p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into")
        p.add_argument("--num-images", type=int_at_least(1), default=200, help="images to draw")
        p.add_argument("--image-size", type=int_at_least(min_size), default=default_size,
                       help="side of the square images, in pixels")
        p.add_argument("--split", type=split_name, default="train",
                       help="name of the split (its folder and JSON name)")
        p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed of the data")
        p.add_argument("--overwrite", action="store_true",
                       help="replace a split of that name already in OUT_DIR")

    p = command("make-shapes", "generate the synthetic shapes dataset",
                "Write PNG images and a COCO instances JSON of random shapes (by default "
                "squares, circles, triangles and rings) on textured backgrounds: "
                "OUT_DIR/SPLIT/*.png and OUT_DIR/annotations/instances_SPLIT.json.")
    generator_arguments(p, min_size=16, default_size=128)
    p.add_argument("--classes", nargs="+", choices=SHAPE_CLASSES, default=list(DEFAULT_CLASSES),
                   metavar="CLASS", help=f"shape classes, from {', '.join(SHAPE_CLASSES)}")

    p = command("make-figures", "generate the stick-figure person-keypoint dataset",
                "Write PNG images and a COCO person-keypoints JSON of stick figures (the 17 "
                "COCO keypoints and skeleton, random poses, occlusion with visibility 0/1/2, "
                "distractors) on textured backgrounds: OUT_DIR/SPLIT/*.png and "
                "OUT_DIR/annotations/person_keypoints_SPLIT.json.")
    generator_arguments(p, min_size=32, default_size=160)

    p = command("coco-subset", "write a small COCO subset JSON",
                "Keep only the chosen categories and at most N images (a seeded choice among "
                "the images with at least one of them) of a COCO annotation file, e.g. the "
                "official instances_val2017.json. Images are not copied: the subset refers to "
                "the same image folder.")
    p.add_argument("ann_file", metavar="ANN", help="COCO annotation JSON to read")
    p.add_argument("out_file", metavar="OUT", help="JSON file to write")
    p.add_argument("--categories", nargs="+", default=None, metavar="CAT",
                   help="category names or ids to keep, e.g. person dog 18 (default: all)")
    p.add_argument("--max-images", type=int_at_least(1), default=None,
                   help="most images to keep (default: all that have the categories)")
    p.add_argument("--keep-empty", action="store_true",
                   help="also draw from images without any annotation of the categories")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the image choice")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = command("train", "train Mask R-CNN (or Keypoint R-CNN)",
                "Train on a COCO-format dataset (--ann/--images; a person keypoints file with a "
                "keypoint preset trains keypoints); with no dataset, generate data into "
                "OUT/data -- shapes (masks) or, with --data figures, stick figures (person "
                "keypoints) -- and train its preset, then evaluate on a held-out generated "
                "split. A checkpoint is written every --checkpoint-every iterations; --resume "
                "continues from it exactly.", parents=(common, device))
    p.add_argument("--ann", help="COCO annotation JSON to train on (default: generated data)")
    p.add_argument("--images", help="image folder of --ann")
    p.add_argument("--data", choices=sorted(GENERATED), default=None,
                   help="the data to generate without --ann: shapes (masks) or figures "
                   "(stick-figure person keypoints) (default: shapes)")
    p.add_argument("--val-ann", help="COCO annotation JSON to evaluate on after training "
                   "(default with generated data: a generated validation split)")
    p.add_argument("--val-images", help="image folder of --val-ann")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model preset (default: shapes; figures for --data figures)")
    p.add_argument("--image-size", type=int_at_least(16), default=None,
                   help="side of the generated images (default: 128 for shapes, 160 for "
                   "figures), and the model's resize with --ann when --input-size is not given")
    p.add_argument("--input-size", type=int_at_least(MIN_INPUT_SIZE), default=None,
                   help="the model's resize: short and long side of the images it sees "
                   "(default: 1.5 x --image-size for generated data, 192 px for shapes, as "
                   "Mask R-CNN upsamples COCO images to 800; with --ann, --image-size or the "
                   "preset's)")
    p.add_argument("--out", default="runs/shapes", help="run directory (checkpoint, logs)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint.npz, with the "
                       "options it was started with (options typed again override them)")
    again.add_argument("--overwrite", action="store_true",
                       help="start again in an --out that holds a run (replaces its "
                       "checkpoint, log, eval and examples)")
    p.add_argument("--iters", type=int_at_least(1), default=None,
                   help="training iterations (default: 1500; 1900 with --data figures)")
    p.add_argument("--batch-size", type=int_at_least(1), default=4, help="images per iteration")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None,
                   help="SGD with momentum 0.9, the paper's, or AdamW (default: sgd; adamw "
                   "with --data figures)")
    p.add_argument("--lr", type=float_in(0.0, low_open=True), default=None,
                   help="learning rate after warm-up (default: 0.02 with sgd, 0.001 with "
                   "adamw; 0.002 with --data figures)")
    p.add_argument("--weight-decay", type=float_in(0.0), default=None,
                   help="weight decay of the weights, not of biases and norms (default: "
                   "1e-4 with sgd, added to the gradient; 0.05 with adamw, decoupled)")
    p.add_argument("--warmup", type=int_at_least(0), default=100,
                   help="iterations of linear learning-rate warm-up")
    p.add_argument("--steps", type=int_at_least(1), nargs="*", default=None, metavar="ITER",
                   help="lr x0.1 at these iterations (default: 80%% and 93%% of --iters; "
                   "'--steps' alone: never)")
    p.add_argument("--checkpoint-every", type=int_at_least(1), default=100,
                   help="iterations between two checkpoints (one is also written at the end)")
    p.add_argument("--clip-grad-norm", type=float_in(0.0), default=10.0,
                   help="clip the global gradient norm to this (0: no clipping)")
    p.add_argument("--num-train", type=int_at_least(1), default=None,
                   help="generated images to train on (default: 400; 2000 with --data figures)")
    p.add_argument("--num-val", type=int_at_least(1), default=None,
                   help="generated images to evaluate on (default: 100)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the generated data, the initial weights and the batch order")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--weights", metavar="FILE",
                   help="initialise from a weights file (import-weights' .npz, a torchvision "
                   ".pth or .safetensors): a whole model, or an ImageNet ResNet backbone; "
                   "class-specific layers of another number of classes stay fresh")
    p.add_argument("--backbone-only", action="store_true",
                   help="with --weights: take only the ResNet backbone from the file")

    p = command("eval", "COCOeval a checkpoint on a COCO-format dataset",
                "Predict every image of --ann and score the detections with pycocotools' "
                "COCOeval: box and mask AP, and keypoint AP (OKS) for a keypoint model on "
                "person keypoints, printed in percent.", parents=(common, device))
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.npz of a run")
    p.add_argument("--ann", required=True, help="COCO annotation JSON with the ground truth")
    p.add_argument("--images", required=True, help="image folder of --ann")
    p.add_argument("--out", default=None,
                   help="folder to write metrics.json and detections.json into")
    p.add_argument("--per-category", action="store_true", help="add AP tables per category")

    sub.add_parser("ablate", help="the RoIAlign vs RoIPool ablation (paper Tables 2, 6)",
                   add_help=False, description="Runs npmaskrcnn.ablation; "
                   "'npmaskrcnn ablate --help' lists its options.")

    p = command("predict", "draw predicted masks (and skeletons) on images",
                "Detect objects in image files: one drawing per image (masks, boxes, class and "
                "score, and a keypoint model's skeletons) and detections.json (label, score, "
                "box, mask area, keypoints), in --out. Inputs are never overwritten; names that "
                "collide get -2, -3, ...",
                parents=(common, device))
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.npz of a run")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", default=None,
                   help="output folder (default: 'predictions' beside the checkpoint)")
    p.add_argument("--score-thresh", type=float_in(0.0, 1.0), default=0.5,
                   help="smallest score drawn and listed")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier prediction in --out")

    p = command("import-weights", "convert a torchvision weights file into ours",
                "Read a torchvision checkpoint -- maskrcnn_resnet50_fpn or "
                "keypointrcnn_resnet50_fpn (a whole model), or an ImageNet resnet (a backbone) "
                "-- as .pth (needs torch; read with weights_only=True), .safetensors or .npz, "
                "check every array against our model by name and shape, and write OUT (.npz). "
                "Prints what was mapped and what was skipped; refuses, naming the key, "
                "anything it cannot place, and then writes nothing.")
    p.add_argument("src", metavar="SRC", help="weights file to read")
    p.add_argument("out", metavar="OUT.npz", help="our weights file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.npz if it exists")
    parser.command_parsers = sub.choices
    return parser


def check_args(parser, a) -> None:
    """Cross-argument checks the parser cannot express; errors go through ``parser.error``."""
    sub = parser.command_parsers[a.command]
    if a.command == "train":
        for first, second in (("--ann", "--images"), ("--val-ann", "--val-images")):
            have = [name for name in (first, second)
                    if getattr(a, name[2:].replace("-", "_"))]
            if len(have) == 1:
                sub.error(f"{have[0]} needs {second if have[0] == first else first}")
        if a.backbone_only and not a.weights:
            sub.error("--backbone-only needs --weights")
        for option in ("--num-train", "--num-val", "--data"):
            if a.ann and given(a.argv, option):
                sub.error(f"{option} is for generated data; with --ann it would be ignored")


# ---------------------------------------------------------------------------- commands
def _run(module: str, function: str):
    """A command, imported only when it runs (``--help`` stays fast)."""
    def run(a):
        return getattr(importlib.import_module(f"npmaskrcnn.commands.{module}"), function)(a)
    return run


COMMANDS = {"make-shapes": _run("datasets", "make_shapes"),
            "make-figures": _run("datasets", "make_figures"),
            "coco-subset": _run("datasets", "coco_subset"),
            "train": _run("train", "train"), "eval": _run("evaluate", "evaluate_checkpoint"),
            "predict": _run("predict", "predict"),
            "import-weights": _run("weights", "import_weights")}


# ---------------------------------------------------------------------------- error path
EXPECTED = (CommandError, DatasetError, ImageError, CheckpointError, TrainingDiverged,
            WeightsError, B.BackendError, OSError, MemoryError)


def is_expected(err: BaseException) -> bool:
    """True for the failures a user can cause and fix (see the module docstring)."""
    # CuPy's out-of-memory error, recognised without importing CuPy here
    return isinstance(err, EXPECTED) or type(err).__name__ == "OutOfMemoryError"


def describe(err: BaseException) -> tuple[str, str | None]:
    """``(one-line message, hint or None)`` of an expected failure."""
    hint = getattr(err, "hint", None)
    if isinstance(err, OSError) and err.filename is not None:
        message = f"{err.filename}: {err.strerror or err}"
        if err.filename2 is not None:
            message += f" (and {err.filename2})"
    elif isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        message = f"out of memory ({type(err).__name__}: {err})"
        hint = hint or "try a smaller --batch-size or --image-size/--input-size"
    else:
        message = str(err)
    return " ".join(message.split("\n")), hint


def interrupted(a) -> str:
    """The line printed on Ctrl-C: for ``train``, whether the last checkpoint can resume."""
    if getattr(a, "command", None) != "train":
        return "interrupted"
    from .engine.checkpoint import read_meta

    checkpoint = Path(a.out) / "checkpoint.npz"
    if not checkpoint.is_file():
        return (f"interrupted before the first checkpoint (one every {a.checkpoint_every} "
                "iterations): nothing to resume")
    try:
        iteration = f"iteration {read_meta(str(checkpoint))['iteration']}, "
    except (CheckpointError, KeyError):
        iteration = ""
    return (f"interrupted; the last checkpoint, {checkpoint} ({iteration}written before the "
            f"interruption), is intact: add --resume to continue from it")


def _warning_printer(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)
    return show


def main(argv=None) -> int:
    """Run one command; returns the exit status (0, 1 for an error, 130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # a log file gets each line when it is printed, in order with the progress lines
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError, OSError):  # not a text stream that can
        pass
    prog = f"npmaskrcnn {argv[0]}" if argv and not argv[0].startswith("-") else "npmaskrcnn"
    debug, args = "--debug" in argv, None
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(prog)
        try:
            if argv[:1] == ["ablate"]:  # its own parser: the remaining options are its own
                from .ablation import main as ablate_main

                return ablate_main([x for x in argv[1:] if x != "--debug"]) or 0
            parser = build_parser()
            args = parser.parse_args(argv)
            args.argv = argv
            if args.command == "train" and args.resume:
                from .commands.train import resume_options

                args = resume_options(parser, args)
            check_args(parser, args)
            if getattr(args, "backend", None):
                B.set_backend(args.backend)
            keep_freed_memory()  # training and inference reuse freed memory (engine/memory.py)
            return COMMANDS[args.command](args) or 0
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"\n{prog}: {interrupted(args)}", file=sys.stderr)
            return 130
        except Exception as err:
            if debug or not is_expected(err):
                raise
            message, hint = describe(err)
            print(f"{prog}: error: {message}", file=sys.stderr)
            if hint:
                print(f"{prog}: {hint}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
