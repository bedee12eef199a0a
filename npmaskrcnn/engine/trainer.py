"""The training loop: SGD, warm-up + step schedule, logs, checkpoints, resume.

One iteration: ``zero_grad`` → ``losses = model(images, targets)`` → ``model.backward()``
→ optional gradient clipping → ``optimizer.step()``. Around it:

- learning rate: linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``,
  then multiplied by ``gamma`` at each of ``steps`` (paper 3.1: lr 0.02, /10 at 120k
  of 160k, with warm-up as in Goyal et al. 2017);
- a tqdm bar with the running losses; every ``log_every`` iterations a JSON line in
  ``log.jsonl``; a loss-curve PNG at the end;
- every ``checkpoint_every`` iterations an atomic checkpoint (model, optimiser,
  iteration, random state) at ``checkpoint.npz``; ``resume=True`` continues from it
  exactly: the batch order is a function of the iteration and the model's sampling
  generator state is restored, so k + k iterations equal 2k in one go;
- a NaN or infinite loss stops training with ``TrainingDiverged`` naming the
  iteration and the losses; the last good checkpoint is left untouched.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from ..backend import asnumpy, to_backend
from ..data.transforms import BatchLoader
from .checkpoint import load_checkpoint, save_checkpoint
from .optim import SGD


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class TrainConfig:
    iters: int = 1000
    batch_size: int = 2  # paper: 2 images per GPU
    lr: float = 0.02  # paper 3.1 (for 16 images per batch)
    momentum: float = 0.9  # paper 3.1
    weight_decay: float = 1e-4  # paper 3.1
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


def clip_gradients(grads, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``).
    """
    total = math.sqrt(sum(float((g.astype("float64") ** 2).sum()) for g in grads))
    if total > max_norm:
        for g in grads:
            g *= max_norm / (total + 1e-6)
    return total


def to_device(images, targets, backend=None):
    """Move a batch (lists of NumPy images and target dicts) to the backend."""
    images = [to_backend(im, backend) for im in images]
    targets = [{k: (to_backend(v, backend) if hasattr(v, "shape") else v)
                for k, v in t.items()} for t in targets]
    return images, targets


class Trainer:
    """Trains ``model`` on ``dataset`` writing logs and checkpoints into ``out_dir``."""

    def __init__(self, model, dataset, cfg: TrainConfig, out_dir: str, backend=None,
                 progress: bool = True, extra_meta: dict | None = None):
        self.model, self.cfg, self.out_dir = model, cfg, out_dir
        self.extra_meta = dict(extra_meta or {})
        self.backend = backend
        self.progress = progress
        self.loader = BatchLoader(dataset, cfg.batch_size, cfg.seed, cfg.flip_prob)
        self.optimizer = SGD(model, lr=cfg.lr, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay)
        self.iteration = 0
        os.makedirs(out_dir, exist_ok=True)
        self.checkpoint_path = os.path.join(out_dir, "checkpoint.npz")
        self.log_path = os.path.join(out_dir, "log.jsonl")

    # ------------------------------------------------------------------ state
    def save(self) -> None:
        meta = {**self.extra_meta, "iteration": self.iteration, "train": asdict(self.cfg),
                "model_config": self.model.cfg.to_dict(),
                "rng_state": self.model.rpn.rng.get_state()}
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, meta)

    def resume(self) -> int:
        """Load ``checkpoint.npz`` if present; returns the iteration to continue from."""
        if not os.path.exists(self.checkpoint_path):
            return 0
        meta = load_checkpoint(self.checkpoint_path, self.model, self.optimizer)
        self.model.rpn.rng.set_state(meta["rng_state"])
        self.iteration = int(meta["iteration"])
        if os.path.exists(self.log_path):  # drop log lines written after the checkpoint
            with open(self.log_path) as f:
                lines = [ln for ln in f if ln.strip() and json.loads(ln)["iter"] < self.iteration]
            with open(self.log_path, "w") as f:
                f.writelines(lines)
        return self.iteration

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False, stop_at: int | None = None) -> dict:
        """Run to ``cfg.iters`` (or ``stop_at``); returns the last losses."""
        cfg, model = self.cfg, self.model
        if resume:
            self.resume()
        elif os.path.exists(self.log_path):
            os.remove(self.log_path)
        model.train()
        end = min(cfg.iters, stop_at) if stop_at is not None else cfg.iters
        bar = tqdm(range(self.iteration, end), initial=self.iteration, total=cfg.iters,
                   desc="train", disable=not self.progress, dynamic_ncols=True)
        last, running = {}, {}
        for it in bar:
            lr = lr_at(cfg, it)
            self.optimizer.set_lr(lr)
            images, targets = to_device(*self.loader.batch(it), self.backend)
            model.zero_grad()
            losses = model(images, targets)
            values = {k: float(asnumpy(v)) for k, v in losses.items()}
            total = sum(model.cfg.loss_weights[k] * v for k, v in values.items())
            if not math.isfinite(total):
                raise TrainingDiverged(
                    f"iteration {it}: loss is {total} ({values}); stopped. The last good "
                    f"checkpoint is {self.checkpoint_path} (iteration {self.iteration})")
            model.backward()
            if cfg.clip_grad_norm:
                clip_gradients(list(model.gradients(trainable_only=True).values()),
                               cfg.clip_grad_norm)
            self.optimizer.step()
            self.iteration = it + 1
            last = {"loss": total, **values}
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in last.items()}
            bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in running.items()})
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


