"""Mixup (Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018) and the soft-target
cross-entropy it is trained with.

Mixup trains on convex combinations of pairs of examples and of their one-hot labels,

    x~ = lam * x_i + (1 - lam) * x_j,      y~ = lam * y_i + (1 - lam) * y_j,      lam ~ Beta(alpha, alpha),

so the labels become probability vectors and the loss is the cross-entropy with a *soft* target,
``-sum_k y~_k log softmax(z)_k`` (timm's ``SoftTargetCrossEntropy``). As in timm's default batch mode,
one ``lam`` is drawn per batch and the partner ``j`` of each image is another image of the same batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k target_k * log_softmax(logits)_k``; ``logits`` and ``target`` are ``(B, K)``."""
    if logits.shape != target.shape:
        raise ValueError(f"soft targets must have the logits' shape (B, K); got {tuple(target.shape)} for logits "
                         f"{tuple(logits.shape)}. Turn class labels into probabilities with F.one_hot(y, K).float().")
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def mixup_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a shuffled copy of itself: ``(x (B, C, H, W), labels (B,))`` -> ``(x~, soft targets (B, K), lam)``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (the Beta distribution's parameter), got {alpha}")
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    target = F.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm], lam


class MixupLoader:
    """Wrap a loader of ``(x, labels)`` batches so it yields ``(mixed x, soft targets (B, K))``.

    Train with ``loss_fn=soft_target_cross_entropy`` and ``metrics={}`` (the targets are no longer labels).
    Like ``TensorLoader``, the random draws follow ``(seed, epoch)``, so a resumed run sees the same batches.
    """

    def __init__(self, loader, num_classes: int, alpha: float = 0.2, seed: int = 0):
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.loader, self.num_classes, self.alpha, self.seed, self.epoch = loader, num_classes, alpha, seed, 0

    def set_epoch(self, epoch: int) -> None:
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
