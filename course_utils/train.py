"""A short, visible training loop: ``fit`` and ``evaluate``.

``fit`` is what a student would write by hand (``zero_grad`` / ``backward`` / ``step`` in plain sight)
plus the three things a hand-written loop usually lacks:

- a checkpoint written atomically after every epoch, from which ``fit`` resumes exactly;
- early stopping on a validation metric, keeping the best weights;
- a divergence guard: a NaN or infinite loss stops training with the epoch and step it happened at.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F

from course_utils.io import atomic_torch_save
from course_utils.metrics import accuracy, predicted_labels

Metric = Callable[[torch.Tensor, torch.Tensor], float]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch records: ``epoch``, ``train_loss``, ``val_loss``, ``train_<metric>``, ``val_<metric>``,
    ``lr``, ``seconds`` and ``images_per_s``."""

    records: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    def to_frame(self):
        """The records as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        return pd.DataFrame(self.records).set_index("epoch")


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights."""

    monitor: str = "val_acc"
    mode: str = "max"
    patience: int = 5
    restore_best: bool = True
    best: float | None = None
    best_epoch: int | None = None
    best_state: dict | None = None

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def update(self, epoch: int, value: float, model: torch.nn.Module) -> bool:
        """Record this epoch's value; return True when training should stop."""
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
        return epoch - self.best_epoch >= self.patience


class Evaluation(NamedTuple):
    """What ``evaluate`` returns: predicted labels, targets, mean loss and the logits ``(N, K)``."""

    preds: torch.Tensor
    targets: torch.Tensor
    loss: float
    logits: torch.Tensor


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    from course_utils.runtime import get_profile

    quiet = os.environ.get("CI") or os.environ.get("COURSE_PROGRESS", "1") == "0" or get_profile() == "smoke"
    return not quiet


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, loss_fn: Callable = F.cross_entropy,
             tta_flip: bool = False) -> Evaluation:
    """Run ``model`` in eval mode over ``loader``; ``tta_flip`` averages the logits of each image and its mirror."""
    model.eval()
    device = _device_of(model)
    all_logits, all_targets, total, n = [], [], 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        if tta_flip:
            logits = (logits + model(x.flip(3))) / 2
        total += float(loss_fn(logits, y)) * len(y)
        n += len(y)
        all_logits.append(logits.float().cpu())
        all_targets.append(y.cpu())
    logits = torch.cat(all_logits)
    return Evaluation(predicted_labels(logits), torch.cat(all_targets), total / max(n, 1), logits)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable) -> torch.Tensor:
    """The model's outputs for every batch of ``loader`` (eval mode, no gradients), concatenated on the CPU."""
    model.eval()
    device = _device_of(model)
    return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def _save_checkpoint(path, model, optimizer, scheduler, history, early_stopping, epoch):
    atomic_torch_save({
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": {"records": history.records, "stopped_early": history.stopped_early,
                    "best_epoch": history.best_epoch},
        "early_stopping": None if early_stopping is None else {
            "best": early_stopping.best, "best_epoch": early_stopping.best_epoch,
            "best_state": early_stopping.best_state},
        "torch_rng": torch.get_rng_state(),
    }, path)


def _load_checkpoint(path, model, optimizer, scheduler, early_stopping) -> tuple[int, History]:
    state = torch.load(path, map_location=_device_of(model), weights_only=True)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise RuntimeError(f"Checkpoint {path} does not match this model/optimizer ({e}). "
                           f"Delete it to train from scratch.") from e
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if early_stopping is not None and state["early_stopping"] is not None:
        for k, v in state["early_stopping"].items():
            setattr(early_stopping, k, v)
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["epoch"], History(**state["history"])


