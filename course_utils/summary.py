"""How big a model is: ``count_parameters`` and ``model_summary`` (one row per module with its output shape
and parameter count)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from torch import nn

from course_utils.hooks import eval_mode

__all__ = ["count_parameters", "model_summary"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module, input_shape: Sequence[int], depth: int = 2,
                  modules: Sequence[str] | None = None) -> pd.DataFrame:
    """Run one zero batch through ``model`` and tabulate ``layer``, ``type``, ``output shape``, ``params``.

    Args:
        input_shape: ``(B, C, H, W)`` of the probe batch.
        depth: list modules whose dotted name has at most this many parts (``stage1`` = 1, ``stage1.0`` = 2);
            a module's parameter count includes its children.
        modules: explicit dotted names instead of ``depth``.

    The model's train/eval modes are restored and every hook removed afterwards.
    """
    names = list(modules) if modules is not None else [
        n for n, _ in model.named_modules() if n and n.count(".") < depth]
    rows, handles = {}, []
    for name in names:
        module = model.get_submodule(name)

        def hook(m, inp, out, name=name):
            rows[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(*input_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame([{
        "layer": n,
        "type": type(model.get_submodule(n)).__name__,
        "output shape": rows.get(n, "(not called)"),
        "params": count_parameters(model.get_submodule(n)),
    } for n in names])
