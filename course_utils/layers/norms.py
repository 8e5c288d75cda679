"""Normalization layers written from scratch, each ``(num_channels, ...)`` first so they swap freely, and
the activations beside them (as timm keeps ``create_norm`` and ``create_act`` together).

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

Each is tested against its PyTorch counterpart in ``tests/layers/test_norms.py``.

Every argument after ``num_channels`` is keyword-only: PyTorch's positional orders differ
(``nn.InstanceNorm2d(C, eps, momentum, affine)``, ``nn.GroupNorm(num_groups, C)``), so a call written in
PyTorch's order fails loudly instead of filling the wrong slot. Like PyTorch, a norm on an empty batch returns an
empty output (running statistics left as they were, zero gradients), and a norm whose statistics would be taken
over a single value raises.

Models take a norm and an activation as a name (``NORMS``, ``ACTIVATIONS``), a class or a
``functools.partial``; ``make_norm`` / ``make_act`` build them. ``"none"`` is ``nn.Identity``: a conv followed
by an identity norm gets a bias (``is_identity``), any other conv does not.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "ActArg", "BatchInstanceNorm2d", "BatchNorm2d", "GroupNorm", "InstanceNorm2d", "LayerNorm2d",
           "NORMS", "NormArg", "is_identity", "make_act", "make_norm"]

NormArg = str | Callable[[int], nn.Module]  # a name in NORMS or a callable (num_channels) -> nn.Module
ActArg = str | Callable[[], nn.Module]  # a name in ACTIVATIONS or a callable () -> nn.Module


class _AffineNorm(nn.Module):
    """Shared part: the per-channel affine ``gamma, beta`` and ``reset_parameters``."""

    def __init__(self, num_channels: int, *, eps: float = 1e-5, affine: bool = True):
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

    def _scale_shift(self, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor) -> torch.Tensor:
        """``gamma * (x - mean) * invstd + beta`` as one pass over ``x``: ``x * scale + shift``, where
        ``mean`` and ``invstd`` are ``(N or 1, C)`` (mathematically the same, and autograd differentiates it)."""
        scale = invstd * self.weight if self.affine else invstd
        shift = -mean * scale + (self.bias if self.affine else 0)
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__}({self.num_channels}) expects (N, {self.num_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a floating-point input, got {x.dtype}; use x.float()")

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"


def _one_value(x: torch.Tensor, values: int, per: str) -> None:
    """Raise as PyTorch does when statistics would be taken over a single value: the output would be ``beta``
    whatever the input, and a running variance would decay towards 0."""
    if values == 1:
        raise ValueError(f"Expected more than 1 {per}, got input size {tuple(x.shape)}: statistics over one value "
                         f"normalise everything to 0 (the output is beta); use a larger batch or map")


def _empty_stats(x: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, invstd)`` of 0 and 1 for an input without elements: the output is empty and every gradient 0,
    as in PyTorch, instead of the ``nan`` statistics of zero values."""
    return x.new_zeros(rows, x.shape[1]), x.new_ones(rows, x.shape[1])


