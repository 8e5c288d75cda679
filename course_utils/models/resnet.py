"""The ResNet(6n+2) family of He et al. (2016), section 4.2, with a pluggable normalization layer.

Layout for a 28x28 input (the paper's CIFAR network, with 32x32 replaced by 28x28):

=========  ==============================  ===========
stage      layers                          output
=========  ==============================  ===========
stem       3x3 conv, 16                    16 x 28 x 28
stage1     n blocks of two 3x3 convs, 16   16 x 28 x 28
stage2     n blocks of two 3x3 convs, 32   32 x 14 x 14
stage3     n blocks of two 3x3 convs, 64   64 x 7 x 7
head       global mean pool, linear r      r
=========  ==============================  ===========

That is 1 + 6n + 1 = 6n + 2 weighted layers. Each block computes ``relu(F(x) + shortcut(x))`` where
``F`` is conv-norm-relu-conv-norm (eq. 1 of the paper). The first block of stages 2 and 3 down-samples
with a stride-2 conv; its shortcut is the paper's parameter-free "option A" (take every other pixel and
pad the new channels with zeros), so no extra weighted layer is added and the count stays 6n + 2.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.norms import make_norm

NormArg = str | Callable[[int], nn.Module]


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class ShortcutA(nn.Module):
    """Parameter-free down-sampling shortcut: stride-2 subsampling, channels zero-padded (He et al., option A)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, cin + extra, H / s, W / s)


class BasicBlock(nn.Module):
    """Two 3x3 conv layers with normalization, and a residual connection around them."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: NormArg = "bn"):
        super().__init__()
        use_bias = norm == "none"  # a conv followed by a norm needs no bias; without a norm it does
        self.conv1 = _conv3x3(cin, cout, stride, bias=use_bias)
        self.norm1 = make_norm(norm, cout)
        self.conv2 = _conv3x3(cout, cout, bias=use_bias)
        self.norm2 = make_norm(norm, cout)
        self.shortcut = ShortcutA(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet(6n+2): ``stem``, ``stage1..3`` (``nn.Sequential`` of ``BasicBlock``), ``fc``.

    ``forward_features`` returns the last stage's feature map ``(B, widths[-1], H/4, W/4)``;
    ``forward_head`` pools it and applies ``fc``.
    """

    def __init__(self, n: int, num_classes: int, norm: NormArg = "bn", in_channels: int = 1,
                 widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1 (the network has 6n+2 layers), got {n!r}")
        if len(widths) != 3 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be three positive channel counts, got {widths!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.n, self.widths = n, tuple(widths)
        use_bias = norm == "none"
        self.stem = nn.Sequential(_conv3x3(in_channels, widths[0], bias=use_bias), make_norm(norm, widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, stride=2 if (i > 0 and j == 0) else 1, norm=norm)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stage1, self.stage2, self.stage3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, widths[-1], H/4, W/4)``."""
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean pool, then the linear layer (skipped with ``pre_logits=True``)."""
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet6n2(n: int, num_classes: int, norm: NormArg = "bn", in_channels: int = 1,
              widths: Sequence[int] = (16, 32, 64)) -> ResNet:
    """ResNet with 6n+2 weighted layers; ``norm`` is a name in ``course_utils.norms.NORMS`` or a callable."""
    return ResNet(n, num_classes, norm=norm, in_channels=in_channels, widths=widths)


def count_weighted_layers(model: nn.Module) -> int:
    """Number of conv and linear layers (the "weighted layers" of the ResNet paper)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
