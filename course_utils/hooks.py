"""Changing a model for a while and giving it back as it was: train/eval modes, forward hooks.

Every function here is a context manager: it changes the model on entry and restores it on exit, also
when the body raises (as pytorch-grad-cam's ``with GradCAM(...) as cam:`` releases its hooks). The
package never leaves a caller's model in another mode or with a hook attached.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    modes = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield model
    finally:
        for m, was in modes.items():
            m.training = was


def eval_mode(model: nn.Module):
    """Put ``model`` (and every submodule) in eval mode; restore each submodule's own flag afterwards."""
    return _mode(model, False)


def train_mode(model: nn.Module):
    """Put ``model`` (and every submodule) in training mode; restore each submodule's own flag afterwards."""
    return _mode(model, True)


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs of ``module`` in a list while the ``with`` block runs; the hook is removed on exit."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _inp, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


@contextmanager
def forward_hooks(hooks) -> Iterator[None]:
    """Register ``(module, fn)`` forward hooks for the ``with`` block; every one is removed on exit."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def dry_run(model: nn.Module, input_shape) -> torch.Tensor:
    """One forward pass of zeros of ``input_shape`` on the model's device and dtype, in eval mode (restored)."""
    p = next(model.parameters())
    with eval_mode(model):
        return model(torch.zeros(*input_shape, device=p.device, dtype=p.dtype))


__all__ = ["capture_output", "dry_run", "eval_mode", "forward_hooks", "train_mode"]
