"""Classification metrics on label tensors, each checked against scikit-learn in ``tests/``."""

from __future__ import annotations

import torch


def predicted_labels(x) -> torch.Tensor:
    """Labels from labels ``(N,)``, one binary logit per row ``(N, 1)`` (positive if > 0) or scores ``(N, K)``."""
    x = torch.as_tensor(x)
    if x.ndim == 2:
        return (x[:, 0] > 0).long() if x.shape[1] == 1 else x.argmax(1)
    return x.long()


def accuracy(y_pred, y_true) -> float:
    """Fraction of correct predictions. ``y_pred`` may be labels ``(N,)``, binary logits ``(N, 1)`` or scores ``(N, K)``."""
    y_pred, y_true = predicted_labels(y_pred), torch.as_tensor(y_true).long()
    if y_pred.shape != y_true.shape:
        raise ValueError(f"shapes differ: y_pred {tuple(y_pred.shape)} vs y_true {tuple(y_true.shape)}")
    return (y_pred == y_true).float().mean().item() if len(y_true) else float("nan")


def confusion_matrix(y_pred, y_true, num_classes: int | None = None) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class (scikit-learn's convention)."""
    y_pred, y_true = predicted_labels(y_pred), torch.as_tensor(y_true).long()
    if num_classes is None:
        num_classes = int(max(y_pred.max(), y_true.max())) + 1 if len(y_true) else 0
    idx = y_true * num_classes + y_pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def f1_scores(y_pred, y_true, num_classes: int | None = None) -> dict[str, float]:
    """Micro and macro F1. Micro F1 pools all decisions (it equals accuracy for single-label data);
    macro F1 averages the per-class F1 = 2PR / (P + R) over the classes present in ``y_true`` or ``y_pred``,
    a class with no true and no predicted examples being left out, as scikit-learn does by default."""
    cm = confusion_matrix(y_pred, y_true, num_classes).double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    per_class = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    present = denom > 0
    micro = (tp.sum() / cm.sum()).item() if cm.sum() > 0 else float("nan")
    macro = per_class[present].mean().item() if present.any() else float("nan")
    return {"micro": micro, "macro": macro}


def micro_f1(y_pred, y_true) -> float:
    """Micro-averaged F1 (for ``fit(metrics=...)``)."""
    return f1_scores(y_pred, y_true)["micro"]


def macro_f1(y_pred, y_true) -> float:
    """Macro-averaged F1 (for ``fit(metrics=...)``)."""
    return f1_scores(y_pred, y_true)["macro"]


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Retrieval recall@k, leave-one-out: the fraction of items whose ``k`` nearest other items (Euclidean)
    include one of the same label. ``embeddings`` ``(N, D)``, ``labels`` ``(N,)``."""
    if not 1 <= k < len(embeddings):
        raise ValueError(f"k must be in [1, N-1] = [1, {len(embeddings) - 1}], got {k}")
    dist = torch.cdist(embeddings.float(), embeddings.float())
    dist.fill_diagonal_(float("inf"))  # an item is not its own neighbour
    nearest = dist.topk(k, dim=1, largest=False).indices  # (N, k)
    labels = torch.as_tensor(labels)
    return (labels[nearest] == labels[:, None]).any(1).float().mean().item()
