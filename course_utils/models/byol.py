"""BYOL, *Bootstrap Your Own Latent* (Grill et al., 2020): self-supervised learning without negatives.

Two augmented views ``v, v'`` of an image pass through two networks:

- the **online** network: backbone ``f_theta`` -> projector ``g_theta`` -> predictor ``q_theta``;
- the **target** network: a copy of backbone and projector, ``f_xi``, ``g_xi``, never trained by
  gradients; its weights follow the online ones as an exponential moving average (EMA),
  ``xi <- tau * xi + (1 - tau) * theta`` (section 3.1 of the paper).

The online network predicts the target's projection of the *other* view. With both vectors
L2-normalised, the squared distance is ``2 - 2 cos(q, z')`` (eq. 2), and the loss is symmetrised by
swapping the views (eq. 4). ``tau`` rises from ``base`` to 1 on a cosine schedule (section 3.2).

This module holds the architecture only: ``BYOL.forward`` returns the predictions and target projections,
the loss is ``course_utils.losses.symmetric_byol_loss`` and the loop is ``course_utils.train.fit`` (via
``train_byol``, with ``update_target`` as its after-step hook).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector / predictor (section 3.3): linear -> batch norm -> ReLU -> linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def byol_tau(step: int, total: int, base: float = 0.99) -> float:
    """EMA rate at ``step`` of ``total``: ``1 - (1 - base) (cos(pi step / total) + 1) / 2``, from ``base`` to 1."""
    if total < 1:
        raise ValueError(f"total must be >= 1 step, got {total}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base must be in [0, 1] (e.g. 0.99 or 0.996), got {base}")
    progress = min(max(step / total, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(nn.Module):
    """Online (backbone, projector, predictor) and EMA target (backbone, projector) networks.

    Args:
        backbone: a model with ``forward_features(x) -> (B, C, h, w)`` (e.g. ``resnet6n2``); the
            online network trains it in place, so after pre-training ``byol.backbone`` is the result.
        projector_dim: size of the projection ``z`` (and of the prediction ``q``).
        hidden_dim: hidden width of projector and predictor.
        predictor: ``False`` replaces the predictor by the identity (an ablation that collapses).
        feature_dim: channels of ``forward_features``; read from ``backbone.num_features`` when omitted.
    """

    def __init__(self, backbone: nn.Module, projector_dim: int = 128, hidden_dim: int = 512,
                 predictor: bool = True, feature_dim: int | None = None):
        super().__init__()
        if not hasattr(backbone, "forward_features"):
            raise TypeError(f"{type(backbone).__name__} has no forward_features; pass a course_utils model "
                            "such as resnet6n2(...)")
        if feature_dim is None:
            if not hasattr(backbone, "num_features"):
                raise ValueError("cannot tell the backbone's feature size: pass feature_dim=<channels of "
                                 "forward_features>")
            feature_dim = backbone.num_features
        self.backbone = backbone
        self.projector = mlp_head(feature_dim, hidden_dim, projector_dim)
        self.predictor = mlp_head(projector_dim, hidden_dim, projector_dim) if predictor else nn.Identity()
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)

    def online_parameters(self):
        """The parameters the optimiser trains: backbone, projector, predictor."""
        for module in (self.backbone, self.projector, self.predictor):
            yield from module.parameters()

    def target_parameters(self):
        """The EMA copies: target backbone and projector."""
        yield from self.target_backbone.parameters()
        yield from self.target_projector.parameters()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Online projection ``z = g(f(x))`` of ``(B, C, H, W)`` images: ``(B, projector_dim)``."""
        return self.projector(self.backbone.forward_features(x).mean((2, 3)))

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``views`` ``(B, 2C, H, W)``, two augmented views stacked on the channel axis -> ``(p1, p2, z1, z2)``,
        each ``(B, projector_dim)``: the online predictions of view 1 and 2 and the target projections (no gradient).

        Both views go through each network as one batch of ``2B`` images, so batch norm sees both.
        The loss is ``symmetric_byol_loss(*byol(views))``.
        """
        if views.ndim != 4 or views.shape[1] % 2:
            raise ValueError(f"views must be (B, 2C, H, W), the two views on the channel axis; got {tuple(views.shape)}")
        C = views.shape[1] // 2
        x = torch.cat([views[:, :C], views[:, C:]])  # (2B, C, H, W): first views, then second views
        p1, p2 = self.predictor(self.embed(x)).chunk(2)
        with torch.no_grad():
            z = self.target_projector(self.target_backbone.forward_features(x).mean((2, 3)))
        z1, z2 = z.chunk(2)
        return p1, p2, z1, z2

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA step ``xi <- tau xi + (1 - tau) theta`` for every parameter; buffers (batch-norm statistics) are copied."""
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        pairs = [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]
        for online, target in pairs:
            for o, t in zip(online.parameters(), target.parameters()):
                t.mul_(tau).add_(o.detach(), alpha=1 - tau)
            for o, t in zip(online.buffers(), target.buffers()):
                t.copy_(o)


__all__ = ["BYOL", "byol_tau", "mlp_head"]
