"""In-memory batch loaders: ``TensorLoader`` and the mixup wrapper ``MixupLoader``.

The whole data set sits in one tensor; a batch is one indexing operation, and every augmentation
(``course_utils.augment``) draws its random numbers for the whole batch at once (as in Keller Jordan's
cifar10-airbench). No per-image Python work runs in the hot path, which makes it many times faster than
a ``DataLoader`` with per-image PIL transforms on a CPU (see ``benchmarks/bench_loader.py``).
"""

from __future__ import annotations

import math

import torch

from course_utils.augment import Augment, mixup_batch

__all__ = ["TensorLoader", "MixupLoader"]


class TensorLoader:
    """Iterate over ``(images, labels)`` batches held in memory.

    Args:
        images: ``(N, C, H, W)`` uint8 (scaled to [0, 1]) or float tensor; or ``(N, D)`` features (no augmentation).
        labels: ``(N,)`` tensor (or any tensor indexed along its first axis).
        batch_size: images per batch.
        shuffle: a new permutation every epoch, drawn from ``(seed, epoch)`` so runs repeat exactly.
        augment: ``aug(x, generator) -> x`` applied to each float batch, e.g.
            ``Compose([RandomCrop(2), RandomHorizontalFlip()])`` from ``course_utils.augment``.
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


class MixupLoader:
    """Wrap a loader of ``(x, labels)`` batches so it yields ``(mixed x, soft targets (B, K))`` (``mixup_batch``).

    Train with ``loss_fn=course_utils.losses.soft_target_cross_entropy`` and ``metrics={}`` (the targets are
    no longer labels). Like ``TensorLoader``, the random draws follow ``(seed, epoch)``, so a resumed run sees
    the same batches.
    """

    def __init__(self, loader, num_classes: int, alpha: float = 0.2, seed: int = 0):
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.loader, self.num_classes, self.alpha, self.seed, self.epoch = loader, num_classes, alpha, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next iteration, here and in the wrapped loader (for resuming)."""
        self.epoch = epoch
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
        self.epoch += 1
        for x, y in self.loader:
            mixed, target, _ = mixup_batch(x, y, self.num_classes, self.alpha, g)
            yield mixed, target
