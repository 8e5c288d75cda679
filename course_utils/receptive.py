"""Receptive fields of convolution and pooling stacks, computed from the layers' kernels and strides.

For a chain of layers with kernel ``k_l`` and stride ``s_l``, the receptive field ``r`` (the side of the
input square one output unit can see) and the *jump* ``j`` (the input distance between two neighbouring
units) grow as (Araujo, Norris & Sim, "Computing receptive fields of convolutional neural networks",
Distill 2019, eq. 1-2)::

    r_l = r_{l-1} + (k_l - 1) * j_{l-1},        j_l = j_{l-1} * s_l,        r_0 = j_0 = 1.

A residual shortcut adds a path that sees *less* of the input, so the receptive field of a residual
network is the one of its longest (all-convolutions) path, which is what the formula gives.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(v) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ValueError(f"only square kernels and strides are supported, got {v}")
        return v[0]
    return v


def receptive_field_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per conv / pooling layer, in the order the forward pass runs them: ``layer``, ``type``,
    ``kernel``, ``stride``, ``output size``, ``jump`` and ``receptive field`` (pixels of the input).

    The order comes from hooks on one zero batch of ``input_shape`` ``(B, C, H, W)``, so branches and
    residual shortcuts are covered as they run. Dilated convs are not supported (an error says so).
    """
    order, handles = [], []
    for name, m in model.named_modules():
        if isinstance(m, _SPATIAL):
            handles.append(m.register_forward_hook(lambda mod, i, o, name=name: order.append((name, mod, o.shape[-1]))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(*input_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    r, j, rows = 1, 1, []
    for name, m, size in order:
        if _pair(getattr(m, "dilation", 1)) != 1:
            raise ValueError(f"{name} is dilated; the formula here assumes dilation 1")
        k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        r, j = r + (k - 1) * j, j * s
        rows.append({"layer": name, "type": type(m).__name__, "kernel": k, "stride": s, "output size": size,
                     "jump": j, "receptive field": r})
    return pd.DataFrame(rows)


def receptive_field(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Receptive field (pixels) of one unit of the last conv / pooling layer of ``model``."""
    table = receptive_field_table(model, input_shape)
    if table.empty:
        raise ValueError("the model has no Conv2d, MaxPool2d or AvgPool2d layer")
    return int(table["receptive field"].iloc[-1])


def gradient_support(model: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int]) -> int:
    """Side of the input square on which the centre unit of the map ``model(x)`` ``(B, C, H, W)`` has a non-zero
    gradient (pass ``net.forward_features`` for a classifier).

    An empirical receptive field, measured at an input of ones: with all-positive weights (so every ReLU is
    active) and no max-pooling (whose gradient reaches only the maximum) it equals the computed one, as long
    as the input is large enough not to clip it.
    """
    x = torch.ones(*input_shape, requires_grad=True)
    out = model(x)
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    rows = (x.grad[0].abs().sum(0) > 0).any(1).nonzero().flatten()
    return int(rows.max() - rows.min() + 1) if len(rows) else 0
