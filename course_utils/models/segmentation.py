"""Semantic segmentation networks: a stacked hourglass, U-Net, FCN-32s and DeepLabv3, each small and from scratch.

Every model maps ``(B, in_channels, H, W)`` to per-pixel logits ``(B, num_classes, H, W)`` and exposes
``forward_features`` (the last feature map) and ``forward_head`` (features -> logits at the input size).

=============  ==============================================================  =======================
model          how detail reaches the output                                   paper
=============  ==============================================================  =======================
``Hourglass``  encoder-decoder modules, stacked; skips *summed* at each level  Newell et al. 2016
``UNet``       one encoder-decoder; encoder maps *concatenated* in the decoder Ronneberger et al. 2015
``FCN32s``     none: one stride-2^pools transposed convolution from the top    Long et al. 2015
``DeepLabV3``  atrous convolutions keep an 8x finer map; ASPP adds context     Chen et al. 2017
=============  ==============================================================  =======================

The hourglass has two kinds of skip connection, which the ablation switches off one at a time:

- *intra* skips: each down and up block is residual, ``act(F(x) + shortcut(x))`` (He et al. 2016), with a
  1x1 conv + norm as shortcut where the width changes;
- *inter* skips: the decoder's map at each resolution is summed with the encoder's map of the same
  resolution (as in Newell et al.'s hourglass), so fine detail need not squeeze through the bottleneck.

Hourglass module (``depth`` = 3, widths ``w, 2w, 4w, 8w``) on a 64x64 input::

    x (w, 64) ──maxpool─ down1 (2w, 32) ──maxpool─ down2 (4w, 16) ──maxpool─ down3 (8w, 8)
      │                    │                         │                            │
      + ◄──upsample─ up1 ◄─+ ◄───────upsample─ up2 ◄─+ ◄────────upsample─ up3 ◄──┘
    (inter skips: the "+"; intra skips: inside every down/up block)

The up blocks convolve at the lower resolution and then upsample bilinearly, so all the module's 3x3
convolutions run at 1/2 resolution or less (a 4x saving at the top level).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.models.vgg import ACTIVATIONS, ActArg, make_act  # one activation table for all models
from course_utils.norms import make_norm

NormArg = str | Callable[[int], nn.Module]


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _check_divisible(x: torch.Tensor, factor: int, model: str) -> None:
    if x.ndim != 4 or x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"{model} needs (B, C, H, W) input with H and W divisible by {factor}, got {tuple(x.shape)}; "
                         f"pad or crop the images, or use fewer down-sampling levels")


class ConvBlock(nn.Module):
    """Two 3x3 convs, each followed by norm and activation; ``residual`` adds a shortcut before the last activation.

    ``act(norm(conv(act(norm(conv(x)))))`` without, ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))`` with;
    the shortcut is the identity when shape is kept, else a (strided) 1x1 conv + norm.
    """

    def __init__(self, cin: int, cout: int, residual: bool = True, norm: NormArg = "bn", act: ActArg = "relu",
                 stride: int = 1, dilation: int = 1):
        super().__init__()
        bias = norm == "none"  # a conv followed by a norm needs no bias; without a norm it does
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=bias)
        self.norm1, self.act1 = make_norm(norm, cout), make_act(act)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=bias)
        self.norm2, self.act2 = make_norm(norm, cout), make_act(act)
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if (cin == cout and stride == 1) else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=bias), make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


def _init_convs(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class HourglassModule(nn.Module):
    """One encoder-decoder: ``depth`` down blocks (max-pool, then a block doubling the width), ``depth`` up blocks."""

    def __init__(self, width: int, depth: int, intra_skip: bool = True, inter_skip: bool = True,
                 norm: NormArg = "bn", act: ActArg = "relu"):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.inter_skip = inter_skip
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1], intra_skip, norm, act) for i in range(depth))
        self.up = nn.ModuleList(ConvBlock(widths[i + 1], widths[i], intra_skip, norm, act) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            skips.append(x)  # (B, w_i, H / 2^i, W / 2^i)
            x = down(F.max_pool2d(x, 2))
        for up, skip in zip(reversed(self.up), reversed(skips)):
            x = F.interpolate(up(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.inter_skip:
                x = x + skip
        return x


class Hourglass(nn.Module):
    """Stacked hourglass network for segmentation; ``Hourglass(stacks, width)`` is the seed's HourGlass(a*b).

    Args:
        stacks: number of hourglass modules applied one after the other.
        width: channels at full resolution; each of the ``depth`` levels doubles them.
        intra_skip: residual shortcuts inside the down and up blocks.
        inter_skip: sum the encoder's map into the decoder's at every resolution.
        norm: a name in ``course_utils.norms.NORMS`` (``"none"`` removes normalization) or a callable.
        act: ``"relu"``, ``"gelu"``, ``"none"`` (no non-linearity anywhere) or a callable.
        dropout: channel dropout (``nn.Dropout2d``) after every module, before the next one or the head.
        depth: down-sampling levels per module; H and W must be divisible by ``2**depth``.
    """

    def __init__(self, stacks: int, width: int, intra_skip: bool = True, inter_skip: bool = True,
                 norm: NormArg = "bn", act: ActArg = "relu", dropout: float = 0.2, num_classes: int = 11,
                 in_channels: int = 1, depth: int = 3):
        super().__init__()
        _check_positive(stacks=stacks, width=width, num_classes=num_classes, in_channels=in_channels, depth=depth)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.depth, bias = depth, norm == "none"
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=bias), make_norm(norm, width),
                                  make_act(act))
        self.stacks = nn.ModuleList(HourglassModule(width, depth, intra_skip, inter_skip, norm, act)
                                    for _ in range(stacks))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=bias), make_norm(norm, width),
                                  make_act(act), nn.Conv2d(width, num_classes, 1))
        _init_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, width, H, W)``."""
        _check_divisible(x, 2**self.depth, "Hourglass")
        x = self.stem(x)
        for module in self.stacks:
            x = self.dropout(module(x))
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, width, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with batch norm: ``depth`` levels, widths ``width * 2**i``.

    Decoder step: a 2x2 stride-2 transposed conv halves the channels and doubles the size, the encoder
    map of that size is *concatenated* (not summed, as in the hourglass), and two 3x3 convs follow.
    """

    def __init__(self, width: int, depth: int, norm: NormArg = "bn", act: ActArg = "relu", num_classes: int = 11,
                 in_channels: int = 1):
        super().__init__()
        _check_positive(width=width, depth=depth, num_classes=num_classes, in_channels=in_channels)
        self.depth = depth
        w = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([ConvBlock(in_channels, w[0], False, norm, act)] +
                                 [ConvBlock(w[i], w[i + 1], False, norm, act) for i in range(depth)])
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(depth))
        self.dec = nn.ModuleList(ConvBlock(2 * w[i], w[i], False, norm, act) for i in range(depth))
        self.head = nn.Conv2d(w[0], num_classes, 1)
        _init_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, width, H, W)``."""
        _check_divisible(x, 2**self.depth, "UNet")
        skips = [self.enc[0](x)]
        for enc in self.enc[1:]:
            skips.append(enc(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for i in reversed(range(self.depth)):
            x = self.dec[i](torch.cat([skips[i], self.upconv[i](x)], 1))
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, width, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """``(channels, channels, 2f, 2f)`` weights that make ``ConvTranspose2d(kernel 2f, stride f, padding f/2)``
    upsample each channel bilinearly by ``f`` (Long et al.'s initialisation; inside the map it equals
    ``F.interpolate(mode="bilinear", align_corners=False)``)."""
    k = 2 * factor
    center = factor - 0.5
    t = 1 - (torch.arange(k, dtype=torch.float32) - center).abs() / factor  # (k,) the 1-D tent
    weight = torch.zeros(channels, channels, k, k)
    weight[range(channels), range(channels)] = t[:, None] * t[None, :]
    return weight


class FCN32s(nn.Module):
    """FCN-32s (Long, Shelhamer & Darrell 2015): a VGG-like backbone, conv6-7 as convolutions, per-pixel scores
    and one transposed convolution that upsamples them straight to the input size.

    The backbone has ``pools`` stages of two 3x3 conv-norm-ReLU layers and a 2x2 max-pool, widths
    ``width * 2**min(i, 3)``. VGG-16's five pools give the name's output stride 32 on 224-512 pixel images;
    on a 64x64 canvas stride 32 leaves a 2x2 map, so the default is ``pools=4`` (stride 16, a 4x4 map).
    ``pools=5`` is the original stride. conv6 (a 7x7 conv on VGG's 7x7 map) is a 3x3 conv here; conv7 is 1x1.
    The upsampling (kernel ``2s``, stride ``s``) starts as bilinear interpolation and is learned.
    """

    def __init__(self, width: int = 32, pools: int = 4, norm: NormArg = "bn", num_classes: int = 11,
                 in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        _check_positive(width=width, pools=pools, num_classes=num_classes, in_channels=in_channels)
        self.stride = 2**pools
        layers, cin = [], in_channels
        for i in range(pools):
            cout = width * 2 ** min(i, 3)
            layers += [ConvBlock(cin, cout, False, norm, "relu"), nn.MaxPool2d(2)]
            cin = cout
        self.backbone = nn.Sequential(*layers)
        fc, bias = 2 * cin, norm == "none"
        self.conv67 = nn.Sequential(
            nn.Conv2d(cin, fc, 3, padding=1, bias=bias), make_norm(norm, fc), nn.ReLU(), nn.Dropout2d(dropout),
            nn.Conv2d(fc, fc, 1, bias=bias), make_norm(norm, fc), nn.ReLU(), nn.Dropout2d(dropout))
        self.score = nn.Conv2d(fc, num_classes, 1)
        s = self.stride
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, 2 * s, stride=s, padding=s // 2, bias=False)
        _init_convs(self)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(num_classes, s))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> conv7's ``(B, fc, H / stride, W / stride)``."""
        _check_divisible(x, self.stride, "FCN32s")
        return self.conv67(self.backbone(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Coarse scores, upsampled ``stride`` times: ``(B, num_classes, H, W)``."""
        return self.upsample(self.score(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class DeepLabV3(nn.Module):
    """DeepLabv3 (Chen et al. 2017) at output stride 8, from scratch except torchvision's ``ASPP`` module.

    Backbone: a 3x3 stem, three residual blocks with stride 2 (widths 2w, 4w, 8w; the map is now H/8) and
    one residual block with *atrous* (dilated, rate 2) convolutions in place of a fourth stride: its
    receptive field grows as if the map had been halved, but the map keeps its 8x finer grid.
    Head: atrous spatial pyramid pooling (a 1x1 conv, 3x3 convs at ``rates`` and image-level pooling,
    concatenated and projected), a 3x3 conv, 1x1 scores, bilinear upsampling to the input size.
    The paper's rates (6, 12, 18) at stride 16, or (12, 24, 36) at stride 8, are for 33-65 pixel maps; a 64x64
    canvas gives an 8x8 map, so the default ``rates=(1, 2, 3)`` keep every 3x3 tap of the widest one
    inside the map (at a rate near the map size a 3x3 filter degenerates to 1x1, section 3.3 of the paper).
    """

    def __init__(self, width: int = 32, rates: Sequence[int] = (1, 2, 3), norm: NormArg = "bn",
                 num_classes: int = 11, in_channels: int = 1):
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        _check_positive(width=width, num_classes=num_classes, in_channels=in_channels)
        if not rates or any(not (isinstance(r, int) and r >= 1) for r in rates):
            raise ValueError(f"rates must be a non-empty sequence of integers >= 1, got {rates!r}")
        self.stride, bias = 8, norm == "none"
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=bias), make_norm(norm, width),
                                  nn.ReLU())
        self.layers = nn.Sequential(
            ConvBlock(width, 2 * width, True, norm, "relu", stride=2),
            ConvBlock(2 * width, 4 * width, True, norm, "relu", stride=2),
            ConvBlock(4 * width, 8 * width, True, norm, "relu", stride=2),
            ConvBlock(8 * width, 8 * width, True, norm, "relu", dilation=2))  # atrous instead of a 4th stride
        c = 8 * width
        self.aspp = ASPP(c, list(rates), out_channels=c)
        self.classifier = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                        nn.Conv2d(c, num_classes, 1))
        _init_convs(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, 8 * width, H / 8, W / 8)``."""
        _check_divisible(x, self.stride, "DeepLabV3")
        return self.layers(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """ASPP and scores, upsampled bilinearly ``(B, num_classes, 8 h, 8 w)``."""
        scores = self.classifier(self.aspp(features))
        size = [self.stride * n for n in features.shape[-2:]]
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["ACTIVATIONS", "ConvBlock", "DeepLabV3", "FCN32s", "Hourglass", "HourglassModule", "UNet",
           "bilinear_kernel", "count_parameters", "make_act"]
