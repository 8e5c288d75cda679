"""The one training loop, ``fit``, with its ``History``, ``EarlyStopping`` and ``evaluate``.

``fit`` is what a student would write by hand (``zero_grad`` / ``backward`` / ``step`` in plain sight) plus:

- a checkpoint written atomically after every epoch, from which ``fit`` resumes exactly;
- early stopping on a validation metric, keeping the best weights;
- a divergence guard: a NaN or infinite loss raises ``DivergenceError`` with the epoch and step;
- the runtime's device for every training, mixed precision on CUDA, and the dry run's cap.

What differs between trainings is passed in: the ``step`` (model, batch -> loss), an ``after_step`` hook
(BYOL's moving-average target) and an epoch ``monitor`` (a kNN probe, mask snapshots) whose values go into
the epoch's record.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F

from course_utils.budget import count_flops, record_fit
from course_utils.hooks import eval_mode
from course_utils.io import atomic_torch_save
from course_utils.metrics import accuracy, predicted_labels
from course_utils.runtime import dry_run_rows, dry_run_steps, place_on_device

Metric = Callable[[torch.Tensor, torch.Tensor], float]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch records: ``epoch``, ``train_loss``, ``train_<metric>``, ``val_loss``, ``val_<metric>``, what
    ``after_step`` and ``monitor`` returned, ``lr``, ``seconds`` and ``images_per_s``."""
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
    """Run ``model`` in eval mode over ``loader`` (its mode is restored); ``tta_flip`` averages the logits of
    each image and its mirror."""
    device = _device_of(model)
    all_logits, all_targets, total, n = [], [], 0.0, 0
    rows = dry_run_rows()
    with eval_mode(model):
        for x, y in itertools.islice(loader, 1) if rows else loader:  # a dry run: a few rows of the first batch
            x, y = x[:rows].to(device, non_blocking=True), y[:rows].to(device, non_blocking=True)
            logits = model(x)
            if tta_flip:
                logits = (logits + model(x.flip(3))) / 2
            total += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            all_logits.append(logits.float().cpu())
            all_targets.append(y.cpu())
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    if rows and isinstance(getattr(loader, "labels", None), torch.Tensor) and not loader.drop_last:
        targets = loader.labels.cpu()  # a dry run: the rows computed, repeated to the real number of rows
        logits = logits.repeat(-(-len(targets) // len(logits)), *[1] * (logits.ndim - 1))[:len(targets)]
    return Evaluation(predicted_labels(logits), targets, total / max(n, 1), logits)


def supervised_step(loss_fn: Callable) -> Callable:
    """The step of classification and segmentation: ``(x, y) -> (loss_fn(model(x), y), model(x))``."""
    def step(model, batch):
        x, y = batch
        logits = model(x)
        return loss_fn(logits, y), logits
    return step


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


def _step_and_backward(step, model, batch, optimizer, use_amp, amp_dtype, scaler):
    """``step`` under autocast (if ``use_amp``), then, if its loss is finite, fresh (scaled) gradients of it."""
    with torch.autocast(_device_of(model).type, dtype=amp_dtype, enabled=use_amp):
        out = step(model, batch)
    loss = out[0] if isinstance(out, tuple) else out
    if math.isfinite(loss.item()):
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
    return out


def fit(model: torch.nn.Module, train_loader, val_loader=None, *, epochs: int, optimizer: torch.optim.Optimizer,
        scheduler=None, scheduler_interval: str = "step", loss_fn: Callable = F.cross_entropy,
        step: Callable | None = None, after_step: Callable | None = None, monitor: Callable | None = None,
        monitor_before: bool = False, metrics: dict[str, Metric] | None = None,
        checkpoint: str | os.PathLike | None = None, early_stopping: EarlyStopping | None = None,
        progress: bool | None = None, verbose: bool = True, amp: bool | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its ``History``.

    It trains on the device ``setup`` chose (``runtime.place_on_device``); on CUDA in channels-last and mixed
    precision. A dry run (``COURSE_DRY_RUN``) caps it; ``COURSE_BUDGET_FILE`` records its FLOPs (``budget``).

    Args:
        train_loader, val_loader: iterables of batches of tensors (``(x, y)``); a loader with ``set_epoch``
            (like ``TensorLoader``) is told the epoch, so a resumed run sees the same batches.
            ``val_loader`` is scored by ``evaluate(model, val_loader, loss_fn)``.
        scheduler: stepped after every optimiser step (``scheduler_interval="step"``) or every epoch.
        loss_fn: ``loss_fn(logits, y) -> scalar``, used by the default ``step`` and on ``val_loader``.
        step: ``step(model, batch) -> loss`` or ``(loss, outputs)``; default ``supervised_step(loss_fn)``.
        after_step: ``after_step(model, i)`` after optimiser step ``i`` (0, 1, ... over the whole run);
            a dict it returns is recorded (the epoch keeps the last one).
        monitor: ``monitor(model) -> dict`` after every epoch, merged into the epoch's record;
            ``monitor_before=True`` also records it once before training, as epoch 0.
        metrics: ``{name: fn(pred_labels, targets)}`` of the step's outputs, on train and val; default
            accuracy as ``acc`` with the default step, none otherwise. Labels come from ``predicted_labels``.
        checkpoint: file written atomically after every epoch; if it exists, training resumes from it.
        early_stopping: an ``EarlyStopping`` on a key of the records.
        progress: tqdm progress bars; ``None`` shows them except under the smoke profile, CI or COURSE_PROGRESS=0.
        verbose: print one summary line per epoch.
        amp: mixed precision (float16 with a gradient scaler on CUDA, bfloat16 on a CPU); default on CUDA only.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    metrics = ({"acc": accuracy} if step is None else {}) if metrics is None else metrics
    step = supervised_step(loss_fn) if step is None else step
    device = place_on_device(model)
    use_amp, amp_dtype = (device.type == "cuda") if amp is None else amp, torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type) if use_amp and amp_dtype == torch.float16 else None
    cap, ledger = dry_run_steps(), os.environ.get("COURSE_BUDGET_FILE")
    flops, timed, planned_steps = None, [], epochs * len(train_loader) if ledger else 0
    epochs = min(epochs, 2) if cap else epochs
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _load_checkpoint(checkpoint, model, optimizer, scheduler, early_stopping)
        if verbose:
            print(f"resumed from {checkpoint} after epoch {start}")
        if history.stopped_early:
            start = epochs
    if monitor is not None and monitor_before and not history.records:
        history.records.append({"epoch": 0, **monitor(model)})
    show = _show_progress(progress)
    if show:
        from tqdm.auto import tqdm

    for epoch in range(start + 1, epochs + 1):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch - 1)
        batches = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, file=sys.stdout) if show else train_loader
        t0, total_loss, n, logged = time.perf_counter(), 0.0, 0, {}
        preds, targets = [], []
        for i, batch in enumerate(itertools.islice(batches, cap) if cap else batches, 1):
            batch = [t.to(device, non_blocking=True) for t in batch]
            t_step = time.perf_counter()
            args = (step, model, batch, optimizer, use_amp, amp_dtype, scaler)
            if ledger and flops is None:  # count one step of the run, forward and backward
                out, flops = count_flops(lambda: _step_and_backward(*args))
            else:
                out = _step_and_backward(*args)
            loss, outputs = out if isinstance(out, tuple) else (out, None)
            value = loss.item()
            if not math.isfinite(value):
                raise DivergenceError(
                    f"The training loss became {value} at epoch {epoch}, step {i}. The run diverged: lower the "
                    f"learning rate (now {optimizer.param_groups[0]['lr']:.3g}), add a warm-up, normalisation or "
                    f"gradient clipping, and check the inputs.")
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            timed.append(time.perf_counter() - t_step)
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            if after_step is not None:
                logged = after_step(model, (epoch - 1) * len(train_loader) + i - 1) or logged
            total_loss, n = total_loss + value * len(batch[0]), n + len(batch[0])  # summed in float64
            if metrics:
                preds.append(predicted_labels(outputs.detach()).cpu())
                targets.append(batch[1].cpu())
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": total_loss / n}
        if metrics:
            preds, targets = torch.cat(preds), torch.cat(targets)
            rec.update({f"train_{k}": float(fn(preds, targets)) for k, fn in metrics.items()})
        if val_loader is not None:
            ev = evaluate(model, val_loader, loss_fn)
            rec["val_loss"] = ev.loss
            rec.update({f"val_{k}": float(fn(ev.preds, ev.targets)) for k, fn in metrics.items()})
        rec.update(logged)
        rec["lr"] = optimizer.param_groups[0]["lr"]
        if monitor is not None:
            rec.update(monitor(model))
        rec.update(seconds=seconds, images_per_s=n / seconds)
        history.records.append(rec)
        if verbose:
            shown = " ".join(f"{k}={v:.4f}" for k, v in rec.items()
                             if isinstance(v, float) and k not in ("lr", "seconds", "images_per_s"))
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
    if ledger and flops is not None:
        record_fit(flops, planned_steps, getattr(train_loader, "batch_size", 0) or 0,
                   sum(timed[1:]) / len(timed[1:]) if len(timed) > 1 else None, ledger)
    return history


