"""VGG-ResNet(a, b, c) and a simple CNN family: architectures whose design choices are arguments.

**VGG-ResNet(a, b, c)** fuses the two classic recipes for growing the receptive field. VGG
(Simonyan & Zisserman, 2015) stacks 3x3 convolutions and halves the map with 2x2 max-pooling; ResNet
(He et al., 2016) halves it with a stride-2 convolution and adds identity shortcuts around pairs of
convolutions. Here ``a`` is the number of blocks per stage, ``b`` the channels of the first stage
(doubled at every later stage) and ``c`` the down-sizing, ``"maxpool"`` or ``"stride"``. Every stage
starts by halving the map, so a 28x28 input with the default two stages goes:

=========  ======================================================  ==============
stage      layers                                                  output
=========  ======================================================  ==============
stem       3x3 conv, b, norm, act                                  b x 28 x 28
stage1     (2x2 max-pool) then a blocks of two 3x3 convs, b         b x 14 x 14
           (or: the first conv of the first block has stride 2)
stage2     the same with 2b channels                               2b x 7 x 7
head       global mean pool, linear                                num_classes
=========  ======================================================  ==============

A block (``course_utils.layers.blocks.BasicBlock``) is ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``;
where the block changes the shape, the shortcut is ResNet's parameter-free "option A" (subsample, zero-pad
the new channels; ``shortcut="zeropad"``), and without skips there is none (``shortcut="none"``), so the
max-pool and stride versions, and the versions with and without skips, have exactly the same
parameters. ``feature_block="transformer"`` replaces the last stage's blocks with a small transformer
encoder over its H x W positions (tokens), with learned position embeddings (Dosovitskiy et al., 2021).

**SimpleCNN** is the plain "boilerplate" classifier of many course assignments: conv-ReLU layers,
max-pooling every ``pool_every`` convs, then fully connected layers; every knob is an argument.
"""

from __future__ import annotations

import inspect
from typing import Mapping, Sequence

import torch
from torch import nn

from course_utils.layers.blocks import BasicBlock, conv_norm, kaiming_init
from course_utils.layers.norms import ActArg, NormArg, make_act

__all__ = ["DOWNSAMPLES", "FAMILIES", "FEATURE_BLOCKS", "SimpleCNN", "TransformerStage", "VGGResNet",
           "build_from_config"]

DOWNSAMPLES = ("maxpool", "stride")
FEATURE_BLOCKS = ("conv", "transformer")


class TransformerStage(nn.Module):
    """A feature map -> tokens -> transformer encoder -> feature map of the same layout.

    The map is down-sized like a conv stage (2x2 max-pool then a 1x1 conv, or a 3x3 stride-2 conv) to
    ``dim`` channels on a ``grid x grid`` map; its positions become ``grid**2`` tokens, a learned position
    embedding is added (ViT), ``depth`` pre-norm encoder layers (GELU, MLP ratio 4) mix them, and a final
    LayerNorm is applied. Output ``(B, dim, grid, grid)``.
    """

    def __init__(self, cin: int, dim: int, depth: int, grid: int, downsample: str, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the transformer width {dim} must be divisible by heads={heads}; change width or heads")
        if downsample == "maxpool":
            self.embed = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(cin, dim, 1))
        else:
            self.embed = nn.Conv2d(cin, dim, 3, stride=2, padding=1)
        self.grid = grid
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)  # (B, D, h, w)
        B, D, h, w = z.shape
        if h * w != self.pos.shape[1]:
            raise ValueError(f"the transformer stage expects a {self.grid}x{self.grid} map, got {h}x{w}: build the "
                             f"model with input_size equal to the images' size")
        tokens = z.flatten(2).transpose(1, 2) + self.pos  # (B, h*w, D)
        tokens = self.norm(self.encoder(tokens))
        return tokens.transpose(1, 2).reshape(B, D, h, w)


