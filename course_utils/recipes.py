"""The course's three training recipes, each a thin caller of ``train.fit``.

- ``train_classifier``: in-memory loaders, SGD with Nesterov momentum and a one-cycle schedule, cross-entropy
  (an "epoch" may be a fixed number of steps, for budgets counted in optimizer steps);
- ``train_segmenter``: Adam with a one-cycle schedule and a per-pixel loss, keeping the predicted masks of a
  few watched images after every epoch;
- ``train_byol``: BYOL (Grill et al. 2020): AdamW with a warm-up and a cosine decay, the target network
  updated by a moving average after every step (an ``after_step`` hook of ``fit``).

Each builds its loaders and optimiser and hands ``fit`` a step; checkpoints and exact resumption come from ``fit``.
Beside them, ``lockstep_sgd`` trains two models from the same start on the same batches and records how far
apart they drift: the exact check that two implementations of one function train the same.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.augment import TwoViews
from course_utils.features import predict, predict_proba
from course_utils.loader import TensorLoader
from course_utils.losses import symmetric_byol_loss
from course_utils.models.byol import BYOL, byol_tau
from course_utils.optim import adam_one_cycle, adamw_warmup_cosine, sgd_one_cycle
from course_utils.train import EarlyStopping, History, Metric, fit


def byol_step(model: BYOL, batch) -> torch.Tensor:
    """BYOL's step: ``(views (B, 2C, H, W), _)`` -> the symmetric loss of its predictions and target projections."""
    views, _ = batch
    return symmetric_byol_loss(*model(views))


class _Steps:
    """A loader of exactly ``steps`` batches per epoch, taken from ``loader``'s consecutive passes (so an epoch may
    end inside a pass or span several); ``set_epoch`` replays the passes, so a resumed run sees the same batches."""

    def __init__(self, loader: TensorLoader, steps: int):
        if steps < 1 or len(loader) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 and the data must give a batch, got {steps} steps, "
                             f"{len(loader)} batches per pass")
        self.loader, self.steps, self.epoch = loader, steps, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        rounds, skip = divmod(self.epoch * self.steps, len(self.loader))  # where this epoch starts
        self.epoch += 1
        produced = 0
        while True:
            self.loader.set_epoch(rounds)
            for i, batch in enumerate(self.loader):  # skipped batches are drawn too, to keep the augmentation's RNG
                if i >= skip:
                    yield batch
                    produced += 1
                    if produced == self.steps:
                        return
            rounds, skip = rounds + 1, 0


def train_classifier(model: torch.nn.Module, train_data: tuple, val_data: tuple | None, *, epochs: int,
                     batch_size: int, lr: float, seed: int = 0, weight_decay: float = 5e-4,
                     label_smoothing: float = 0.0, augment=None, mean: float | None = None,
                     std: float | None = None, metrics: dict[str, Metric] | None = None,
                     early_stopping: EarlyStopping | None = None, checkpoint=None, progress: bool | None = None,
                     verbose: bool = True, steps_per_epoch: int | None = None, monitor: Callable | None = None,
                     monitor_before: bool = False) -> History:
    """The course's classification recipe around ``fit``: in-memory loaders, SGD + one-cycle, cross-entropy.

    Args:
        train_data, val_data: ``(images, labels)`` tensors (uint8 or float images ``(N, C, H, W)``).
        augment: a batched augmentation for the training loader (see ``course_utils.augment``).
        mean, std: input normalisation applied by the loaders.
        steps_per_epoch: an epoch of exactly this many optimizer steps, the batches continuing through the
            reshuffled passes over the data, instead of one pass; the run then takes ``epochs * steps_per_epoch``
            steps whatever the batch size (equal budgets in steps need not be whole passes).
        monitor, monitor_before: passed to ``fit`` (e.g. a ``pretrain.StateRecorder`` keeping states by epoch).
    """
    train = TensorLoader(*train_data, batch_size, shuffle=True, augment=augment, drop_last=len(train_data[1]) > batch_size,
                         seed=seed, mean=mean, std=std)
    if steps_per_epoch is not None:
        train = _Steps(train, steps_per_epoch)
    val = TensorLoader(*val_data, 1000, mean=mean, std=std) if val_data is not None else None
    optimizer, scheduler = sgd_one_cycle(model, lr, epochs * len(train), weight_decay)
    loss_fn = (lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)) if label_smoothing else F.cross_entropy
    return fit(model, train, val, epochs=epochs, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn,
               metrics=metrics, checkpoint=checkpoint, early_stopping=early_stopping, progress=progress, verbose=verbose,
               monitor=monitor, monitor_before=monitor_before)