def _group_stats(x: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-group mean and ``1 / sqrt(var + eps)`` over ``(C / groups, H, W)``, expanded to ``(N, C)``."""
    N, C = x.shape[:2]
    if x.numel() == 0:
        return _empty_stats(x, N)
    var, mean = torch.var_mean(x.reshape(N, groups, -1), 2, unbiased=False)  # (N, groups)
    invstd = torch.rsqrt(var + eps)
    return mean.repeat_interleave(C // groups, 1), invstd.repeat_interleave(C // groups, 1)


class BatchNorm2d(_AffineNorm):
    """Batch normalization (Ioffe & Szegedy 2015, Algorithm 1).

    Training: normalise with the mini-batch mean and biased variance over ``(N, H, W)`` and update
    ``running = (1 - momentum) * running + momentum * batch``, using the *unbiased* variance for
    ``running_var`` as PyTorch does. Evaluation: normalise with the running estimates.
    ``momentum=None`` gives the cumulative average over all batches seen, as in PyTorch; the running
    statistics are always tracked (``track_running_stats=False`` is not supported).
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_channels, eps=eps, affine=affine)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None (cumulative average), got {momentum}")
        if not track_running_stats:
            raise ValueError(f"{type(self).__name__} always tracks running statistics: track_running_stats=False "
                             f"is not supported; use nn.BatchNorm2d({num_channels}, track_running_stats=False) "
                             f"for batch statistics in evaluation too")
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

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, 1 / sqrt(var + eps))`` per channel, shaped ``(1, C)``: the batch's in training (updating
        the running estimates), the running estimates in evaluation."""
        if not self.training:
            return self.running_mean[None], torch.rsqrt(self.running_var + self.eps)[None]
        if x.numel() == 0:  # PyTorch counts the batch but leaves the running statistics as they were
            self.num_batches_tracked += 1
            return _empty_stats(x, 1)
        _one_value(x, x.numel() // x.shape[1], "value per channel when training")
        var, mean = torch.var_mean(x, (0, 2, 3), unbiased=False)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.num_batches_tracked += 1
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), momentum)
        return mean[None], torch.rsqrt(var + self.eps)[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._scale_shift(x, *self._stats(x))


class InstanceNorm2d(_AffineNorm):
    """Instance normalization (Ulyanov et al. 2016): statistics over ``(H, W)`` of each sample and channel,
    the same in training and evaluation, without running statistics. Note the default ``affine=True``:
    it equals ``nn.InstanceNorm2d(C, affine=True)`` (PyTorch's default is ``affine=False``)."""

    def __init__(self, num_channels: int, *, eps: float = 1e-5, affine: bool = True, track_running_stats: bool = False,
                 momentum: float | None = None):
        super().__init__(num_channels, eps=eps, affine=affine)
        if track_running_stats or momentum is not None:
            raise ValueError(f"InstanceNorm2d keeps no running statistics (track_running_stats=True and momentum are "
                             f"not supported); use nn.InstanceNorm2d({num_channels}, affine=True, "
                             f"track_running_stats=True) for that")
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        _one_value(x, x.shape[2] * x.shape[3], "spatial element")
        return self._scale_shift(x, *_group_stats(x, x.shape[1], self.eps))


class LayerNorm2d(_AffineNorm):
    """Layer normalization (Ba et al. 2016) for images: statistics over ``(C, H, W)`` of each sample,
    with a per-channel affine (so it equals ``GroupNorm`` with one group)."""

    def __init__(self, num_channels: int, *, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, eps=eps, affine=affine)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        _one_value(x, x.numel(), "value per channel when training")  # as nn.GroupNorm(1, C)
        return self._scale_shift(x, *_group_stats(x, 1, self.eps))


class GroupNorm(_AffineNorm):
    """Group normalization (Wu & He 2018, eq. 1 with S_i over a group): the channels are split into
    ``num_groups`` groups and each sample is normalised over ``(C / G, H, W)`` within each group.
    ``num_channels`` comes first (``nn.GroupNorm`` takes ``num_groups`` first), so ``num_groups`` is keyword-only."""

    def __init__(self, num_channels: int, *, num_groups: int = 8, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_channels, eps=eps, affine=affine)
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}; "
                             f"choose a divisor such as {[g for g in (1, 2, 4, 8, 16, 32) if num_channels % g == 0]}")
        self.num_groups = num_groups
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        # PyTorch's test: N * C / G * H * W == 1, i.e. one sample with one value per group
        _one_value(x, x.numel() // self.num_groups, "value per channel when training")
        return self._scale_shift(x, *_group_stats(x, self.num_groups, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, affine={self.affine}"


class BatchInstanceNorm2d(BatchNorm2d):
    """Batch-Instance normalization (Nam & Kim 2018, eq. 4-5):

    ``y = (rho * x_hat_BN + (1 - rho) * x_hat_IN) * gamma + beta``, with a learnable gate ``rho`` per channel
    kept in [0, 1]. The paper clips ``rho`` after every update; here it is clipped in place at the start of
    each forward pass, which gives the same values whenever the layer is used. ``rho`` starts at 1 (pure BN).
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True):
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
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
        bn_mean, bn_invstd = self._stats(x)  # (1, C)
        in_mean, in_invstd = _group_stats(x, x.shape[1], self.eps)  # (N, C)
        # rho * (x - m_B) s_B + (1 - rho) * (x - m_I) s_I  ==  (x - mean) * invstd  with:
        invstd = self.rho * bn_invstd + (1 - self.rho) * in_invstd
        mean = (self.rho * bn_mean * bn_invstd + (1 - self.rho) * in_mean * in_invstd) / invstd
        return self._scale_shift(x, mean, invstd)


NORMS = {
    "bn": BatchNorm2d,
    "in": InstanceNorm2d,
    "bin": BatchInstanceNorm2d,
    "ln": LayerNorm2d,
    "gn": GroupNorm,
    "none": nn.Identity,  # nn.Identity(num_channels) ignores its argument: the no-normalization variant
    "torch_bn": nn.BatchNorm2d,
}


def make_norm(norm: NormArg, num_channels: int) -> nn.Module:
    """Build a norm layer from a name in ``NORMS`` or a callable ``(num_channels) -> nn.Module``."""
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ValueError(f"Unknown norm {norm!r}; choose one of {sorted(NORMS)} or pass a callable "
                             f"(num_channels) -> nn.Module")
        norm = NORMS[norm]
    if not callable(norm):
        raise TypeError(f"norm must be a name or a callable, got {type(norm).__name__}")
    return norm(num_channels)


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "none": nn.Identity}


def make_act(act: ActArg) -> nn.Module:
    """An activation module from a name in ``ACTIVATIONS`` or a callable ``() -> nn.Module``."""
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)} or pass a callable "
                             f"() -> nn.Module such as nn.SiLU")
        return ACTIVATIONS[act]()
    if not callable(act):
        raise TypeError(f"act must be a name or a callable, got {type(act).__name__}")
    return act()


def is_identity(layer: nn.Module) -> bool:
    """Whether a built norm (or activation) does nothing: then the conv before it needs its own bias."""
    return isinstance(layer, nn.Identity)
