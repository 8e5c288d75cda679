"""An in-memory batch loader with batched augmentation as tensor operations.

The whole data set sits in one tensor; a batch is one indexing operation, and every augmentation
draws its random numbers for the whole batch at once (as in Keller Jordan's cifar10-airbench). No
per-image Python work runs in the hot path, which makes it many times faster than a ``DataLoader``
with per-image PIL transforms on a CPU (see ``benchmarks/bench_loader.py``).

An augmentation is any callable ``aug(x, generator) -> x`` on a float batch ``(B, C, H, W)``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class RandomCrop:
    """Pad each side by ``padding`` pixels, then crop back to the original size at a random offset per image."""

    def __init__(self, padding: int = 2, fill: float = 0.0):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding, self.fill = padding, fill

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.padding == 0:
            return x
        B, C, H, W = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p), value=self.fill)  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * p + 1, (B,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=g)
        rows = (dy[:, None] + torch.arange(H)).to(x.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(W)).to(x.device)  # (B, W)
        b = torch.arange(B, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], generator=g) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class RandomAffine:
    """Random rotation (degrees), translation (fraction of size) and scale per image, via ``affine_grid``."""

    def __init__(self, degrees: float = 0.0, translate: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
                 fill: float = 0.0):
        self.degrees, self.translate, self.scale, self.fill = degrees, translate, scale, fill

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B = x.shape[0]
        u = torch.rand(B, 4, generator=g)
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        shift = (2 * u[:, 1:3] - 1) * 2 * self.translate  # affine_grid coordinates span [-1, 1]
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 3]
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # the grid maps output to input: inverse scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        out = F.grid_sample(x - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out + self.fill


class Compose:
    """Apply augmentations in order."""

    def __init__(self, augments: Sequence[Augment]):
        self.augments = list(augments)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for aug in self.augments:
            x = aug(x, g)
        return x


class TensorLoader:
    """Iterate over ``(images, labels)`` batches held in memory.

    Args:
        images: ``(N, C, H, W)`` uint8 (scaled to [0, 1]) or float tensor; or ``(N, D)`` features (no augmentation).
        labels: ``(N,)`` tensor (or any tensor indexed along its first axis).
        batch_size: images per batch.
        shuffle: a new permutation every epoch, drawn from ``(seed, epoch)`` so runs repeat exactly.
        augment: ``aug(x, generator) -> x`` applied to each float batch, e.g. ``Compose([RandomCrop(2), RandomHorizontalFlip()])``.
        drop_last: drop the last incomplete batch.
        seed: seeds shuffling and augmentation.
        mean, std: normalise ``(x - mean) / std`` after augmentation.
        channels_last: return batches in ``torch.channels_last`` memory format (faster convs on CPU).
        device: where batches are produced (the data is moved there once).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augment: Augment | None = None, drop_last: bool = False, seed: int = 0,
                 mean: float | None = None, std: float | None = None, channels_last: bool = False,
                 device: str | torch.device = "cpu"):
        if images.ndim not in (2, 4):
            raise ValueError(f"images must be (N, C, H, W) (or (N, D) features), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.mean, self.std, self.channels_last = seed, mean, std, channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation and augmentations the next iteration uses (for resuming)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        n = len(self.images)
        order = torch.randperm(n, generator=g).to(self.images.device) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            idx = order[sl] if order is not None else sl
            x, y = self._to_float(self.images[idx]), self.labels[idx]
            if self.augment is not None:
                x = self.augment(x, g)
            if self.mean is not None:
                x = (x - self.mean) / self.std
            if self.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
