"""Every loss the course trains with: metric learning, segmentation, BYOL and mixup.

Metric learning: the triplet loss, its batch-hard variant, and a triplet sampler.

An embedding network ``f`` is trained so that ``d(f(a), f(p)) + margin <= d(f(a), f(n))`` for an
anchor ``a``, a positive ``p`` of the same class and a negative ``n`` of another class:

- ``triplet_loss``: the triplet loss of Schroff, Kalenichenko & Philbin 2015 (FaceNet) on given
  triplets, identical to ``torch.nn.TripletMarginLoss``; ``sample_triplets`` draws random triplets.
- ``in_batch_triplet_loss``: ``triplet_loss`` over ``B`` random triplets drawn inside the batch (anchors
  drawn with replacement).
- ``binary_cross_entropy``: BCE of one sigmoid output per example, with integer labels.
- ``batch_hard_triplet_loss``: Hermans, Beyer & Leibe 2017 ("In Defense of the Triplet Loss for
  Person Re-Identification"): every example of a batch is an anchor, paired with its hardest
  positive and hardest negative in the batch (``hardest_distances``), so no triplets need to be mined offline.

Each is tested against PyTorch or a brute-force loop in ``tests/test_losses.py``.

Per-pixel losses for segmentation under class imbalance (logits ``(B, K, ...)``, targets ``(B, ...)``),
tested in ``tests/test_losses.py``:

- ``class_weights_from_frequencies``: median-frequency balancing (Eigen & Fergus 2015);
- ``weighted_cross_entropy``: cross-entropy with a weight per class, equal to ``F.cross_entropy(weight=...)``;
- ``dice_loss``: the soft multi-class Dice loss (Milletari, Navab & Ahmadi 2016, V-Net);
- ``poly1_cross_entropy``: Poly-1 (Leng et al. 2022, PolyLoss), cross-entropy plus ``epsilon * (1 - p_t)``.

``byol_loss`` / ``symmetric_byol_loss``: BYOL's regression of the target projection (Grill et al. 2020,
eqs. 2 and 4), tested in ``tests/models/test_byol.py``.

``soft_target_cross_entropy``: cross-entropy with probability-vector targets, for mixup (Zhang et al. 2018;
``course_utils.augment.mixup_batch``), timm's ``SoftTargetCrossEntropy``; tested in ``tests/test_losses.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PK_HINT = "use a sampler that draws P classes x K examples (K >= 2) per batch"


def _check_margin(margin: float) -> None:
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}: with margin 0, mapping every input to one point "
                         f"already gives zero loss")


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"anchor and {what} must both be (B, D), got {tuple(a.shape)} and {tuple(b.shape)}")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 1.0, p: float = 2) -> torch.Tensor:
    """Triplet loss (Schroff et al. 2015): mean over ``(B, D)`` triplets of ``max(d(a, p) - d(a, n) + margin, 0)``.

    ``d(x, y) = ||x - y + eps||_p`` with ``eps = 1e-6``, as ``F.pairwise_distance`` computes it, so the
    result equals ``torch.nn.TripletMarginLoss(margin, p)(anchor, positive, negative)``; like it, ``margin > 0``.
    """
    _check_pair(anchor, positive, "positive")
    _check_pair(anchor, negative, "negative")
    _check_margin(margin)
    eps = 1e-6
    d_ap = torch.linalg.vector_norm(anchor - positive + eps, ord=p, dim=-1)  # (B,)
    d_an = torch.linalg.vector_norm(anchor - negative + eps, ord=p, dim=-1)  # (B,)
    return (margin + d_ap - d_an).clamp_min(0).mean()


def pairwise_distances(embeddings: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``(B, D)`` embeddings -> ``(B, B)`` Euclidean distances (squared if ``squared``), zero on the diagonal.

    Uses ``||x||^2 - 2 x.y + ||y||^2`` (one matrix product), clamped at 0 against round-off. The square
    root is taken only where the squared distance is positive, so its gradient stays finite (zero)
    where two embeddings coincide, instead of ``0 / 0 = nan``.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (B, D), got {tuple(embeddings.shape)}")
    sq_norms = embeddings.pow(2).sum(1)  # (B,)
    sq = sq_norms[:, None] - 2 * embeddings @ embeddings.T + sq_norms[None, :]
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    sq = sq.masked_fill(eye, 0).clamp_min(0)
    if squared:
        return sq
    zero = sq == 0
    return sq.masked_fill(zero, 1).sqrt().masked_fill(zero, 0)


def hardest_distances(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's farthest positive and nearest negative distance in a batch: ``(d_ap, d_an)``, each ``(A,)``.

    ``(B, D)`` embeddings with ``(B,)`` labels; the ``A`` anchors are those with a positive (same label, not
    itself) and a negative (another label), in batch order. What ``batch_hard_triplet_loss`` compares.
    """
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(f"labels must be ({len(embeddings)},), got {tuple(labels.shape)}")
    dist = pairwise_distances(embeddings)  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=dist.device)
    is_pos, is_neg = same & ~eye, ~same
    valid = is_pos.any(1) & is_neg.any(1)  # (B,)
    if not valid.any():
        raise ValueError(f"batch-hard triplet loss: no anchor has both a positive and a negative; the batch "
                         f"needs at least two classes and two examples of one class; {_PK_HINT}")
    d_ap = dist.masked_fill(~is_pos, float("-inf")).amax(1)[valid]
    d_an = dist.masked_fill(~is_neg, float("inf")).amin(1)[valid]
    return d_ap, d_an


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                            soft: bool = False) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) of ``(B, D)`` embeddings with ``(B,)`` labels.

    For each anchor: ``d_ap`` = distance to its farthest positive (same label, not itself) and ``d_an`` =
    distance to its nearest negative (other label) (``hardest_distances``); loss ``relu(d_ap - d_an + margin)``,
    or the soft margin ``softplus(d_ap - d_an)`` when ``soft`` (``margin`` is then unused). Averaged over the
    anchors with a positive and a negative.
    """
    if not soft:
        _check_margin(margin)
    d_ap, d_an = hardest_distances(embeddings, labels)
    gap = d_ap - d_an
    return (F.softplus(gap) if soft else F.relu(gap + margin)).mean()


def sample_triplets(labels, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random triplets as a ``(n, 3)`` LongTensor of indices ``(anchor, positive, negative)`` into ``labels``.

    The anchor is uniform over all examples, the positive uniform over the other examples of its class,
    the negative uniform over the examples of the other classes. Deterministic for a given ``seed``.
    """
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"triplets need at least two classes, got {len(classes)}")
    if counts.min() < 2:
        raise ValueError(f"every class needs at least two examples for a positive; class "
                         f"{classes[counts.argmin()].item()} has {counts.min().item()}")
    # Examples grouped by class: class c occupies order[start[c] : start[c] + counts[c]].
    order = torch.argsort(inverse, stable=True)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - start[inverse[order]]  # position of each example in its class block
    g = torch.Generator().manual_seed(seed)

    def uniform_below(high: torch.Tensor) -> torch.Tensor:  # one integer in [0, high) per element
        return (torch.rand(n, generator=g, dtype=torch.float64) * high).long().minimum(high - 1)

    anchor = torch.randint(len(labels), (n,), generator=g)
    c = inverse[anchor]
    r = uniform_below(counts[c] - 1)  # skip the anchor itself within its class block
    positive = order[start[c] + r + (r >= rank[anchor]).long()]
    r = uniform_below(len(labels) - counts[c])  # skip the anchor's whole class block
    negative = order[r + (r >= start[c]).long() * counts[c]]
    return torch.stack([anchor, positive, negative], 1)


