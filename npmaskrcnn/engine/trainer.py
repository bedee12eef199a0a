"""The training loop: SGD or AdamW, warm-up + step schedule, logs, checkpoints, resume.

One iteration: ``zero_grad`` → ``losses = model(images, targets)`` → ``model.backward()``
→ optional gradient clipping → ``optimizer.step()``. Around it:

- learning rate: linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``,
  then multiplied by ``gamma`` at each of ``steps`` (paper 3.1: lr 0.02, /10 at 120k
  of 160k, with warm-up as in Goyal et al. 2017);
- the running losses as a tqdm bar on a terminal, as plain periodic lines otherwise
  (:mod:`~npmaskrcnn.engine.progress`); every ``log_every`` iterations a JSON line in
  ``log.jsonl``; a loss-curve PNG at the end;
- every ``checkpoint_every`` iterations an atomic checkpoint (model, optimiser,
  iteration, random state) at ``checkpoint.npz``; ``resume=True`` continues from it
  exactly: the batch order is a function of the iteration and the model's sampling
  generator state is restored, so k + k iterations equal 2k in one go;
- resuming checks the checkpoint first: another model configuration or other class names
  raise ``CheckpointMismatch`` naming the differences; changed training settings (lr,
  iterations, ...) are allowed, listed in ``changed_settings`` and kept in the
  checkpoint's ``resumes`` history; a partial last line of ``log.jsonl`` (a crash
  mid-write) is dropped with a ``ResumeWarning``;
- at the start, temporary checkpoint files left by a process killed mid-save are removed
  (with a ``ResumeWarning``);
- a NaN or infinite loss stops training with ``TrainingDiverged`` naming the
  iteration and the losses; the last good checkpoint is left untouched and named when
  there is one.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field

from ..backend import asnumpy, get_xp, to_backend
from ..data.transforms import BatchLoader
from ..files import atomic_write, remove_leftovers
from .checkpoint import (
    CheckpointMismatch,
    config_differences,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from .memory import keep_freed_memory
from .optim import make_optimizer
from .progress import Progress

# Model-config fields that may differ on resume: the seed only draws the initial weights,
# which a resumed run loads from the checkpoint.
_RESUMABLE_MODEL_FIELDS = ("seed",)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


class ResumeWarning(UserWarning):
    """Something left by an interrupted run was cleaned up (partial log line, temp file)."""


@dataclass
class TrainConfig:
    iters: int = 1000
    batch_size: int = 2  # paper: 2 images per GPU
    lr: float = 0.02  # paper 3.1 (for 16 images per batch)
    momentum: float = 0.9  # paper 3.1 (SGD's only)
    weight_decay: float = 1e-4  # paper 3.1 (AdamW's is decoupled: optim.AdamW)
    optimizer: str = "sgd"  # the paper's; or "adamw" (optim.OPTIMIZERS)
    warmup_iters: int = 100
    warmup_factor: float = 1e-3
    steps: tuple = field(default_factory=tuple)  # iterations at which lr *= gamma
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    log_every: int = 10
    checkpoint_every: int = 200
    seed: int = 0
    flip_prob: float = 0.5


def lr_at(cfg: TrainConfig, it: int) -> float:
    """Learning rate of iteration ``it`` (0-based): warm-up, then step decay."""
    lr = cfg.lr * cfg.gamma ** sum(it >= s for s in cfg.steps)
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        lr *= cfg.warmup_factor * (1 - alpha) + alpha
    return lr


def to_device(images, targets, backend=None):
    """Move a batch (lists of NumPy images and target dicts) to the backend."""
    images = [to_backend(im, backend) for im in images]
    targets = [{k: (to_backend(v, backend) if hasattr(v, "shape") else v)
                for k, v in t.items()} for t in targets]
    return images, targets


class Trainer:
    """Trains ``model`` on ``dataset`` writing logs and checkpoints into ``out_dir``.

    ``extra_meta`` is stored in every checkpoint; its ``class_names`` are checked on
    resume. ``progress``: show the running losses (a bar on a terminal, lines otherwise).
    """

    def __init__(self, model, dataset, cfg: TrainConfig, out_dir: str, backend=None,
                 progress: bool = True, extra_meta: dict | None = None):
        self.model, self.cfg, self.out_dir = model, cfg, out_dir
        self.extra_meta = dict(extra_meta or {})
        self.backend = backend
        self.progress = progress
        self.loader = BatchLoader(dataset, cfg.batch_size, cfg.seed, cfg.flip_prob)
        self.optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay,
                                        cfg.momentum)
        self.iteration = 0
        self.changed_settings: list[str] = []  # "lr: 0.02 -> 0.01", set by resume()
        self.resumes: list[dict] = []  # {"iteration", "changed"} of every resume with changes
        os.makedirs(out_dir, exist_ok=True)
        self.checkpoint_path = os.path.join(out_dir, "checkpoint.npz")
        self.log_path = os.path.join(out_dir, "log.jsonl")

    # ------------------------------------------------------------------ state
    def save(self) -> None:
        meta = {**self.extra_meta, "iteration": self.iteration, "train": asdict(self.cfg),
                "model_config": self.model.cfg.to_dict(),
                "rng_state": self.model.rng.get_state(),
                # the training scale of each image, when the model draws one (min_size tuple)
                "transform_rng_state": self.model.transform.rng.get_state(),
                "resumes": self.resumes}
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, meta)

    def check_checkpoint(self, meta: dict) -> list[str]:
        """Raise ``CheckpointMismatch`` when the checkpoint (its ``meta``) was trained with
        another model configuration or on other classes; return the training settings that
        differ from this trainer's (``"name: saved -> now"``), which may change on resume."""
        saved = meta.get("model_config", {})
        try:  # the saved config as this version reads it (fields added since: their defaults)
            saved = type(self.model.cfg).from_dict(saved).to_dict()
        except (TypeError, ValueError, AttributeError):
            pass  # compared as it is: the differences name what does not fit
        model_diffs = config_differences(saved, self.model.cfg.to_dict())
        changed = [d for d in model_diffs if d.split(":")[0] in _RESUMABLE_MODEL_FIELDS]
        fixed = [d for d in model_diffs if d not in changed]
        if fixed:
            raise CheckpointMismatch(f"{self.checkpoint_path}: trained with another model "
                                     f"configuration ({'; '.join(fixed)})")
        saved, now = meta.get("class_names"), self.extra_meta.get("class_names")
        if saved and now and list(saved) != list(now):
            raise CheckpointMismatch(f"{self.checkpoint_path}: trained on the classes "
                                     f"{list(saved[1:])}, but the data has {list(now[1:])}")
        if "train" in meta:  # fields added since (the optimizer): their defaults
            changed += config_differences({**asdict(TrainConfig()), **meta["train"]},
                                          asdict(self.cfg))
        return changed

    def resume(self) -> int:
        """Load ``checkpoint.npz`` if present; returns the iteration to continue from.

        Raises:
            CheckpointMismatch: see :meth:`check_checkpoint` (nothing is loaded then).
            CheckpointError: the file is not a readable checkpoint.
        """
        if not os.path.exists(self.checkpoint_path):
            return 0
        self.changed_settings = self.check_checkpoint(read_meta(self.checkpoint_path))
        meta = load_checkpoint(self.checkpoint_path, self.model, self.optimizer)
        self.model.rng.set_state(meta["rng_state"])
        if "transform_rng_state" in meta:  # older checkpoints: single-scale models only
            self.model.transform.rng.set_state(meta["transform_rng_state"])
        self.iteration = int(meta["iteration"])
        self.resumes = list(meta.get("resumes", []))
        if self.changed_settings:
            self.resumes.append({"iteration": self.iteration, "changed": self.changed_settings})
        self._truncate_log()
        return self.iteration

    def _truncate_log(self) -> None:
        """Keep the log lines of the iterations before the checkpoint; drop lines that are
        not JSON (a partial last line written when the run was killed) with a warning."""
        if not os.path.exists(self.log_path):
            return
        kept, bad = [], 0
        with open(self.log_path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if record.get("iter", -1) < self.iteration:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if bad:
            warnings.warn(f"{self.log_path}: dropped {bad} line(s) that are not JSON (a partial "
                          "last line, written when the run was stopped mid-write)",
                          ResumeWarning, stacklevel=3)
        with atomic_write(self.log_path, "w") as f:
            f.writelines(kept)

    def _diverged(self, it: int, total: float, values: dict) -> TrainingDiverged:
        """The error for a non-finite loss, naming the last checkpoint only if it exists."""
        if os.path.exists(self.checkpoint_path):
            try:
                saved = f"iteration {int(read_meta(self.checkpoint_path)['iteration'])}"
            except (ValueError, KeyError):
                saved = "unreadable"
            where = f"The last good checkpoint is {self.checkpoint_path} ({saved})."
        else:
            where = (f"No checkpoint was written yet (one every {self.cfg.checkpoint_every} "
                     "iterations).")
        losses = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        return TrainingDiverged(f"iteration {it}: loss is {total} ({losses}); stopped. {where}")

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False, stop_at: int | None = None) -> dict:
        """Run to ``cfg.iters`` (or ``stop_at``); returns the last losses."""
        cfg, model = self.cfg, self.model
        keep_freed_memory()  # each step reuses the memory the last one freed (memory.py)
        leftovers = remove_leftovers(self.out_dir)
        if leftovers:
            warnings.warn(f"removed {len(leftovers)} temporary checkpoint file(s) left by a run "
                          f"killed while saving: {', '.join(leftovers)}", ResumeWarning,
                          stacklevel=2)
        if resume:
            self.resume()
        elif os.path.exists(self.log_path):
            os.remove(self.log_path)
        model.train()
        end = min(cfg.iters, stop_at) if stop_at is not None else cfg.iters
        bar = Progress(cfg.iters, "train", initial=self.iteration, enabled=self.progress,
                       every=max(cfg.log_every, (end - self.iteration) // 20))
        last, running = {}, {}
        for it in range(self.iteration, end):
            lr = lr_at(cfg, it)
            self.optimizer.set_lr(lr)
            images, targets = to_device(*self.loader.batch(it), self.backend)
            model.zero_grad()
            losses = model(images, targets)
            # the loss values, read back from the device in one go (one host sync)
            xp = get_xp(*losses.values())
            read = asnumpy(xp.stack([xp.asarray(v) for v in losses.values()])).tolist()
            values = dict(zip(losses, read))
            total = sum(model.cfg.loss_weights[k] * v for k, v in values.items())
            if not math.isfinite(total):
                bar.close()
                raise self._diverged(it, total, values)
            model.backward()
            if cfg.clip_grad_norm:  # on the device, without reading the norm back
                self.optimizer.clip_grad_norm(cfg.clip_grad_norm)
            self.optimizer.step()
            self.iteration = it + 1
            last = {"loss": total, **values}
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in last.items()}
            shown = {k.replace("loss_", ""): f"{v:.3f}" for k, v in running.items()}
            bar.update(1, {**shown, "lr": f"{lr:.4g}"})
            if it % cfg.log_every == 0 or self.iteration == cfg.iters:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps({"iter": it, "lr": lr, **last}) + "\n")
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == end:
                self.save()
        bar.close()
        self._plot()
        return last
    def _plot(self) -> None:
        if not os.path.exists(self.log_path):
            return
        try:
            from ..visualize import plot_loss_curves
        except ImportError:  # visualisation is optional for training itself
            return
        plot_loss_curves(self.log_path, path=os.path.join(self.out_dir, "loss.png"))


