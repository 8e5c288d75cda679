"""Train a backbone once, keep its weights on disk, and load them on every later run.

``pretrained_run`` keeps, beside the weights, whatever the training returned (its history, and states of the
model during training recorded by a ``StateRecorder``): the intermediate states a later look needs.

The file is named after the configuration: ``<name>-<sha256 of the config>.pt``. A changed config
(epochs, seed, architecture, ...) gets a new file, so stale weights are never reused. The config must
therefore name everything that determines the weights. Files are written atomically, so an
interrupted run leaves no half-written checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from course_utils.io import atomic_torch_save


class Pretrained(NamedTuple):
    """What ``pretrained_backbone`` returns: the model, whether it came from the cache, and the file."""

    model: nn.Module
    from_cache: bool
    path: Path


def config_key(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``json.dumps(config, sort_keys=True)``; raises ``TypeError`` for non-JSON values."""
    try:
        blob = json.dumps(config, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"config must be JSON-serialisable (numbers, strings, lists, dicts): {err}") from err
    return hashlib.sha256(blob.encode()).hexdigest()


def checkpoint_path(cache_dir: str | Path, config: Mapping[str, Any], name: str = "backbone") -> Path:
    """Where ``pretrained_backbone`` keeps the weights for ``config``: ``cache_dir / f"{name}-{key}.pt"``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    return Path(cache_dir) / f"{safe}-{config_key(config)[:16]}.pt"


def pretrained_backbone(build_fn: Callable[[], nn.Module], train_fn: Callable[[nn.Module], Any],
                        config: Mapping[str, Any], cache_dir: str | Path, name: str = "backbone") -> Pretrained:
    """``build_fn()`` with the cached weights for ``config``, or trained by ``train_fn(model)`` and cached.

    Args:
        build_fn: builds a fresh, untrained model (the same architecture every call).
        train_fn: trains the model it is given in place; its return value is ignored.
        config: everything that determines the trained weights (JSON-serialisable); it keys the cache.
        cache_dir: folder of the checkpoints, created if needed.
        name: file-name prefix, e.g. the backbone's name.

    Returns ``Pretrained(model, from_cache, path)``; unpack it as ``model, cached, path = ...``.
    Raises ``RuntimeError`` naming the file to delete if the cached weights do not fit the model.
    """
    path = checkpoint_path(cache_dir, config, name)
    model = build_fn()
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as err:  # corrupted file, other architecture, not a state dict, ...
            raise RuntimeError(f"cached weights {path} do not match the model built by build_fn "
                               f"({type(err).__name__}: {err}); delete {path} to retrain") from err
        return Pretrained(model, True, path)
    train_fn(model)
    atomic_torch_save(model.state_dict(), path)
    return Pretrained(model, False, path)


class StateRecorder:
    """A ``monitor`` for ``fit`` (with ``monitor_before=True``) that keeps a copy of the model's state after
    each of the listed epochs, epoch 0 being the untrained model, and passes ``probe``'s numbers on.

    Args:
        epochs: the epochs whose states are kept (``states[epoch]``, CPU tensors); the others are not.
        attr: keep ``getattr(model, attr)``'s state instead of the whole model's, e.g. ``"backbone"`` of a BYOL.
        probe: ``probe(model) -> {name: value}`` called every epoch; its dict is what the monitor returns.

    The n-th call is epoch n - 1: use one recorder per run, from its start (not across a resumed run).
    """

    def __init__(self, epochs: Iterable[int], attr: str | None = None, probe: Callable | None = None):
        self.epochs, self.attr, self.probe = {int(e) for e in epochs}, attr, probe
        if any(e < 0 for e in self.epochs):
            raise ValueError(f"epochs must be >= 0 (0 is the untrained model), got {sorted(self.epochs)}")
        self.epoch, self.states = 0, {}

    def __call__(self, model: nn.Module) -> dict:
        if self.epoch in self.epochs:
            module = getattr(model, self.attr) if self.attr else model
            self.states[self.epoch] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        self.epoch += 1
        return dict(self.probe(model)) if self.probe is not None else {}


class PretrainedRun(NamedTuple):
    """What ``pretrained_run`` returns: ``Pretrained``'s fields and ``extra``, what the training returned."""

    model: nn.Module
    from_cache: bool
    path: Path
    extra: Any


def pretrained_run(build_fn: Callable[[], nn.Module], train_fn: Callable[[nn.Module], Any],
                   config: Mapping[str, Any], cache_dir: str | Path, name: str = "backbone") -> PretrainedRun:
    """``pretrained_backbone``, and ``train_fn``'s return value kept beside the weights (``<file>.extra.pt``).

    The value must be what ``torch.load(weights_only=True)`` reads back: tensors, numbers, strings, and lists
    and dicts of them (a history's records, a ``StateRecorder``'s states). It is written before the weights,
    so weights on disk always have their extra beside them; a missing one raises naming the file to delete.
    """
    extra_path = checkpoint_path(cache_dir, config, name).with_suffix(".extra.pt")

    def train_and_keep(model: nn.Module) -> None:
        atomic_torch_save(train_fn(model), extra_path)

    model, cached, path = pretrained_backbone(build_fn, train_and_keep, config, cache_dir, name)
    if not extra_path.exists():
        raise RuntimeError(f"{path} has no {extra_path.name} beside it (written by an older version?); "
                           f"delete {path} to retrain")
    return PretrainedRun(model, cached, path, torch.load(extra_path, map_location="cpu", weights_only=True))


__all__ = ["Pretrained", "PretrainedRun", "StateRecorder", "checkpoint_path", "config_key", "pretrained_backbone",
           "pretrained_run"]