class SegmentationRun(NamedTuple):
    """What ``train_segmenter`` returns: the ``History`` and the ``(epochs, n, H, W)`` uint8 predicted labels of
    the watched images after each epoch (empty without them)."""

    history: History
    snapshots: torch.Tensor


def train_segmenter(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, *, epochs: int,
                    loss_fn: Callable, lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 32,
                    seed: int = 0, watch: torch.Tensor | None = None, checkpoint=None, channels_last: bool = True,
                    progress: bool | None = False, verbose: bool = False,
                    val: tuple[torch.Tensor, torch.Tensor] | None = None) -> SegmentationRun:
    """The segmentation recipe around ``fit``: ``(N, C, H, W)`` images, ``(N, H, W)`` masks, Adam + one-cycle.

    Args:
        loss_fn: ``loss_fn(logits (B, K, H, W), masks (B, H, W)) -> scalar``.
        lr: the peak learning rate; the schedule warms up over the first 15% of the steps, then anneals.
        watch: ``(n, C, H, W)`` images whose predicted masks are kept after every epoch (in the checkpoint too).
        channels_last: convert the model and the batches to ``torch.channels_last`` (faster convolutions on a
            CPU: 1.2x for the hourglass, measured; the results are the same up to float rounding).
        val: ``(images, masks)`` held out: ``loss_fn`` on them (eval mode) after every epoch, as ``val_loss``.
    The model is left in eval mode.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = TensorLoader(images, masks, batch_size, shuffle=True, drop_last=len(images) > batch_size, seed=seed,
                          channels_last=channels_last)
    optimizer, scheduler = adam_one_cycle(model.parameters(), lr, epochs * len(loader), weight_decay)
    snapshot = None if watch is None and val is None else _segmentation_monitor(watch, val, loss_fn, batch_size)
    history = fit(model, loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, metrics={},
                  monitor=snapshot, checkpoint=checkpoint, progress=progress, verbose=verbose)
    model.eval()
    snapshots = [r.pop("snapshot") for r in history.records if "snapshot" in r]
    return SegmentationRun(history, torch.stack(snapshots) if snapshots else torch.empty(0, dtype=torch.uint8))


def _segmentation_monitor(watch: torch.Tensor | None, val: tuple | None, loss_fn: Callable,
                          batch_size: int) -> Callable:
    """The epoch monitor of ``train_segmenter``: the watched images' labels and the held-out loss."""
    if val is not None and len(val[0]) != len(val[1]):
        raise ValueError(f"val must be (images, masks) of equal length, got {len(val[0])} and {len(val[1])}")

    @torch.no_grad()
    def monitor(model: nn.Module) -> dict:
        record = {}
        if watch is not None:
            record["snapshot"] = predict_proba(model, watch).argmax(1).to(torch.uint8)
        if val is not None:  # eval mode, on the CPU (``predict``)
            record["val_loss"] = float(loss_fn(predict(model, val[0], batch_size=batch_size), val[1].cpu()))
        return record
    return monitor


