"""Building blocks shared by the models: a conv with its norm, ONE residual block, ONE weight initialisation.

``BasicBlock`` is He et al.'s (2016) basic block, ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``,
as torchvision builds it: the norm and the activation are passed as layers (``norm_layer``), and the
shortcut is an option instead of a flag per model. Where the block keeps the shape of ``x`` the shortcut
is the identity; where it changes the width or the resolution, ``shortcut`` says how ``x`` is matched:

- ``"zeropad"``: ``ShortcutA``, subsample and zero-pad the new channels, no parameters (the paper's
  "option A", section 4.2); ResNet(6n+2) and VGG-ResNet use it;
- ``"projection"``: a 1x1 conv with the block's stride, then a norm ("option B"); PairClassifier and the
  segmentation networks use it;
- ``"identity"``: the identity only; a block that changes the shape raises an error;
- ``"none"``: no shortcut at all, two plain conv layers (VGG without skips, U-Net, FCN).

A conv followed by a norm has no bias (the norm's beta takes its place); a conv followed by ``"none"``
(``nn.Identity``) has one, whatever way the norm was given (``conv_norm``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.norms import ActArg, NormArg, is_identity, make_act, make_norm

__all__ = ["SHORTCUTS", "BasicBlock", "ShortcutA", "conv_norm", "kaiming_init", "make_shortcut"]

SHORTCUTS = ("zeropad", "projection", "identity", "none")
ConvArg = Callable[..., nn.Module]  # (cin, cout, kernel_size, stride=, padding=, bias=[, dilation=]) -> module


def conv_norm(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1, norm: NormArg = "bn",
              conv: ConvArg = nn.Conv2d) -> tuple[nn.Module, nn.Module]:
    """A conv (padding keeps the size at stride 1) and the norm after it; the conv has a bias only when the
    norm is the identity. The norm is built first (it draws no random numbers), the conv second."""
    norm_layer = make_norm(norm, cout)
    padding = dilation * (kernel_size // 2)
    extra = {"dilation": dilation} if dilation != 1 else {}
    layer = conv(cin, cout, kernel_size, stride=stride, padding=padding, bias=is_identity(norm_layer), **extra)
    return layer, norm_layer


class ShortcutA(nn.Module):
    """Parameter-free down-sampling shortcut: stride-``s`` subsampling, channels zero-padded (He et al., option A)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cout < cin:
            raise ValueError(f"zero-padding cannot reduce {cin} channels to {cout}; use shortcut='projection'")
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, cin + extra, H / s, W / s)


def make_shortcut(kind: str, cin: int, cout: int, stride: int = 1, norm: NormArg = "bn") -> nn.Module | None:
    """The shortcut of a block ``cin -> cout`` with ``stride``: ``None`` for ``"none"``, the identity where the
    shape is kept, else ``ShortcutA`` (``"zeropad"``) or a 1x1 conv + norm (``"projection"``)."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {kind!r}")
    if kind == "none":
        return None
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "zeropad":
        return ShortcutA(cin, cout, stride)
    if kind == "projection":
        return nn.Sequential(*conv_norm(cin, cout, 1, stride, norm=norm))
    raise ValueError(f"an identity shortcut cannot map {cin} channels at stride {stride} to {cout} channels; "
                     f"use shortcut='zeropad' or 'projection'")


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with the activation after each; the shortcut is added before the second.

    Args:
        cin, cout: input and output channels.
        stride: stride of the first conv (2 halves the map).
        shortcut: one of ``SHORTCUTS`` (see the module docstring); ``"none"`` makes two plain VGG layers.
        norm: a name in ``NORMS``, a class or a ``partial`` taking ``num_channels``.
        act: a name in ``ACTIVATIONS`` or a callable ``() -> nn.Module``.
        dilation: dilation (and padding) of both 3x3 convs, for atrous blocks.
        conv: the conv class of the two 3x3 layers (``nn.Conv2d``, or a ``partial`` of ``DeformConv2d``).

    Submodules, in creation order: ``conv1, norm1, act1, conv2, norm2, act2, shortcut``.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = "projection", norm: NormArg = "bn",
                 act: ActArg = "relu", dilation: int = 1, conv: ConvArg = nn.Conv2d):
        super().__init__()
        self.conv1, self.norm1 = conv_norm(cin, cout, 3, stride, dilation, norm, conv)
        self.act1 = make_act(act)
        self.conv2, self.norm2 = conv_norm(cout, cout, 3, 1, dilation, norm, conv)
        self.act2 = make_act(act)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


def kaiming_init(model: nn.Module) -> None:
    """He et al. (2015) initialisation of every ``nn.Conv2d``: normal weights with std ``sqrt(2 / fan_out)``
    (``kaiming_normal_``, ``mode="fan_out"``, as torchvision's ResNet), zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
