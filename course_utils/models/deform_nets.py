"""The two models of Chapter 3 built with deformable convolutions (``course_utils.layers.deform.DeformConv2d``).

Each has ``forward_features`` / ``forward_head`` and ``num_features``; norms and activations are passed as
layers (``norm`` defaults to PyTorch's ``nn.BatchNorm2d``, ``"torch_bn"``):

- ``TwoBlockCNN``: two blocks of conv-norm-ReLU-max-pool and a linear layer; ``deformable=True`` swaps both
  convolutions for ``DeformConv2d`` and changes nothing else;
- ``PairClassifier``: a small residual network that reads an (original, changed) pair as a 2-channel image
  and names the change; ``deformable_last_stage=True`` makes the convolutions of its last stage deformable.

``grid_affines`` summarises where a trained deformable ``TwoBlockCNN`` reads: per image and layer, the 2x2 map
that best carries the regular kernel grid to the learned sampling points (its scale and angle can then be set
beside each image's known distortion).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.blocks import BasicBlock, ConvArg, conv_norm
from course_utils.layers.deform import DeformConv2d, grid_affine
from course_utils.layers.norms import ActArg, NormArg, make_act

__all__ = ["PairClassifier", "TwoBlockCNN", "conv_layer", "grid_affines"]


def conv_layer(deformable: bool = False, modulated: bool = False, backend: str = "torchvision") -> ConvArg:
    """The conv class of a block: ``nn.Conv2d``, or ``DeformConv2d`` with ``modulated`` and ``backend`` bound."""
    return partial(DeformConv2d, modulated=modulated, backend=backend) if deformable else nn.Conv2d


class TwoBlockCNN(nn.Module):
    """Two blocks of (3x3 conv, norm, ReLU, 2x2 max-pool), then one linear layer over the flattened map.

    Args:
        num_classes, in_channels: output classes and input channels.
        widths: channels of the two blocks.
        image_size: input height = width (28 for Fashion-MNIST), which sets the linear layer's input size.
        deformable: use ``DeformConv2d`` for both convolutions (everything else identical).
        modulated, backend: passed to ``DeformConv2d``.
        norm, act: the layers after each conv (a name, a class or a ``partial``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (32, 64),
                 image_size: int = 28, deformable: bool = False, modulated: bool = False,
                 backend: str = "torchvision", norm: NormArg = "torch_bn", act: ActArg = "relu"):
        super().__init__()
        if len(widths) != 2 or min(widths) < 1:
            raise ValueError(f"widths must be two positive channel counts, got {widths!r}")
        if image_size % 4 != 0:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 max-pools), got {image_size}")
        blocks, cin, conv = [], in_channels, conv_layer(deformable, modulated, backend)
        for w in widths:
            blocks.append(nn.Sequential(*conv_norm(cin, w, 3, norm=norm, conv=conv), make_act(act), nn.MaxPool2d(2)))
            cin = w
        self.block1, self.block2 = blocks
        self.num_features = widths[-1] * (image_size // 4) ** 2  # the flattened map the linear layer reads
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, widths[1], H/4, W/4)``."""
        return self.block2(self.block1(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten to ``(B, num_features)``, then the linear layer (skipped with ``pre_logits=True``)."""
        flat = features.flatten(1)
        return flat if pre_logits else self.fc(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PairClassifier(nn.Module):
    """Names the change between two images, read together as one 2-channel image.

    Layout for 28x28 pairs and ``widths=(32, 64, 128)``: stem (3x3 conv, norm, ReLU) 32x28x28; ``stage1``
    32x28x28; ``stage2`` 64x14x14; ``stage3`` 128x7x7 (each stage ``blocks`` residual ``BasicBlock``\\ s, the
    first of stages 2 and 3 with stride 2 and a 1x1-conv + norm shortcut); head: global mean pool, linear.

    Args:
        num_classes: 7 for the transformation pairs' labels.
        in_channels: 2, the original and the changed image.
        deformable_last_stage: make the 3x3 convolutions of ``stage3`` deformable.
        modulated, backend: passed to ``DeformConv2d``.
        norm: the norm after every conv (a name, a class or a ``partial``).
    """

    def __init__(self, num_classes: int = 7, in_channels: int = 2, widths: Sequence[int] = (32, 64, 128),
                 blocks: int = 1, deformable_last_stage: bool = False, modulated: bool = False,
                 backend: str = "torchvision", norm: NormArg = "torch_bn"):
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive channel counts, got {widths!r}")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.stem = nn.Sequential(*conv_norm(in_channels, widths[0], 3, norm=norm), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            conv = conv_layer(deformable_last_stage and i == len(widths) - 1, modulated, backend)
            stages.append(nn.Sequential(*[
                BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, "projection", norm, conv=conv)
                for j in range(blocks)]))
            cin = w
        self.stage1, self.stage2, self.stage3 = stages
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H, W)`` -> ``(B, widths[2], H/4, W/4)``."""
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean pool to ``(B, num_features)``, then the linear layer (skipped with ``pre_logits=True``)."""
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@torch.no_grad()
def grid_affines(model: TwoBlockCNN, x: torch.Tensor, on_object: torch.Tensor,
                 batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Per image, the least-squares map of each deformable layer's sampling grid (``layers.deform.grid_affine``).

    Args:
        model: a ``TwoBlockCNN(deformable=True)``; evaluated in eval mode (its mode is restored afterwards).
        x: ``(N, C, H, W)`` inputs as the model reads them (normalised).
        on_object: ``(N, H, W)`` weights of the input's positions (e.g. 1 on the garment, 0 on the background),
            max-pooled to each layer's output size, so a position counts when its window touches the object.
        batch_size: images per forward pass (memory only; the result does not depend on it).

    Returns:
        ``{"block1": (N, 2, 2), "block2": (N, 2, 2)}`` float64 maps in (row, column) coordinates of each
        layer's input: the identity for the regular grid.
    """
    convs = [model.block1[0], model.block2[0]]
    if not all(isinstance(c, DeformConv2d) for c in convs):
        raise ValueError("grid_affines needs a TwoBlockCNN built with deformable=True: a regular conv has no "
                         "learned sampling points")
    if tuple(on_object.shape) != (len(x), *x.shape[-2:]):
        raise ValueError(f"on_object must be (N, H, W) = {(len(x), *x.shape[-2:])}, got {tuple(on_object.shape)}")
    was_training = model.training
    model.eval()
    try:
        out = {"block1": [], "block2": []}
        for i in range(0, len(x), batch_size):
            h, weight = x[i:i + batch_size], on_object[i:i + batch_size, None].double()
            for name, block in (("block1", model.block1), ("block2", model.block2)):
                points = block[0].sampling_points(h).double()  # (B, 9, H_out, W_out, 2)
                w = F.adaptive_max_pool2d(weight, points.shape[2:4])[:, 0]
                out[name].append(grid_affine(points, block[0].kernel_size[0], w))
                h = block(h)
                weight = F.adaptive_max_pool2d(weight, h.shape[-2:])
        return {k: torch.cat(v) for k, v in out.items()}
    finally:
        model.train(was_training)