def train_byol(model: BYOL, images: torch.Tensor, *, epochs: int, batch_size: int, lr: float, augment,
               base_tau: float = 0.99, weight_decay: float = 1e-4, warmup: float = 0.1, seed: int = 0,
               mean: float | None = None, std: float | None = None, probe: Callable | None = None,
               checkpoint=None, progress: bool | None = None, verbose: bool = True) -> History:
    """The BYOL recipe around ``fit`` (Grill et al. 2020): unlabelled ``(N, C, H, W)`` images, AdamW with a
    warm-up and a cosine decay, the target updated by EMA after every step.

    Args:
        augment: the augmentation of each view (or two, one per view), stacked by ``TwoViews``.
        base_tau: the EMA rate rises from ``base_tau`` to 1 over all steps (``byol_tau``, section 3.2).
        probe: ``probe(model) -> {name: value}`` after every epoch and once before training (epoch 0),
            e.g. a ``course_utils.features.KNNProbe``.
    Records per epoch: ``train_loss`` (mean symmetric loss, in [0, 8]), ``tau``, ``lr``, the probe's values.
    """
    if not isinstance(model, BYOL):
        raise TypeError(f"train_byol trains a course_utils.models.byol.BYOL, got {type(model).__name__}")
    loader = TensorLoader(images, torch.zeros(len(images)), batch_size, shuffle=True, augment=TwoViews(augment),
                          drop_last=len(images) > batch_size, seed=seed, mean=mean, std=std)
    total_steps = epochs * len(loader)
    optimizer, scheduler = adamw_warmup_cosine(model.online_parameters(), lr, total_steps, weight_decay, warmup)

    def update_target(model: BYOL, i: int) -> dict:  # xi <- tau xi + (1 - tau) theta after every step
        tau = byol_tau(i, total_steps, base_tau)
        model.update_target(tau)
        return {"tau": tau}

    return fit(model, loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler, step=byol_step,
               after_step=update_target, monitor=probe, monitor_before=True, checkpoint=checkpoint,
               progress=progress, verbose=verbose)


def _copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s parameters and buffers into ``dst``: by name when the names agree, else one for one in order."""
    a, b = src.state_dict(), dst.state_dict()
    shapes_a, shapes_b = [tuple(v.shape) for v in a.values()], [tuple(v.shape) for v in b.values()]
    if shapes_a != shapes_b:
        raise ValueError(f"cannot map the {len(a)} tensors of {type(src).__name__} onto the {len(b)} of "
                         f"{type(dst).__name__}: names and shapes differ; give both models the same layers in the same order")
    dst.load_state_dict(a if list(a) == list(b) else dict(zip(b, a.values())))


def lockstep_sgd(model_a: nn.Module, model_b: nn.Module, batches: Iterable, *, lr: float, momentum: float = 0.9,
                 loss_fn: Callable = F.cross_entropy) -> list[dict]:
    """Train two models side by side from the same start on the same batches and record how far apart they are.

    ``model_b`` first receives ``model_a``'s parameters and buffers (by name, or one for one in order when the
    names differ). Then, for each batch ``(x, y)``, both take one SGD step (``lr``, heavy-ball ``momentum``, no
    weight decay) in training mode. Two implementations of the same function should stay equal up to rounding;
    run both in float64 (``model.double()``, double ``x``) to see the function, in float32 to see the rounding grow.

    Returns one record per step: ``step`` (1, 2, ...), ``loss_a``, ``loss_b``, ``loss_diff`` = ``|loss_a − loss_b|``
    and ``weight_diff`` = the largest ``|w_a − w_b|`` over all parameters after the step.
    """
    pa, pb = list(model_a.parameters()), list(model_b.parameters())
    if len(pa) != len(pb):
        raise ValueError(f"the models have {len(pa)} and {len(pb)} parameter tensors; lockstep needs the same layers")
    _copy_state(model_a, model_b)
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum) for m in (model_a, model_b)]
    model_a.train(), model_b.train()
    records = []
    for i, (x, y) in enumerate(batches, 1):
        losses = []
        for model, opt in zip((model_a, model_b), opts):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            w_diff = max((a - b).abs().max().item() for a, b in zip(pa, pb))
        records.append({"step": i, "loss_a": losses[0], "loss_b": losses[1], "loss_diff": abs(losses[0] - losses[1]),
                        "weight_diff": w_diff})
    return records


__all__ = ["SegmentationRun", "byol_step", "lockstep_sgd", "train_byol", "train_classifier", "train_segmenter"]
