"""A deformable convolution layer and the two models of Chapter 3 that use it.

``DeformConv2d`` (Dai et al. 2017, section 2.1): "the offsets are obtained by applying a convolutional
layer over the same input feature map", with the same kernel size, stride and padding as the main
convolution, predicting ``2 k^2`` channels, a ``(dy, dx)`` pair per kernel point and output position.
With ``modulated=True`` it is DCNv2 (Zhu et al. 2019, section 3.1): the same layer also predicts ``k^2``
modulation scalars passed through a sigmoid.

The offset layer starts at zero (weights and bias), as in both papers, so an untrained
``DeformConv2d`` samples the regular grid and computes exactly a regular convolution; the offsets
grow only where the gradient asks for them. The modulation logits start at zero too, so every
modulation scalar starts at sigmoid(0) = 0.5 (DCNv2's choice): a modulated layer starts as half of
the regular convolution (before its bias), which a following BatchNorm absorbs.

Models (each with ``forward_features`` / ``forward_head``):

- ``TwoBlockCNN``: two blocks of conv-BN-ReLU-max-pool and a linear layer; ``deformable=True`` swaps both
  convolutions for ``DeformConv2d`` and changes nothing else;
- ``PairClassifier``: a small residual network that reads an (original, changed) pair as a 2-channel image
  and names the change; ``deformable_last_stage=True`` makes the convolutions of its last stage deformable.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from course_utils.ops import deform_conv2d_reference

BACKENDS = ("torchvision", "reference")


class DeformConv2d(nn.Module):
    """A deformable convolution with its own offset predictor.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as for ``nn.Conv2d`` (square kernel).
        modulated: also predict a sigmoid modulation mask per kernel point (DCNv2).
        backend: ``"torchvision"`` (``torchvision.ops.deform_conv2d``, compiled, fast) or ``"reference"``
            (``course_utils.ops.deform_conv2d_reference``, the from-scratch version; same numbers, slower).
        bias: learn a bias for the main convolution (not needed before a BatchNorm).

    Attributes:
        offset_conv: ``nn.Conv2d(in_channels, 2 k^2 (+ k^2), kernel_size, stride, padding)``, zero-initialised.
        weight, bias: the main convolution's parameters, shaped as ``nn.Conv2d``'s and initialised the same way.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 modulated: bool = False, backend: str = "torchvision", bias: bool = True):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError("in_channels, out_channels, kernel_size and stride must be >= 1 and padding >= 0; "
                             f"got {in_channels}, {out_channels}, {kernel_size}, {stride}, {padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.modulated, self.backend = modulated, backend
        K = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, (3 if modulated else 2) * K, kernel_size, stride, padding)
        nn.init.zeros_(self.offset_conv.weight)  # start on the regular grid (and with every mask at 0.5)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default initialisation
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * K)
            nn.init.uniform_(self.bias, -bound, bound)

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predicted ``offset`` ``(B, 2 k^2, H_out, W_out)`` (``(dy, dx)`` per kernel point, in pixels) and
        ``mask`` ``(B, k^2, H_out, W_out)`` in (0, 1), or ``None`` when not modulated."""
        out = self.offset_conv(x)
        K2 = 2 * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[:, :K2], torch.sigmoid(out[:, K2:])

    def sampling_points(self, x: torch.Tensor) -> torch.Tensor:
        """Where each kernel point reads ``x``: ``(B, k^2, H_out, W_out, 2)`` as (row, column) in ``x``'s pixels.

        The regular grid ``(oy * stride - padding + i, ox * stride - padding + j)`` plus the predicted offsets.
        """
        offset, _ = self.offsets(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, _, H_out, W_out = offset.shape
        rows = torch.arange(kh, device=x.device)[:, None] + torch.arange(H_out, device=x.device)[None, :] * sh - ph
        cols = torch.arange(kw, device=x.device)[:, None] + torch.arange(W_out, device=x.device)[None, :] * sw - pw
        grid = torch.stack(torch.broadcast_tensors(rows[:, None, :, None], cols[None, :, None, :]), -1)  # (kh, kw, H, W, 2)
        grid = grid.reshape(kh * kw, H_out, W_out, 2).to(offset.dtype)
        return grid + offset.reshape(B, kh * kw, 2, H_out, W_out).permute(0, 1, 3, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets(x)
        if self.backend == "torchvision":
            from torchvision.ops import deform_conv2d as op
        else:
            op = deform_conv2d_reference
        return op(x.contiguous(), offset.contiguous(), self.weight, self.bias, stride=self.stride,
                  padding=self.padding, mask=mask.contiguous() if mask is not None else None)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, modulated={self.modulated}, backend={self.backend!r}, "
                f"bias={self.bias is not None}")


def conv3x3(cin: int, cout: int, stride: int = 1, deformable: bool = False, modulated: bool = False,
            backend: str = "torchvision") -> nn.Module:
    """A 3x3 convolution with padding 1 and no bias (a BatchNorm follows), regular or deformable."""
    if deformable:
        return DeformConv2d(cin, cout, 3, stride, 1, modulated=modulated, backend=backend, bias=False)
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class TwoBlockCNN(nn.Module):
    """Two blocks of (3x3 conv, BatchNorm, ReLU, 2x2 max-pool), then one linear layer.

    Args:
        num_classes, in_channels: output classes and input channels.
        widths: channels of the two blocks.
        image_size: input height = width (28 for Fashion-MNIST), which sets the linear layer's input size.
        deformable: use ``DeformConv2d`` for both convolutions (everything else identical).
        modulated, backend: passed to ``DeformConv2d``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (32, 64),
                 image_size: int = 28, deformable: bool = False, modulated: bool = False,
                 backend: str = "torchvision"):
        super().__init__()
        if len(widths) != 2 or min(widths) < 1:
            raise ValueError(f"widths must be two positive channel counts, got {widths!r}")
        if image_size % 4 != 0:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 max-pools), got {image_size}")
        blocks, cin = [], in_channels
        for w in widths:
            blocks.append(nn.Sequential(conv3x3(cin, w, 1, deformable, modulated, backend), nn.BatchNorm2d(w),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            cin = w
        self.block1, self.block2 = blocks
        self.fc = nn.Linear(widths[-1] * (image_size // 4) ** 2, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, widths[1], H/4, W/4)``."""
        return self.block2(self.block1(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        flat = features.flatten(1)
        return flat if pre_logits else self.fc(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ResidualBlock(nn.Module):
    """``relu(F(x) + shortcut(x))`` with ``F`` = conv-BN-ReLU-conv-BN (He et al. 2016).

    When the block changes the number of channels (or the resolution), ``x`` cannot be added to ``F(x)``
    as it is: the shortcut is then a 1x1 convolution (with the block's stride, padding 0) and a BatchNorm,
    a learned per-pixel linear map from ``cin`` to ``cout`` channels. Otherwise it is the identity.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, deformable: bool = False, modulated: bool = False,
                 backend: str = "torchvision"):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, deformable, modulated, backend)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout, 1, deformable, modulated, backend)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, padding=0, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PairClassifier(nn.Module):
    """Names the change between two images, read together as one 2-channel image.

    Layout for 28x28 pairs and ``widths=(32, 64, 128)``: stem (3x3 conv, BN, ReLU) 32x28x28; ``stage1``
    32x28x28; ``stage2`` 64x14x14; ``stage3`` 128x7x7 (each stage ``blocks`` residual blocks, the first of
    stages 2 and 3 with stride 2 and a 1x1-conv shortcut); head: global mean pool, linear.

    Args:
        num_classes: 7 for ``course_utils.distort.PAIR_LABELS``.
        in_channels: 2, the original and the changed image.
        deformable_last_stage: make the 3x3 convolutions of ``stage3`` deformable.
        modulated, backend: passed to ``DeformConv2d``.
    """

    def __init__(self, num_classes: int = 7, in_channels: int = 2, widths: Sequence[int] = (32, 64, 128),
                 blocks: int = 1, deformable_last_stage: bool = False, modulated: bool = False,
                 backend: str = "torchvision"):
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive channel counts, got {widths!r}")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            deform = deformable_last_stage and i == len(widths) - 1
            stages.append(nn.Sequential(*[
                ResidualBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, deform, modulated, backend)
                for j in range(blocks)]))
            cin = w
        self.stage1, self.stage2, self.stage3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H, W)`` -> ``(B, widths[2], H/4, W/4)``."""
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