def in_batch_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 1.0,
                          seed: int | None = None) -> torch.Tensor:
    """``triplet_loss`` over ``B`` random triplets of a batch (anchors drawn with replacement, so some
    examples are anchors twice and others not at all), drawn by ``sample_triplets(labels, B, seed)`` among
    the ``(B, D)`` ``embeddings`` themselves.

    With ``seed=None`` the seed is drawn from PyTorch's global generator, so each batch gets new triplets
    and a seeded run gets the same ones again. The cheap alternative to ``batch_hard_triplet_loss``: random
    rather than hardest triplets, so most of them are easy once training succeeds, but the embedding does
    not collapse as the hardest ones can make it.
    """
    if seed is None:
        seed = int(torch.randint(2**31 - 1, ()))
    idx = sample_triplets(labels, len(embeddings), seed=seed).to(embeddings.device)  # (B, 3)
    return triplet_loss(embeddings[idx[:, 0]], embeddings[idx[:, 1]], embeddings[idx[:, 2]], margin=margin)


def binary_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``(N, 1)`` (or ``(N,)``) logits with ``(N,)`` labels 0 / 1 of any dtype:
    ``F.binary_cross_entropy_with_logits``, for a classifier with one sigmoid output (a loss for ``fit``)."""
    if logits.ndim == 2:
        if logits.shape[1] != 1:
            raise ValueError(f"logits must be (N, 1) or (N,), got {tuple(logits.shape)}")
        logits = logits[:, 0]
    return F.binary_cross_entropy_with_logits(logits, labels.float())


# ---------------------------------------------------------------------------------------------------
# Segmentation losses under class imbalance


def class_weights_from_frequencies(counts, power: float = 1.0) -> torch.Tensor:
    """Class weights from pixel counts by median-frequency balancing (Eigen & Fergus 2015, section 4.1).

    ``w_c = (median_k f_k / f_c) ** power`` with ``f_c = n_c / sum_k n_k``, the median taken over the classes
    that occur. With ``power = 1`` the weights are inverse frequencies, so every class contributes the same
    total weight (``w_c n_c`` is constant); dividing by the median puts the typical class at weight 1, the
    frequent background below 1 and rare classes above. The scale does not matter to a weighted *mean*
    (``weighted_cross_entropy`` divides by the summed weights), only the ratios do. ``power = 0.5`` softens
    them (inverse square-root frequency). A class with count 0 gets weight 0: it has no pixels to weight.

    Args:
        counts: ``(K,)`` pixel counts per class (e.g. ``course_utils.datasets.canvas.pixel_counts``).
    Returns:
        ``(K,)`` float32 weights.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any() or not (counts > 0).any():
        raise ValueError(f"counts must be a (K,) vector of non-negative counts, not all 0, got {counts.tolist()}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    freq = counts / counts.sum()
    present = counts > 0
    median = freq[present].median()  # torch's median of an even count is the lower middle value
    weights = torch.zeros_like(freq)
    weights[present] = (median / freq[present]) ** power
    return weights.float()


def _check_segmentation(logits: torch.Tensor, target: torch.Tensor) -> int:
    """Check ``(B, K, ...)`` logits against ``(B, ...)`` integer targets in ``0..K-1``; return ``K``."""
    if logits.ndim >= 2 and target.shape == logits.shape:
        raise ValueError(f"target has the logits' shape {tuple(logits.shape)}: it looks one-hot or like scores; "
                         f"pass class indices (B, ...), e.g. target.argmax(1)")
    if logits.ndim < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"logits must be (B, K, ...) and target (B, ...) with the same B and spatial size, "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    if target.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise TypeError(f"target must hold integer class indices, got {target.dtype}; use target.long()")
    K = logits.shape[1]
    if target.numel() and (target.min() < 0 or target.max() >= K):
        raise ValueError(f"target labels must be in 0..{K - 1}, got {int(target.min())}..{int(target.max())}")
    return K


def _log_p_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)`` at the target class of each pixel: ``(B, ...)``."""
    return F.log_softmax(logits, 1).gather(1, target.long().unsqueeze(1)).squeeze(1)


def _weighted_mean(values: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, K: int) -> torch.Tensor:
    """``sum_i w_{y_i} v_i / sum_i w_{y_i}`` (plain mean without weights), as ``F.cross_entropy`` averages."""
    if weight is None:
        return values.mean()
    weight = torch.as_tensor(weight, dtype=values.dtype, device=values.device)
    if weight.shape != (K,):
        raise ValueError(f"weight must be a ({K},) vector, one per class, got {tuple(weight.shape)}")
    w = weight[target.long()]
    return (w * values).sum() / w.sum()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None = None) -> torch.Tensor:
    """Class-weighted cross-entropy ``sum_i w_{y_i} (-log p_{i, y_i}) / sum_i w_{y_i}`` over all pixels ``i``.

    Equal to ``F.cross_entropy(logits, target, weight=weight)``; plain cross-entropy when ``weight`` is None.
    Rare classes get large weights (``class_weights_from_frequencies``), so their pixels count as much in
    the loss as the many background pixels.
    """
    K = _check_segmentation(logits, target)
    return _weighted_mean(-_log_p_target(logits, target), target, weight, K)


def poly1_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 1.0,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Poly-1 loss (Leng et al. 2022, "PolyLoss", eq. 3): ``-log p_t + epsilon * (1 - p_t)`` per pixel.

    Cross-entropy's Taylor series is ``-log p_t = sum_j (1 - p_t)^j / j``; Poly-1 raises the weight of the
    first term from 1 to ``1 + epsilon``, which keeps a larger gradient on pixels the model already gets
    mostly right (``epsilon = 1`` is the paper's default, ``epsilon = 0`` is cross-entropy). With ``weight``,
    each pixel's loss is weighted by its class's weight and the mean is taken as in ``weighted_cross_entropy``.
    """
    K = _check_segmentation(logits, target)
    log_pt = _log_p_target(logits, target)
    return _weighted_mean(-log_pt + epsilon * (1 - log_pt.exp()), target, weight, K)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft multi-class Dice loss ``1 - mean_c (2 sum_i p_ic g_ic + s) / (sum_i p_ic + sum_i g_ic + s)``.

    ``p = softmax(logits)`` over the classes, ``g`` the one-hot target, sums over the whole batch and all
    pixels ``i``, mean over all ``K`` classes (each class counts the same, however few its pixels: that is
    how Dice fights imbalance). ``smooth = s`` keeps a class absent from both target and prediction at
    Dice ~1 (loss 0) instead of 0 / 0. For hard one-hot predictions and ``s = 0`` the per-class Dice is the F1 score.
    An empty batch (no pixels) raises: its Dice would be the constant ``s / s``, a loss of 0 that says nothing.
    """
    K = _check_segmentation(logits, target)
    if target.numel() == 0:
        raise ValueError(f"dice_loss of an empty batch {tuple(logits.shape)} is undefined (no pixels to overlap); "
                         f"skip empty batches")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    p = F.softmax(logits, 1)
    g = F.one_hot(target.long(), K).movedim(-1, 1).to(p.dtype)  # (B, K, ...)
    dims = [0] + list(range(2, p.ndim))
    intersection = (p * g).sum(dims)  # (K,)
    dice = (2 * intersection + smooth) / (p.sum(dims) + g.sum(dims) + smooth)
    return 1 - dice.mean()


# --------------------------------------------------------------------------------------------------
# BYOL (Grill et al. 2020), the loss outside the model as in lightly's ``loss/``

def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL eq. 2, "we define the following mean squared error between the normalized predictions and target
    projections": ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``, averaged over the batch; ``p, z`` are ``(B, D)``.

    ``z`` is the target's projection: the caller computes it without gradients (the stop-gradient of the paper).
    """
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must both be (B, D), got {tuple(p.shape)} and {tuple(z.shape)}")
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def symmetric_byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL eq. 4, "we symmetrize the loss by separately feeding v' to the online network and v to the target
    network": each view's prediction regresses the target projection of the other view, the two terms summed."""
    return byol_loss(p1, z2) + byol_loss(p2, z1)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k target_k * log_softmax(logits)_k``; ``logits`` and ``target`` are ``(B, K)``."""
    if logits.shape != target.shape:
        raise ValueError(f"soft targets must have the logits' shape (B, K); got {tuple(target.shape)} for logits "
                         f"{tuple(logits.shape)}. Turn class labels into probabilities with F.one_hot(y, K).float().")
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


__all__ = ["batch_hard_triplet_loss", "binary_cross_entropy", "byol_loss", "class_weights_from_frequencies", "dice_loss",
           "hardest_distances", "in_batch_triplet_loss", "pairwise_distances", "poly1_cross_entropy", "sample_triplets",
           "soft_target_cross_entropy", "symmetric_byol_loss", "triplet_loss", "weighted_cross_entropy"]
