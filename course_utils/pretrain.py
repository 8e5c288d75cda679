"""Train a backbone once, keep its weights on disk, and load them on every later run.

The file is named after the configuration: ``<name>-<sha256 of the config>.pt``. A changed config
(epochs, seed, architecture, ...) gets a new file, so stale weights are never reused. The config must
therefore name everything that determines the weights. Files are written atomically, so an
interrupted run leaves no half-written checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

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


__all__ = ["Pretrained", "checkpoint_path", "config_key", "pretrained_backbone"]
