"""How big a model is: ``count_parameters`` and ``model_summary`` (one row per module with its output shape
and parameter count); where the time of a step goes: ``profile_operators`` (``torch.profiler``, per operator)."""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from course_utils.hooks import dry_run, forward_hooks

__all__ = ["count_parameters", "model_summary", "profile_operators"]


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
    rows = {}

    def recorder(name):
        def hook(m, inp, out):
            rows[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return hook

    with forward_hooks((model.get_submodule(name), recorder(name)) for name in names):
        dry_run(model, input_shape)
    return pd.DataFrame([{
        "layer": n,
        "type": type(model.get_submodule(n)).__name__,
        "output shape": rows.get(n, "(not called)"),
        "params": count_parameters(model.get_submodule(n)),
    } for n in names])


def profile_operators(fn: Callable[[], object], steps: int = 5, warmup: int = 3,
                      by_input_shape: bool = False) -> pd.DataFrame:
    """Where the time of ``fn()`` goes (e.g. one training step): ``torch.profiler``'s CPU self time of every
    operator, per call.

    Runs ``fn`` ``warmup`` times untimed (the first calls pick algorithms and allocate memory), then profiles
    ``steps`` more calls.

    Args:
        fn: called without arguments, e.g. ``functools.partial(train_step, model, optimizer, x, y)``.
        by_input_shape: one row per operator and shape of its first input (``"aten::add_ [32, 32, 28, 28]"``),
            to tell which layer an operator belongs to.

    Returns: one row per operator, most self time first, with columns ``operator``, ``calls per step``
    (``count // steps``: every call of ``fn`` is expected to run the same operators) and ``self ms per step``
    (the time inside the operator itself, not in the operators it calls, so the column adds up to the
    operator time of a call).
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=by_input_shape) as prof:
        for _ in range(steps):
            fn()
    events = prof.key_averages(group_by_input_shape=by_input_shape)
    rows = pd.DataFrame({
        "operator": [f"{e.key} {e.input_shapes[0] if e.input_shapes else ''}" if by_input_shape else e.key
                     for e in events],
        "count": [e.count for e in events], "self_us": [e.self_cpu_time_total for e in events]})
    if by_input_shape:  # the same first input shape with different other inputs: one row
        rows = rows.groupby("operator", as_index=False, sort=False).sum()
    rows = rows.sort_values("self_us", ascending=False, kind="stable", ignore_index=True)
    return pd.DataFrame({"operator": rows["operator"], "calls per step": rows["count"] // steps,
                         "self ms per step": rows["self_us"] / 1e3 / steps})
