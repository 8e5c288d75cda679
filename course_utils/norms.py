"""Normalization layers written from scratch, each ``(num_channels, ...)`` first so they swap freely.

Every layer normalises ``x`` of shape ``(N, C, H, W)`` as ``x_hat = (x - mu) / sqrt(var + eps)`` and then
applies a learnable per-channel affine ``y = gamma * x_hat + beta``. They differ only in the axes
over which ``mu`` and ``var`` are averaged:

======================  ===========================  ==========================================
layer                   statistics over              paper
======================  ===========================  ==========================================
``BatchNorm2d``         (N, H, W), per channel       Ioffe & Szegedy 2015
``InstanceNorm2d``      (H, W), per sample, channel  Ulyanov, Vedaldi & Lempitsky 2016
``LayerNorm2d``         (C, H, W), per sample        Ba, Kiros & Hinton 2016
``GroupNorm``           (C/G, H, W), per sample      Wu & He 2018
``BatchInstanceNorm2d`` rho * BN + (1 - rho) * IN    Nam & Kim 2018
======================  ===========================  ==========================================

Each is tested against its PyTorch counterpart in ``tests/test_norms.py``.
"""

from __future__ import annotations

import torch
from torch import nn


class _AffineNorm(nn.Module):
    """Shared part: the per-channel affine ``gamma, beta`` and ``reset_parameters``."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.num_channels, self.eps, self.affine = num_channels, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels))  # gamma
            self.bias = nn.Parameter(torch.empty(num_channels))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _affine(self, x_hat: torch.Tensor) -> torch.Tensor:
        if not self.affine:
            return x_hat
        return x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__}({self.num_channels}) expects (N, {self.num_channels}, H, W), "
                             f"got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"


def _normalize(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with the biased variance over ``dims``."""
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


class BatchNorm2d(_AffineNorm):
    """Batch normalization (Ioffe & Szegedy 2015, Algorithm 1).

    Training: normalise with the mini-batch mean and biased variance over ``(N, H, W)`` and update
    ``running = (1 - momentum) * running + momentum * batch``, using the *unbiased* variance for
    ``running_var`` as PyTorch does. Evaluation: normalise with the running estimates.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__(num_channels, eps, affine)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def _batch_stats(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with batch statistics and update the running estimates (training mode)."""
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            self.num_batches_tracked += 1
        return (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)

    def _bn(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._batch_stats(x)
        return (x - self.running_mean[None, :, None, None]) * torch.rsqrt(self.running_var[None, :, None, None] + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._affine(self._bn(x))


class InstanceNorm2d(_AffineNorm):
    """Instance normalization (Ulyanov et al. 2016): statistics over ``(H, W)`` of each sample and channel,
    the same in training and evaluation (like ``nn.InstanceNorm2d(affine=True)``)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, eps, affine)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._affine(_normalize(x, (2, 3), self.eps))


class LayerNorm2d(_AffineNorm):
    """Layer normalization (Ba et al. 2016) for images: statistics over ``(C, H, W)`` of each sample,
    with a per-channel affine (so it equals ``GroupNorm`` with one group)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, eps, affine)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._affine(_normalize(x, (1, 2, 3), self.eps))


class GroupNorm(_AffineNorm):
    """Group normalization (Wu & He 2018, eq. 1 with S_i over a group): the channels are split into
    ``num_groups`` groups and each sample is normalised over ``(C / G, H, W)`` within each group."""

    def __init__(self, num_channels: int, num_groups: int = 8, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, eps, affine)
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}; "
                             f"choose a divisor such as {[g for g in (1, 2, 4, 8, 16, 32) if num_channels % g == 0]}")
        self.num_groups = num_groups
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        N, C, H, W = x.shape
        x_hat = _normalize(x.reshape(N, self.num_groups, C // self.num_groups, H, W), (2, 3, 4), self.eps)
        return self._affine(x_hat.reshape(N, C, H, W))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, affine={self.affine}"


class BatchInstanceNorm2d(BatchNorm2d):
    """Batch-Instance normalization (Nam & Kim 2018, eq. 4-5):

    ``y = (rho * x_hat_BN + (1 - rho) * x_hat_IN) * gamma + beta``, with a learnable gate ``rho`` per channel
    kept in [0, 1]. The paper clips ``rho`` after every update; here it is clipped in place at the start of
    each forward pass, which gives the same values whenever the layer is used. ``rho`` starts at 1 (pure BN).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__(num_channels, eps, momentum, affine)
        self.rho = nn.Parameter(torch.ones(num_channels))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "rho"):
            nn.init.ones_(self.rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        with torch.no_grad():
            if bool(((self.rho < 0) | (self.rho > 1)).any()):  # only after an update left [0, 1]:
                self.rho.clamp_(0.0, 1.0)  # an unconditional in-place op would break graphs already built
        rho = self.rho[None, :, None, None]
        x_hat = rho * self._bn(x) + (1 - rho) * _normalize(x, (2, 3), self.eps)
        return self._affine(x_hat)


NORMS = {
    "bn": BatchNorm2d,
    "in": InstanceNorm2d,
    "bin": BatchInstanceNorm2d,
    "ln": LayerNorm2d,
    "gn": GroupNorm,
    "none": nn.Identity,  # nn.Identity(num_channels) ignores its argument: the no-normalization variant
    "torch_bn": nn.BatchNorm2d,
}


def make_norm(norm, num_channels: int) -> nn.Module:
    """Build a norm layer from a name in ``NORMS`` or a callable ``(num_channels) -> nn.Module``."""
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ValueError(f"Unknown norm {norm!r}; choose one of {sorted(NORMS)} or pass a callable "
                             f"(num_channels) -> nn.Module")
        norm = NORMS[norm]
    if not callable(norm):
        raise TypeError(f"norm must be a name or a callable, got {type(norm).__name__}")
    return norm(num_channels)
