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

That is 1 + 6n + 1 = 6n + 2 weighted layers. Each block (``course_utils.layers.blocks.BasicBlock``)
computes ``relu(F(x) + shortcut(x))`` where ``F`` is conv-norm-relu-conv-norm (eq. 1 of the paper). The
first block of stages 2 and 3 down-samples with a stride-2 conv; its shortcut is the paper's
parameter-free "option A" (take every other pixel and pad the new channels with zeros), so no extra
weighted layer is added and the count stays 6n + 2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from course_utils.layers.blocks import BasicBlock, conv_norm, kaiming_init
from course_utils.layers.norms import NormArg

__all__ = ["ResNet", "count_weighted_layers", "reference_resnet", "resnet6n2"]


class ResNet(nn.Module):
    """ResNet(6n+2): ``stem``, ``stage1..3`` (``nn.Sequential`` of ``BasicBlock``), ``fc``.

    ``forward_features`` returns the last stage's feature map ``(B, widths[-1], H/4, W/4)``;
    ``forward_head`` pools it to ``(B, num_features)`` and applies ``fc``.
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
        self.stem = nn.Sequential(*conv_norm(in_channels, widths[0], 3, norm=norm), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, stride=2 if (i > 0 and j == 0) else 1, shortcut="zeropad",
                                 norm=norm) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stage1, self.stage2, self.stage3 = stages
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, widths[-1], H/4, W/4)``."""
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean pool to ``(B, num_features)``, then the linear layer (skipped with ``pre_logits=True``)."""
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet6n2(n: int, num_classes: int, norm: NormArg = "bn", in_channels: int = 1,
              widths: Sequence[int] = (16, 32, 64)) -> ResNet:
    """ResNet with 6n+2 weighted layers; ``norm`` is a name in ``course_utils.layers.norms.NORMS`` or a callable."""
    return ResNet(n, num_classes, norm=norm, in_channels=in_channels, widths=widths)


def reference_resnet(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """The course's reference Fashion-MNIST model: ResNet-14 (n = 2) with PyTorch's fused BatchNorm."""
    return resnet6n2(2, num_classes, norm="torch_bn", in_channels=in_channels, widths=(16, 32, 64))


def count_weighted_layers(model: nn.Module) -> int:
    """Number of conv and linear layers (the "weighted layers" of the ResNet paper)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
