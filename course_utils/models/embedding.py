"""Embedding networks for metric learning: a backbone's pooled features projected to a unit sphere.

``EmbeddingNet`` maps images to L2-normalised embeddings. ``TripletNet`` embeds a batch of triplets
stored as three channels ``(B, 3, H, W)`` (anchor, positive, negative), so triplets travel through
``TensorLoader`` and ``fit`` like any other images. ``EmbeddingClassifier`` adds a one-logit head for
binary classification and returns the logit and the embedding side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddingClassifier", "EmbeddingNet", "PooledFeatures", "TripletNet"]


class PooledFeatures(nn.Module):
    """A backbone's globally mean-pooled features ``(B, C)``, e.g. as frozen features for a linear probe."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x).mean((2, 3))


class EmbeddingNet(nn.Module):
    """``backbone.forward_features`` -> mean pool -> linear -> (optionally) L2 normalise: ``(B, embed_dim)``.

    ``feature_dim`` (channels of ``backbone.forward_features``) is read from ``backbone.num_features`` when
    omitted; ``num_features`` of the embedding net is ``embed_dim``. Images are cast to the parameters' dtype,
    so ``EmbeddingNet(...).double()`` takes the float32 batches of a ``TensorLoader``.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int | None = None, embed_dim: int = 32,
                 normalize: bool = True):
        super().__init__()
        if feature_dim is None:
            if not hasattr(backbone, "num_features"):
                raise ValueError(f"cannot tell the feature size of a {type(backbone).__name__}: pass feature_dim=<"
                                 f"channels of its forward_features>")
            feature_dim = backbone.num_features
        self.backbone, self.normalize, self.num_features = backbone, normalize, embed_dim
        self.proj = nn.Linear(feature_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.proj.weight.dtype)  # float32 images into a model turned .double() (a round-off check)
        features = self.backbone.forward_features(x).mean((2, 3))  # (B, feature_dim)
        z = self.proj(features)
        return F.normalize(z, dim=1) if self.normalize else z


class TripletNet(nn.Module):
    """Embed triplets given as ``(B, 3, H, W)`` single-channel images -> ``(B, 3, D)``.

    The anchors, positives and negatives pass through ``embed`` as one batch of ``3B`` images, so a
    batch norm in the backbone sees all of them together.
    """

    def __init__(self, embed: nn.Module):
        super().__init__()
        self.embed = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        flat = x.transpose(0, 1).reshape(3 * B, 1, *x.shape[2:])  # anchors, then positives, then negatives
        return self.embed(flat).view(3, B, -1).transpose(0, 1)


class EmbeddingClassifier(nn.Module):
    """An embedding with a binary linear head: returns ``(B, 1 + D)``, the logit in column 0, the embedding after it."""

    def __init__(self, embed: nn.Module, embed_dim: int):
        super().__init__()
        self.embed, self.num_features = embed, embed_dim
        self.head = nn.Linear(embed_dim, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``(B, embed_dim)``."""
        return self.embed(x)

    def forward_head(self, z: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, 1 + embed_dim)``: the logit, then the embedding; ``pre_logits=True`` returns the embedding alone."""
        return z if pre_logits else torch.cat([self.head(z), z], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
