"""SmallVGG: a plain stack of named conv layers, the network whose filters chapter 7 looks at.

VGG's recipe (Simonyan & Zisserman, 2015): pairs of 3x3 convolutions, each followed by a ReLU, and a
2x2 max-pool between pairs. No shortcut, so every unit has one path to the input and its receptive
field is the textbook recurrence; the head is a global mean pool and a linear layer, so class
activation maps apply too. For a 28x28 input and ``widths=(32, 64, 128)``:

=================  ==============  ===============  ================
layer              output          receptive field  jump
=================  ==============  ===============  ================
features.conv1     32 x 28 x 28     3 x 3           1
features.conv2     32 x 28 x 28     5 x 5           1
features.pool1     32 x 14 x 14     6 x 6           2
features.conv3     64 x 14 x 14    10 x 10          2
features.conv4     64 x 14 x 14    14 x 14          2
features.pool2     64 x 7 x 7      16 x 16          4
features.conv5    128 x 7 x 7      24 x 24          4
features.conv6    128 x 7 x 7      32 x 32          4
fc                 num_classes     (global mean pool, then linear)
=================  ==============  ===============  ================

Every layer has a name (``features.conv3``, ``features.relu3``, ``features.pool1``), so
``course_utils.interpret`` finds it by name. Without a norm (``"none"``, or any norm that builds an
``nn.Identity``) each conv has a bias and no ``norm<i>`` layer, and turning a filter off (zeroing its output
channel) is the same as zeroing its weights and bias.

``pad_value`` changes what the first conv sees beyond the image border: by default (``None``) its zero
padding, which for standardised inputs is the training *mean*, brighter than Fashion-MNIST's black
background; with a number, the input is padded by one pixel with that value (e.g. the normalised
background, ``-mean / std``) and the first conv pads no more. The attribute can be changed after training
(the weights are the same), to compare one network under both paddings.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.blocks import conv_norm
from course_utils.layers.norms import NormArg, is_identity

__all__ = ["SmallVGG"]


class SmallVGG(nn.Module):
    """``len(widths)`` stages of two 3x3 convs (padding 1) with ReLU, a 2x2 max-pool between stages,
    then ``fc`` after a global mean pool. ``norm`` (a name in ``course_utils.layers.norms.NORMS`` or a
    callable) goes after each conv; ``"none"`` by default. ``pad_value``: the value the input is padded
    with before the first conv (``None``: that conv's own zero padding); see the module docstring."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), num_classes: int = 10, in_channels: int = 1,
                 norm: NormArg = "none", pad_value: float | None = None):
        super().__init__()
        widths = tuple(widths)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive channel counts, got {widths!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        layers, cin, n = OrderedDict(), in_channels, 0
        for stage, w in enumerate(widths, start=1):
            for _ in range(2):
                n += 1
                layers[f"conv{n}"], norm_layer = conv_norm(cin, w, 3, norm=norm)
                if not is_identity(norm_layer):
                    layers[f"norm{n}"] = norm_layer
                layers[f"relu{n}"] = nn.ReLU()
                cin = w
            if stage < len(widths):
                layers[f"pool{stage}"] = nn.MaxPool2d(2)
        self.widths, self.num_features = widths, widths[-1]
        self.features = nn.Sequential(layers)
        self.pad_value = pad_value
        self.fc = nn.Linear(widths[-1], num_classes)

    @property
    def conv_names(self) -> list[str]:
        """Names of the conv layers in order, e.g. ``["features.conv1", ...]``."""
        return [name for name, m in self.named_modules() if isinstance(m, nn.Conv2d)]

    @property
    def pad_value(self) -> float | None:
        return self._pad_value

    @pad_value.setter
    def pad_value(self, value: float | None) -> None:
        if value is not None and not isinstance(value, (int, float)):
            raise TypeError(f"pad_value must be a number or None, got {type(value).__name__}")
        self._pad_value = None if value is None else float(value)
        self.features.conv1.padding = (1, 1) if value is None else (0, 0)  # the input is padded once, not twice

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, widths[-1], H / 2^(stages-1), W / 2^(stages-1))``."""
        if self._pad_value is not None:
            x = F.pad(x, (1, 1, 1, 1), value=self._pad_value)
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean pool, then the linear layer (skipped with ``pre_logits=True``)."""
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