class Snapshots:
    """An ``after_step`` hook for ``fit`` that calls ``fn(model)`` once after each of the given numbers of
    optimiser steps (counted over the whole run) and keeps the results in ``values``: ``{steps done: fn(model)}``.

    A look at the model in mid-training must not change the training: ``fn`` runs inside
    ``torch.random.fork_rng()`` (the global random state is restored afterwards, however many numbers ``fn``
    draws) and in eval mode, with every submodule's train/eval flag restored afterwards. The hook returns
    nothing, so nothing is added to the ``History``.

    E.g. ``snap = Snapshots(lambda m: pooled_features(m, images), after=[50])``, ``fit(..., after_step=snap)``,
    then ``snap.values[50]`` (missing if the run stopped before its 50th step).
    """

    def __init__(self, fn: Callable[[torch.nn.Module], object], after: Iterable[int]):
        self.fn, self.after, self.values = fn, set(after), {}

    def __call__(self, model: torch.nn.Module, i: int) -> None:
        done = i + 1  # fit passes the index of the step just taken (0, 1, ...)
        if done in self.after and done not in self.values:
            with torch.random.fork_rng(), eval_mode(model):
                self.values[done] = self.fn(model)


__all__ = ["DivergenceError", "EarlyStopping", "Evaluation", "History", "Snapshots", "evaluate", "fit",
           "supervised_step"]
