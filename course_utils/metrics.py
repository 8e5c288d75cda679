"""Classification metrics on label tensors, and segmentation metrics over pixels (mIoU, per-class AP, mAP,
worst-group AP), each checked against scikit-learn in ``tests/``."""

from __future__ import annotations

import torch


def _no_nan(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contain NaN: a NaN score has no rank (check the model's outputs, e.g. for a "
                         f"diverged loss)")


def _integer_valued(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x.long()``, refusing floats that are not whole numbers (probabilities passed as labels)."""
    if x.is_floating_point():
        _no_nan(x, name)
        if bool((x != x.round()).any()):
            raise ValueError(f"{name} must be class labels 0..K-1, got non-integer values such as "
                             f"{x[x != x.round()][0].item():g}; pass labels (N,), one binary logit per row (N, 1) "
                             f"or scores (N, K)")
    return x.long()


def predicted_labels(x) -> torch.Tensor:
    """Labels from labels ``(N,)``, one binary logit per row ``(N, 1)`` (positive if > 0) or scores ``(N, K)``.

    NaN scores are allowed here: a diverged model still predicts (``argmax`` takes a NaN as the largest), so
    its accuracy can be reported as what it is; ranking metrics (average precision) refuse NaN scores."""
    x = torch.as_tensor(x)
    if x.ndim == 2:
        return (x[:, 0] > 0).long() if x.shape[1] == 1 else x.argmax(1)
    return _integer_valued(x, "predicted labels")


def _true_labels(y_true) -> torch.Tensor:
    """``(N,)`` integer class labels; refuses one-hot rows and non-integer floats with a hint."""
    y_true = torch.as_tensor(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        raise ValueError(f"y_true must be class labels (N,), got shape {tuple(y_true.shape)}; if it is one-hot, "
                         f"pass y_true.argmax(1)")
    return _integer_valued(y_true, "y_true")


def _check_range(labels: torch.Tensor, name: str, num_classes: int | None) -> None:
    if labels.numel() and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise ValueError(f"{name} must be class labels {allowed}, got {int(labels.min())}..{int(labels.max())}")


def accuracy(y_pred, y_true) -> float:
    """Fraction of correct predictions. ``y_pred`` may be labels ``(N,)``, binary logits ``(N, 1)`` or scores ``(N, K)``."""
    y_pred, y_true = predicted_labels(y_pred), _true_labels(y_true)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"shapes differ: y_pred {tuple(y_pred.shape)} vs y_true {tuple(y_true.shape)}")
    return (y_pred == y_true).float().mean().item() if len(y_true) else float("nan")


def confusion_matrix(y_pred, y_true, num_classes: int | None = None) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class (scikit-learn's convention; note
    the argument order, predictions first as in ``accuracy``, where scikit-learn takes ``y_true`` first).
    Labels must lie in ``0..num_classes-1``."""
    y_pred, y_true = predicted_labels(y_pred), _true_labels(y_true)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"shapes differ: y_pred {tuple(y_pred.shape)} vs y_true {tuple(y_true.shape)}")
    _check_range(y_pred, "y_pred", num_classes)
    _check_range(y_true, "y_true", num_classes)
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


def triplet_distances(embeddings: torch.Tensor, triplets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d_ap, d_an)``: the Euclidean distances anchor-positive and anchor-negative, each ``(T,)``, of ``(T, 3)``
    index triplets (anchor, positive, negative, e.g. from ``losses.sample_triplets``) into ``(N, D)`` embeddings."""
    triplets = torch.as_tensor(triplets)
    if embeddings.ndim != 2 or triplets.ndim != 2 or triplets.shape[1] != 3:
        raise ValueError(f"embeddings must be (N, D) and triplets (T, 3) indices, got {tuple(embeddings.shape)} "
                         f"and {tuple(triplets.shape)}")
    a, p, n = embeddings[triplets[:, 0]], embeddings[triplets[:, 1]], embeddings[triplets[:, 2]]
    return (a - p).norm(dim=1), (a - n).norm(dim=1)


def active_triplet_fraction(embeddings: torch.Tensor, triplets: torch.Tensor, margin: float) -> float:
    """The fraction of triplets that still violate the margin, ``d(a, p) - d(a, n) + margin > 0`` (Euclidean):
    the triplets that would still give a triplet loss and a gradient. ``embeddings`` ``(N, D)``, ``triplets``
    ``(T, 3)`` indices (anchor, positive, negative), e.g. from ``losses.sample_triplets``."""
    d_ap, d_an = triplet_distances(embeddings, triplets)
    return (d_ap - d_an + margin > 0).float().mean().item()


def distance_summary(embeddings: torch.Tensor, triplets: torch.Tensor, margin: float) -> dict[str, float]:
    """The distances that tell a collapsed embedding from a spread one, for ``(N, D)`` embeddings and ``(T, 3)``
    triplets: ``spread`` (the mean distance between two different embeddings, ``torch.pdist``; 0 when all
    coincide), the means ``d_ap`` and ``d_an`` over the triplets, and their ``active`` fraction at ``margin``."""
    d_ap, d_an = triplet_distances(embeddings, triplets)
    return {"spread": torch.pdist(embeddings.double()).mean().item(), "d_ap": d_ap.mean().item(),
            "d_an": d_an.mean().item(), "active": (d_ap - d_an + margin > 0).float().mean().item()}


# ---------------------------------------------------------------------------------------------------
# Segmentation: every pixel is an example. Predictions are labels (B, H, W) or scores (B, K, H, W).


def _pixel_labels(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to per-pixel labels; scores ``(B, K, ...)`` (one more axis than ``target``) are arg-maxed over K."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.ndim == target.ndim + 1:
        _no_nan(pred, "scores")
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"pred must be labels shaped like target {tuple(target.shape)} or scores (B, K, ...), "
                         f"got {tuple(pred.shape)}")
    return pred.reshape(-1).long(), target.reshape(-1).long()


def iou_per_class(pred, target, num_classes: int) -> torch.Tensor:
    """Intersection over union of each class, ``TP / (TP + FP + FN)``, from the pixel confusion matrix.

    Returns ``(num_classes,)`` float64; a class absent from both ``target`` and ``pred`` (``TP + FP + FN = 0``)
    has no IoU and gets ``nan``. A class that is predicted but absent from ``target`` has IoU 0.
    """
    pred, target = _pixel_labels(pred, target)
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} labels must be in 0..{num_classes - 1}, got {int(t.min())}..{int(t.max())}")
    cm = confusion_matrix(pred, target, num_classes).double()  # rows: true class, columns: predicted
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(pred, target, num_classes: int) -> float:
    """mIoU: the mean of ``iou_per_class`` over the classes present in ``target`` or ``pred``.

    Classes absent from both are left out (as scikit-learn's ``jaccard_score(average="macro")`` does).
    """
    return iou_per_class(pred, target, num_classes).nanmean().item()


def _precision_recall(score: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall at each distinct threshold of ``score``, highest first (one point per tie group)."""
    order = torch.argsort(score, descending=True, stable=True)
    s, y = score[order], positive[order].double()
    tps = torch.cumsum(y, 0)
    fps = torch.cumsum(1 - y, 0)
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).squeeze(1), torch.tensor([len(s) - 1])])  # end of each tie
    tp, fp = tps[last], fps[last]
    return tp / (tp + fp), tp / tp[-1]