def fit(model: torch.nn.Module, train_loader, val_loader=None, *, epochs: int, optimizer: torch.optim.Optimizer,
        scheduler=None, scheduler_interval: str = "step", loss_fn: Callable = F.cross_entropy,
        metrics: dict[str, Metric] | None = None, checkpoint: str | os.PathLike | None = None,
        early_stopping: EarlyStopping | None = None, progress: bool | None = None,
        verbose: bool = True) -> History:
    """Train ``model`` for ``epochs`` epochs and return its ``History``.

    Args:
        train_loader, val_loader: iterables of ``(x, y)`` batches; a loader with ``set_epoch`` (like
            ``TensorLoader``) is told the epoch, so a resumed run sees the same batches.
        scheduler: stepped after every optimiser step (``scheduler_interval="step"``) or every epoch.
        loss_fn: ``loss_fn(logits, y) -> scalar``.
        metrics: ``{name: fn(pred_labels, targets)}``, computed on train and val; default accuracy as ``acc``;
            ``{}`` for none (e.g. when the model returns embeddings). Labels come from ``predicted_labels``.
        checkpoint: file written atomically after every epoch; if it exists, training resumes from it.
        early_stopping: an ``EarlyStopping`` on a ``val_*`` or ``train_*`` key.
        progress: tqdm progress bars; ``None`` shows them except under the smoke profile, CI or COURSE_PROGRESS=0.
        verbose: print one summary line per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    metrics = {"acc": accuracy} if metrics is None else metrics
    device = _device_of(model)
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _load_checkpoint(checkpoint, model, optimizer, scheduler, early_stopping)
        if verbose:
            print(f"resumed from {checkpoint} after epoch {start}")
        if history.stopped_early:
            start = epochs
    show = _show_progress(progress)
    if show:
        from tqdm.auto import tqdm

    for epoch in range(start + 1, epochs + 1):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch - 1)
        batches = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, file=sys.stdout) if show else train_loader
        t0, total_loss, n = time.perf_counter(), torch.zeros(()), 0
        preds, targets = [], []
        for step, (x, y) in enumerate(batches, 1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                lr = optimizer.param_groups[0]["lr"]
                raise DivergenceError(
                    f"The training loss became {loss.item()} at epoch {epoch}, step {step}. The run diverged: "
                    f"lower the learning rate (now {lr:.3g}), add normalisation or gradient clipping, and check the inputs.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            total_loss += loss.detach().cpu() * len(y)
            n += len(y)
            if metrics:
                preds.append(predicted_labels(logits.detach()).cpu())
                targets.append(y.cpu())
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": float(total_loss) / n}
        if metrics:
            preds, targets = torch.cat(preds), torch.cat(targets)
            rec.update({f"train_{k}": float(fn(preds, targets)) for k, fn in metrics.items()})
        if val_loader is not None:
            ev = evaluate(model, val_loader, loss_fn)
            rec["val_loss"] = ev.loss
            rec.update({f"val_{k}": float(fn(ev.preds, ev.targets)) for k, fn in metrics.items()})
        rec.update(lr=optimizer.param_groups[0]["lr"], seconds=seconds, images_per_s=n / seconds)
        history.records.append(rec)
        if verbose:
            shown = " ".join(f"{k}={v:.4f}" for k, v in rec.items() if k.startswith(("train_", "val_")))
            print(f"epoch {epoch:>3}/{epochs} {shown} ({seconds:.1f}s, {n / seconds:.0f} img/s)", flush=True)
        stop = False
        if early_stopping is not None:
            if early_stopping.monitor not in rec:
                raise KeyError(f"early_stopping monitors {early_stopping.monitor!r}, not among {sorted(rec)}")
            stop = early_stopping.update(epoch, rec[early_stopping.monitor], model)
            history.best_epoch = early_stopping.best_epoch
            history.stopped_early = stop and epoch < epochs
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, history, early_stopping, epoch)
        if stop:
            break
    if early_stopping is not None and early_stopping.restore_best and early_stopping.best_state is not None:
        model.load_state_dict(early_stopping.best_state)
    return history


def sgd_one_cycle(model: torch.nn.Module, lr: float, total_steps: int, weight_decay: float = 5e-4,
                  momentum: float = 0.9, pct_start: float = 0.25):
    """SGD with Nesterov momentum and a one-cycle schedule (Smith & Topin 2017): the rate rises linearly to
    ``lr`` over ``pct_start`` of the steps, then falls linearly to ~0. No weight decay on biases and norm
    parameters (1-D tensors), as is usual."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum, nesterov=True)
    if total_steps < 4:  # too short for a warm-up and a decay phase: keep the rate constant
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    pct_start = min(max(pct_start, 2 / total_steps), 1 - 1 / total_steps)  # each phase at least 1-2 steps long
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                    pct_start=pct_start, anneal_strategy="linear")
    return optimizer, scheduler


def train_classifier(model: torch.nn.Module, train_data: tuple, val_data: tuple | None, *, epochs: int,
                     batch_size: int, lr: float, seed: int = 0, weight_decay: float = 5e-4,
                     label_smoothing: float = 0.0, augment=None, mean: float | None = None,
                     std: float | None = None, metrics: dict[str, Metric] | None = None,
                     early_stopping: EarlyStopping | None = None, checkpoint=None, progress: bool | None = None,
                     verbose: bool = True) -> History:
    """The course's standard recipe around ``fit``: in-memory loaders, SGD + one-cycle, cross-entropy.

    Args:
        train_data, val_data: ``(images, labels)`` tensors (uint8 or float images ``(N, C, H, W)``).
        augment: a batched augmentation for the training loader (see ``course_utils.loader``).
        mean, std: input normalisation applied by the loaders.
    """
    from course_utils.loader import TensorLoader

    train = TensorLoader(*train_data, batch_size, shuffle=True, augment=augment, drop_last=len(train_data[1]) > batch_size,
                         seed=seed, mean=mean, std=std)
    val = TensorLoader(*val_data, 1000, mean=mean, std=std) if val_data is not None else None
    optimizer, scheduler = sgd_one_cycle(model, lr, epochs * len(train), weight_decay)
    loss_fn = (lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)) if label_smoothing else F.cross_entropy
    return fit(model, train, val, epochs=epochs, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
               metrics=metrics, checkpoint=checkpoint, early_stopping=early_stopping, progress=progress, verbose=verbose)
