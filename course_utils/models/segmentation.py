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
  1x1 conv + norm as shortcut where the width changes (``BasicBlock(shortcut="projection")``; without intra
  skips ``shortcut="none"``, as in U-Net's and FCN's plain double convs);
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

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.layers.blocks import BasicBlock, conv_norm, kaiming_init
from course_utils.layers.norms import ActArg, NormArg, make_act

__all__ = ["DeepLabV3", "FCN32s", "Hourglass", "HourglassModule", "SEGMENTERS", "UNet", "bilinear_kernel",
           "build_segmenter"]


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _check_divisible(x: torch.Tensor, factor: int, model: str) -> None:
    if x.ndim != 4 or x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"{model} needs (B, C, H, W) input with H and W divisible by {factor}, got {tuple(x.shape)}; "
                         f"pad or crop the images, or use fewer down-sampling levels")


class HourglassModule(nn.Module):
    """One encoder-decoder: ``depth`` down blocks (max-pool, then a block doubling the width), ``depth`` up blocks."""

    def __init__(self, width: int, depth: int, intra_skip: bool = True, inter_skip: bool = True,
                 norm: NormArg = "bn", act: ActArg = "relu"):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.inter_skip = inter_skip
        shortcut = "projection" if intra_skip else "none"
        self.down = nn.ModuleList(BasicBlock(widths[i], widths[i + 1], 1, shortcut, norm, act) for i in range(depth))
        self.up = nn.ModuleList(BasicBlock(widths[i + 1], widths[i], 1, shortcut, norm, act) for i in range(depth))

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
        norm: a name in ``course_utils.layers.norms.NORMS`` (``"none"`` removes normalization) or a callable.
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
        self.depth = depth
        self.stem = nn.Sequential(*conv_norm(in_channels, width, 3, norm=norm), make_act(act))
        self.stacks = nn.ModuleList(HourglassModule(width, depth, intra_skip, inter_skip, norm, act)
                                    for _ in range(stacks))
        self.dropout = nn.Dropout2d(dropout)
        self.num_features = width
        self.head = nn.Sequential(*conv_norm(width, width, 3, norm=norm), make_act(act),
                                  nn.Conv2d(width, num_classes, 1))
        kaiming_init(self)

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
        self.enc = nn.ModuleList([BasicBlock(in_channels, w[0], 1, "none", norm, act)] +
                                 [BasicBlock(w[i], w[i + 1], 1, "none", norm, act) for i in range(depth)])
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(depth))
        self.dec = nn.ModuleList(BasicBlock(2 * w[i], w[i], 1, "none", norm, act) for i in range(depth))
        self.num_features = w[0]
        self.head = nn.Conv2d(w[0], num_classes, 1)
        kaiming_init(self)

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
            layers += [BasicBlock(cin, cout, 1, "none", norm, "relu"), nn.MaxPool2d(2)]
            cin = cout
        self.backbone = nn.Sequential(*layers)
        fc = self.num_features = 2 * cin
        self.conv67 = nn.Sequential(
            *conv_norm(cin, fc, 3, norm=norm), nn.ReLU(), nn.Dropout2d(dropout),
            *conv_norm(fc, fc, 1, norm=norm), nn.ReLU(), nn.Dropout2d(dropout))
        self.score = nn.Conv2d(fc, num_classes, 1)
        s = self.stride
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, 2 * s, stride=s, padding=s // 2, bias=False)
        kaiming_init(self)
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
        self.stride = 8
        self.stem = nn.Sequential(*conv_norm(in_channels, width, 3, norm=norm), nn.ReLU())
        self.layers = nn.Sequential(
            BasicBlock(width, 2 * width, 2, "projection", norm),
            BasicBlock(2 * width, 4 * width, 2, "projection", norm),
            BasicBlock(4 * width, 8 * width, 2, "projection", norm),
            BasicBlock(8 * width, 8 * width, 1, "projection", norm, dilation=2))  # atrous instead of a 4th stride
        c = self.num_features = 8 * width
        self.aspp = ASPP(c, list(rates), out_channels=c)  # torchvision's ASPP has its own nn.BatchNorm2d
        self.classifier = nn.Sequential(*conv_norm(c, c, 3, norm=norm), nn.ReLU(), nn.Conv2d(c, num_classes, 1))
        kaiming_init(self)

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


SEGMENTERS = {"hourglass": Hourglass, "unet": UNet, "fcn32s": FCN32s, "deeplabv3": DeepLabV3}


def build_segmenter(config: Mapping[str, Any], **defaults: Any) -> nn.Module:
    """A segmentation model from a plain config, ``{"model": name in SEGMENTERS, **constructor arguments}``.

    ``defaults`` are constructor arguments the config may override, e.g.
    ``build_segmenter({"model": "hourglass", "stacks": 2, "width": 32}, num_classes=6, norm="torch_bn")``:
    an ablation row then only names what it changes (``{..., "norm": "none"}``). The config stays a small
    JSON-serialisable dict, so ``experiments.run_grid`` can key its cached runs by it.
    """
    kind = config["model"]
    if kind not in SEGMENTERS:
        raise KeyError(f"unknown segmentation model {kind!r}; choose one of {sorted(SEGMENTERS)}")
    return SEGMENTERS[kind](**{**defaults, **{k: v for k, v in config.items() if k != "model"}})