def _average_precision(score: torch.Tensor, positive: torch.Tensor) -> float:
    """AP = ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds, highest first (scikit-learn's definition)."""
    precision, recall = _precision_recall(score, positive)
    return ((recall - torch.cat([recall.new_zeros(1), recall[:-1]])) * precision).sum().item()


def _pixel_scores(scores, target, max_pixels: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, K)`` scores and ``(n,)`` labels of all pixels, or of ``max_pixels`` drawn at random (seeded)."""
    scores, target = torch.as_tensor(scores), torch.as_tensor(target)
    if scores.ndim != target.ndim + 1 or scores.shape[:1] + scores.shape[2:] != target.shape:
        raise ValueError(f"scores must be (B, K, ...) and target (B, ...), got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}")
    _no_nan(scores, "scores")
    B, K = scores.shape[:2]
    per_image = scores.reshape(B, K, -1)  # (B, K, HW): a view, no copy of the scores
    labels = target.reshape(B, -1).long()  # (B, HW)
    if labels.numel() and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"target labels must be in 0..{K - 1}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    sample = None  # (m, K) scores of the sampled pixels, when sampling
    if max_pixels is not None and max_pixels < labels.numel():
        # pixel p = b * HW + i is the p-th entry of target.reshape(-1)
        keep = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))[:max_pixels]
        b, i = keep // labels.shape[1], keep % labels.shape[1]
        sample, labels = per_image[b, :, i], labels[b, i]
    if sample is None:
        sample = per_image.movedim(1, 2).reshape(-1, K)
    return sample, labels.reshape(-1)


def average_precision_per_class(scores, target, max_pixels: int | None = None, seed: int = 0) -> torch.Tensor:
    """Per-class average precision over pixels: class ``c`` ranks all pixels by ``scores[:, c]``.

    Args:
        scores: ``(B, K, ...)`` per-pixel class scores; pass probabilities (softmax of the logits): AP ranks
            pixels by one class's score, and raw logits rank them differently.
        target: ``(B, ...)`` labels ``0..K-1``.
        max_pixels: if set, use this many pixels drawn uniformly without replacement (seeded), the same
            pixels for every class, so a large test set needs neither sort nor memory over all its pixels.
    Returns:
        ``(K,)`` float64; ``nan`` for a class without positive pixels (its AP is undefined).
    """
    per_pixel, labels = _pixel_scores(scores, target, max_pixels, seed)
    K = per_pixel.shape[1]
    ap = torch.full((K,), float("nan"), dtype=torch.float64)
    for c in range(K):
        positive = labels == c
        if positive.any():
            ap[c] = _average_precision(per_pixel[:, c], positive)
    return ap


def mean_average_precision(scores, target, max_pixels: int | None = None, seed: int = 0) -> float:
    """mAP: the mean of ``average_precision_per_class`` over the classes with positive pixels."""
    return average_precision_per_class(scores, target, max_pixels, seed).nanmean().item()


def worst_group_ap(scores, target, max_pixels: int | None = None, seed: int = 0) -> float:
    """Worst-group AP (WGAP): the minimum of ``average_precision_per_class`` over the classes with positive pixels."""
    return _nanmin(average_precision_per_class(scores, target, max_pixels, seed))


def precision_recall_curves(scores, target, max_pixels: int | None = None, seed: int = 0) -> list:
    """Per class, the ``(precision, recall)`` tensors of its precision-recall curve (``None`` without positives).

    The points behind ``average_precision_per_class`` (same pixels, same ``max_pixels`` sample): one point per
    distinct score, highest first, so AP is the area under the step curve, ``sum_n (R_n - R_{n-1}) P_n``.
    """
    per_pixel, labels = _pixel_scores(scores, target, max_pixels, seed)
    return [_precision_recall(per_pixel[:, c], labels == c) if (labels == c).any() else None
            for c in range(per_pixel.shape[1])]


def _nanmin(x: torch.Tensor) -> float:
    x = x[~x.isnan()]
    return x.min().item() if len(x) else float("nan")


def segmentation_report(scores, target, max_pixels: int | None = None, seed: int = 0) -> dict:
    """mIoU, mAP and WGAP of ``(B, K, ...)`` probabilities at once, with the per-class ``iou`` and ``ap`` vectors."""
    scores = torch.as_tensor(scores)
    iou = iou_per_class(scores, target, scores.shape[1])
    ap = average_precision_per_class(scores, target, max_pixels, seed)
    return {"mIoU": iou.nanmean().item(), "mAP": ap.nanmean().item(), "WGAP": _nanmin(ap),
            "iou": iou, "ap": ap}


__all__ = ["accuracy", "active_triplet_fraction", "average_precision_per_class", "confusion_matrix", "distance_summary",
           "f1_scores", "macro_f1", "mean_average_precision", "mean_iou", "micro_f1", "precision_recall_curves", "predicted_labels",
           "recall_at_k",
           "segmentation_report", "triplet_distances", "worst_group_ap"]
