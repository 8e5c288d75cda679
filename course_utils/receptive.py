"""Receptive fields of convolution and pooling stacks, computed from the layers' kernels and strides.

For a chain of layers with kernel ``k_l`` and stride ``s_l``, the receptive field ``r`` (the side of the
input square one output unit can see) and the *jump* ``j`` (the input distance between two neighbouring
units) grow as (Araujo, Norris & Sim, "Computing receptive fields of convolutional neural networks",
Distill 2019, eq. 1-2)::

    r_l = r_{l-1} + (k_l - 1) * j_{l-1},        j_l = j_{l-1} * s_l,        r_0 = j_0 = 1.

A residual shortcut adds a path that sees *less* of the input, so the receptive field of a residual
network is the one of its longest (all-convolutions) path, which is what the formula gives.

The arithmetic is ``course_utils.interpret.receptive``'s (``layer_field``, ``Field.then``, with dilation
and padding); this module lists it layer by layer in the order a forward pass runs, as a table.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from course_utils.interpret.receptive import IDENTITY, layer_field

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def receptive_field_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per conv / pooling layer, in the order the forward pass runs them: ``layer``, ``type``,
    ``kernel``, ``stride``, ``output size``, ``jump`` and ``receptive field`` (pixels of the input).

    The order comes from hooks on one zero batch of ``input_shape`` ``(B, C, H, W)``, so branches and
    residual shortcuts are covered as they run. ``kernel`` is a dilated conv's span, ``d (k - 1) + 1``.
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
    field, rows = IDENTITY, []
    for name, m, size in order:
        own = layer_field(m)
        if len(set(own.size)) != 1 or len(set(own.jump)) != 1:
            raise ValueError(f"{name} is not square (kernel {m.kernel_size}, stride {m.stride}); the table lists one "
                             f"side per layer")
        field = field.then(own)
        rows.append({"layer": name, "type": type(m).__name__, "kernel": own.size[0], "stride": own.jump[0],
                     "output size": size, "jump": field.jump[0], "receptive field": field.size[0]})
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