def _halve(size: int, downsample: str) -> int:
    # 2x2 max-pool floors; a 3x3 stride-2 conv with padding 1 gives ceil(size / 2)
    return size // 2 if downsample == "maxpool" else (size + 1) // 2


class VGGResNet(nn.Module):
    """VGG-ResNet(a=blocks, b=width, c=downsample): ``stem``, ``stages`` (``nn.Sequential`` of stages), ``fc``.

    Args:
        blocks: a, blocks (of two 3x3 convs) per stage; also the encoder depth of a transformer stage.
        width: b, channels of the first stage; stage i has ``width * 2**i``.
        downsample: ``"maxpool"`` (a 2x2 max-pool starts every stage) or ``"stride"`` (the first conv of
            every stage has stride 2).
        skip: residual shortcuts around every block (``False``: a plain VGG-style stack).
        norm: a name in ``course_utils.layers.norms.NORMS`` (``"none"`` gives the convs a bias) or a callable.
        act: ``"relu"``, ``"gelu"``, ``"none"`` (identity: no non-linearity in the blocks or stem) or a callable.
        feature_block: ``"conv"``, or ``"transformer"`` for a transformer encoder as the last stage.
        stages: number of stages, each halving the map (a 28x28 input: 14x14 then 7x7 with two).
        input_size: side of the square input, needed for the transformer's position embeddings.
        heads: attention heads of the transformer stage.
    """

    def __init__(self, blocks: int, width: int, downsample: str = "maxpool", skip: bool = True, norm: NormArg = "bn",
                 act: ActArg = "relu", feature_block: str = "conv", num_classes: int = 10, in_channels: int = 1,
                 stages: int = 2, input_size: int = 28, heads: int = 4):
        super().__init__()
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks (a) must be an integer >= 1, got {blocks!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width (b) must be an integer >= 1, got {width!r}")
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample (c) must be one of {DOWNSAMPLES}, got {downsample!r}")
        if feature_block not in FEATURE_BLOCKS:
            raise ValueError(f"feature_block must be one of {FEATURE_BLOCKS}, got {feature_block!r}")
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"stages must be an integer >= 1, got {stages!r}")
        if feature_block == "transformer" and stages < 2:
            raise ValueError("a transformer stage replaces the last of at least 2 stages; use stages >= 2")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.blocks, self.width, self.downsample = blocks, width, downsample
        self.skip, self.feature_block = skip, feature_block
        self.stem = nn.Sequential(*conv_norm(in_channels, width, 3, norm=norm), make_act(act))
        stage_list, cin, size = [], width, input_size
        for i in range(stages):
            w = width * 2 ** i
            size = _halve(size, downsample)
            if size < 1:
                raise ValueError(f"input_size {input_size} is too small for {stages} stages; use fewer stages")
            if feature_block == "transformer" and i == stages - 1:
                stage_list.append(TransformerStage(cin, w, blocks, size, downsample, heads))
            else:
                stride = 2 if downsample == "stride" else 1
                layers = [nn.MaxPool2d(2)] if downsample == "maxpool" else []
                shortcut = "zeropad" if skip else "none"
                layers += [BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1, shortcut, norm, act)
                           for j in range(blocks)]
                stage_list.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.Sequential(*stage_list)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> the last stage's map ``(B, width * 2**(stages-1), H', W')``."""
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global mean pool (the penultimate features, ``(B, num_features)``), then the linear layer."""
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SimpleCNN(nn.Module):
    """Conv layers (``kernel_size``, "same" padding, ``conv_stride``, ReLU), a 2x2 max-pool after every
    ``pool_every``-th conv, then fully connected layers: ``features`` and ``classifier`` (``nn.Sequential``).

    Args:
        conv_channels: output channels of each conv layer, e.g. ``(32, 64, 128)`` for three layers.
        fc_features: widths of the hidden fc layers; the output layer is added, so ``(256, 128)`` is
            three fc layers (256, 128, num_classes) and ``()`` a single linear classifier.
        kernel_size: odd size of every conv kernel (padding ``kernel_size // 2``).
        pool_every: pool after convs number ``pool_every, 2 * pool_every, ...``; 0 never pools. A pool
            that would shrink a map smaller than 2x2 is left out.
        conv_stride: stride of every conv layer.
        input_size: side of the square input (fixes the size of the first fc layer).
        head_pool: ``None`` flattens the whole last conv map into the first fc layer; an integer ``s``
            first average-pools a map larger than ``s x s`` down to ``s x s`` (``nn.AdaptiveAvgPool2d``; a
            smaller map is kept as it is), so the first fc layer sees at most ``conv_channels[-1] * s * s``
            numbers whatever the depth: ``1`` is global average pooling.
    """

    def __init__(self, conv_channels: Sequence[int], fc_features: Sequence[int], kernel_size: int = 3,
                 pool_every: int = 1, conv_stride: int = 1, num_classes: int = 10, in_channels: int = 1,
                 input_size: int = 28, head_pool: int | None = None):
        super().__init__()
        conv_channels, fc_features = list(conv_channels), list(fc_features)
        if not conv_channels or any(c < 1 for c in conv_channels):
            raise ValueError(f"conv_channels must be a non-empty list of positive channel counts, got {conv_channels}")
        if any(f < 1 for f in fc_features):
            raise ValueError(f"fc_features must hold positive widths, got {fc_features}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        if pool_every < 0:
            raise ValueError(f"pool_every must be >= 0 (0 = no pooling), got {pool_every}")
        if conv_stride < 1:
            raise ValueError(f"conv_stride must be >= 1, got {conv_stride}")
        if head_pool is not None and head_pool < 1:
            raise ValueError(f"head_pool must be None (flatten the map) or a side >= 1, got {head_pool}")
        layers, cin, size, pad = [], in_channels, input_size, kernel_size // 2
        for i, c in enumerate(conv_channels, start=1):
            layers += [nn.Conv2d(cin, c, kernel_size, stride=conv_stride, padding=pad), nn.ReLU()]
            size = (size + 2 * pad - kernel_size) // conv_stride + 1
            if pool_every and i % pool_every == 0 and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = c
        if size < 1:
            raise ValueError(f"the map vanishes after {len(conv_channels)} convs with stride {conv_stride} on a "
                             f"{input_size}x{input_size} input; use fewer convs or a smaller stride")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (cin, size, size)
        side = size if head_pool is None else min(size, head_pool)
        head = [nn.AdaptiveAvgPool2d(side)] if side < size else []  # (B, C, side, side)
        head.append(nn.Flatten())
        fin = cin * side * side
        for f in fc_features:
            head += [nn.Linear(fin, f), nn.ReLU()]
            fin = f
        self.num_features = fin
        self.classifier = nn.Sequential(*head, nn.Linear(fin, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> the last conv map ``feature_shape``."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten and the fc layers; ``pre_logits`` stops before the output layer."""
        return self.classifier[:-1](features) if pre_logits else self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


FAMILIES = {"vggresnet": VGGResNet, "simple": SimpleCNN}


def build_from_config(config: Mapping, families: Mapping[str, type] = FAMILIES) -> nn.Module:
    """The model a config dict describes: ``config["family"]`` picks the class in ``families``, and the keys
    of ``config`` that name arguments of that class are passed to it. Every other key (the training settings
    that share the dict in a ``run_grid`` config: ``lr``, ``epochs``, ...) is ignored, so one dict describes
    a whole run.

    E.g. ``build_from_config({"family": "vggresnet", "blocks": 1, "width": 32, "downsample": "stride",
    "lr": 0.1})`` is ``VGGResNet(blocks=1, width=32, downsample="stride")``.
    """
    family = config.get("family")
    if family not in families:
        raise KeyError(f"config['family'] must be one of {sorted(families)}, got {family!r}")
    cls = families[family]
    arguments = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in config.items() if k in arguments})
