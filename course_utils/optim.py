"""Optimisers and their learning-rate schedules, each returned as ``(optimizer, scheduler)``.

- ``decay_groups``: the decay / no-decay parameter split, written once (as in nanoGPT's
  ``configure_optimizers``): weight decay on weight matrices and kernels, none on 1-D tensors (biases,
  norm scales and shifts), which it would only pull towards zero;
- ``sgd_one_cycle``: SGD + Nesterov with a linear one-cycle schedule (the classification recipe);
- ``adamw_warmup_cosine``: AdamW with a linear warm-up and a half-cosine decay (BYOL's pre-training);
- ``adam_one_cycle``: Adam with a cosine one-cycle schedule (the segmentation recipe);
- ``adam_constant``: Adam at a constant rate (the boilerplate of chapters 2 and 3 on the ``gpu`` profile);
- ``OPTIMIZERS``: ``{"sgd": sgd_one_cycle, "adam": adam_constant}``, for configurations that name one.

The schedulers are stepped after every optimiser step (``fit``'s default ``scheduler_interval="step"``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Two parameter groups: tensors with ``ndim > 1`` decay by ``weight_decay``, 1-D ones (biases, norms) by 0."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def sgd_one_cycle(model: nn.Module, lr: float, total_steps: int, weight_decay: float = 5e-4,
                  momentum: float = 0.9, pct_start: float = 0.25):
    """SGD with Nesterov momentum and a one-cycle schedule (Smith & Topin 2017): the rate rises linearly to
    ``lr`` over ``pct_start`` of the steps, then falls linearly to ~0. No weight decay on 1-D parameters."""
    optimizer = torch.optim.SGD(decay_groups(model.parameters(), weight_decay), lr=lr, momentum=momentum,
                                nesterov=True)
    if total_steps < 4:  # too short for a warm-up and a decay phase: keep the rate constant
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    pct_start = min(max(pct_start, 2 / total_steps), 1 - 1 / total_steps)  # each phase at least 1-2 steps long
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                    pct_start=pct_start, anneal_strategy="linear")
    return optimizer, scheduler


def adamw_warmup_cosine(params: Iterable[nn.Parameter], lr: float, total_steps: int, weight_decay: float = 1e-4,
                        warmup: float = 0.1):
    """AdamW (no weight decay on 1-D parameters) whose rate rises linearly to ``lr`` over the first ``warmup``
    fraction of ``total_steps``, then follows a half cosine to 0."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1 (epochs x batches per epoch), got {total_steps}")
    optimizer = torch.optim.AdamW(decay_groups(params, weight_decay), lr=lr)
    warm = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:  # multiplies lr after `step` scheduler steps
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total_steps - warm) / max(total_steps - warm, 1)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adam_one_cycle(params: Iterable[nn.Parameter], lr: float, total_steps: int, weight_decay: float = 1e-4,
                   pct_start: float = 0.15):
    """Adam (L2 weight decay on every parameter, as the seed recipe had it) with PyTorch's cosine one-cycle
    schedule: from ``lr / 25`` up to ``lr`` over ``pct_start`` of the steps, then down to ``lr / 25e4``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1 (epochs x batches per epoch), got {total_steps}")
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                    pct_start=min(pct_start, max(0.0, 1 - 1 / total_steps)))
    return optimizer, scheduler


def adam_constant(model: nn.Module, lr: float, total_steps: int | None = None):
    """Adam at the constant rate ``lr`` and no scheduler (``None``); ``total_steps`` is unused."""
    return torch.optim.Adam(model.parameters(), lr=lr), None


OPTIMIZERS = {"sgd": sgd_one_cycle, "adam": adam_constant}

__all__ = ["OPTIMIZERS", "adam_constant", "adam_one_cycle", "adamw_warmup_cosine", "decay_groups", "sgd_one_cycle"]
