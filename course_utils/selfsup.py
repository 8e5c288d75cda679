"""Self-supervised pre-training with BYOL, and how to watch and judge a representation without training a classifier.

- ``pooled_features``: a backbone's globally pooled features of a set of images (the representation);
- ``knn_predict`` / ``knn_accuracy``: classify each query by a vote of its ``k`` nearest labelled
  neighbours under cosine similarity (as in Wu et al. 2018's kNN monitor); checked against
  scikit-learn's ``KNeighborsClassifier(metric="cosine")``;
- ``embedding_std``: the collapse check of Chen & He (2021, SimSiam, section 4.1): the standard
  deviation of L2-normalised embeddings, averaged over dimensions; about ``1/sqrt(d)`` for embeddings
  spread over the sphere, 0 when every image maps to the same point;
- ``linear_probe``: logistic regression on frozen features, its strength chosen by cross-validation;
- ``recalibrate_batchnorm``: batch-norm statistics re-estimated on clean images before a frozen use;
- ``pretrain_byol``: the training loop, with an EMA update of the target after every optimiser step,
  per-epoch monitoring, atomic checkpoints and exact resumption.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.loader import TensorLoader
from course_utils.models.byol import BYOL, byol_tau
from course_utils.train import DivergenceError, History, _device_of, _load_checkpoint, _save_checkpoint, _show_progress


@torch.no_grad()
def pooled_features(backbone: nn.Module, images: torch.Tensor, batch_size: int = 500, mean: float | None = None,
                    std: float | None = None) -> torch.Tensor:
    """``backbone.forward_features`` of ``(N, C, H, W)`` images, mean-pooled: ``(N, channels)`` on the CPU.

    Runs in eval mode and puts the backbone back in the mode it was in.
    """
    was_training = backbone.training
    backbone.eval()
    device = _device_of(backbone)
    loader = TensorLoader(images, torch.zeros(len(images)), batch_size, mean=mean, std=std)
    try:
        out = [backbone.forward_features(x.to(device)).mean((2, 3)).float().cpu() for x, _ in loader]
    finally:
        backbone.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 500, mean: float | None = None,
                          std: float | None = None) -> nn.Module:
    """Re-estimate every batch norm's running mean and variance on ``images``, in place; returns ``model``.

    BYOL trains on augmented views, so its running statistics describe crops, jitter and blur, not the
    clean images a frozen backbone later sees. This replaces them by the average of the per-batch
    statistics over ``images`` (``momentum=None``); the weights are not changed.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    was_training = model.training
    model.train()
    device = _device_of(model)
    try:
        for x, _ in TensorLoader(images, torch.zeros(len(images)), batch_size, mean=mean, std=std):
            model.forward_features(x.to(device)) if hasattr(model, "forward_features") else model(x.to(device))
    finally:
        model.train(was_training)
        for m, (momentum, _) in zip(norms, saved):
            m.momentum = momentum
    return model


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int = 20,
                weights: str = "uniform", chunk: int = 1024) -> torch.Tensor:
    """Labels of ``queries`` ``(M, D)`` by a vote of their ``k`` nearest rows of ``bank`` ``(N, D)`` under cosine distance.

    ``weights="uniform"``: one vote per neighbour; ``"distance"``: votes weighted by ``1 / (1 - cos)``
    (a neighbour at distance 0 takes all the weight). Both are scikit-learn's rules; ties between
    classes go to the smallest label, as there.
    """
    if weights not in ("uniform", "distance"):
        raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be in [1, {len(bank)}] (the bank's size), got {k}")
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank and queries must be (N, D) and (M, D), got {tuple(bank.shape)}, {tuple(queries.shape)}")
    bank_n = F.normalize(bank.double(), dim=1)
    classes, labels = torch.unique(bank_labels, return_inverse=True)
    preds = []
    for q in F.normalize(queries.double(), dim=1).split(chunk):
        dist = 1 - q @ bank_n.T  # (m, N) cosine distances
        d, idx = dist.topk(k, dim=1, largest=False)  # (m, k), nearest first
        if weights == "uniform":
            w = torch.ones_like(d)
        else:
            exact = d <= 0
            w = torch.where(exact.any(1, keepdim=True), exact.double(), 1 / d.clamp_min(1e-300))
        votes = torch.zeros(len(q), len(classes), dtype=torch.float64).scatter_add_(1, labels[idx], w)
        preds.append(classes[votes.argmax(1)])  # argmax returns the first maximum: the smallest label
    return torch.cat(preds)


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
                 k: int = 20, weights: str = "uniform") -> float:
    """Fraction of ``queries`` whose ``knn_predict`` label is right."""
    return (knn_predict(bank, bank_labels, queries, k, weights) == query_labels).double().mean().item()


def embedding_std(z: torch.Tensor) -> float:
    """Std over the batch of L2-normalised ``(N, d)`` embeddings, averaged over the ``d`` dimensions.

    Spread-out embeddings give about ``1/sqrt(d)``; a collapse to one point gives 0 (SimSiam, section 4.1).
    """
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"z must be (N, d) with N >= 2, got {tuple(z.shape)}")
    return F.normalize(z.double(), dim=1).std(0).mean().item()


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, Cs=(0.01, 0.1, 1.0, 10.0)) -> float:
    """Test accuracy of a logistic regression on standardised frozen features; its inverse regularisation
    strength ``C`` is chosen among ``Cs`` by (up to 5-fold) cross-validation on the training set only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = train_features.double().numpy(), np.asarray(train_labels)
    folds = int(min(5, np.unique(y, return_counts=True)[1].min()))  # every fold needs every class
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if folds >= 2 and len(Cs) > 1:
        model = GridSearchCV(model, {"logisticregression__C": list(Cs)},
                             cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    else:
        model.set_params(logisticregression__C=Cs[0])
    model.fit(x, y)
    return float((model.predict(test_features.double().numpy()) == np.asarray(test_labels)).mean())


def adamw_warmup_cosine(params, lr: float, total_steps: int, weight_decay: float = 1e-4, warmup: float = 0.1):
    """AdamW (no weight decay on 1-D parameters: biases, norms) whose rate rises linearly to ``lr`` over the
    first ``warmup`` fraction of ``total_steps``, then follows a half cosine to 0. Returns ``(optimizer, scheduler)``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    params = list(params)
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=lr)
    warm = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:  # multiplies lr after `step` scheduler steps
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, total_steps - warm) / max(total_steps - warm, 1)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class KNNProbe:
    """Watch a BYOL model during training: kNN accuracy of its backbone features, and the collapse check.

    ``bank_*`` are labelled images whose features vote, ``query_*`` the images classified; labels are
    used only to watch, never to train. ``collapse_std`` is ``embedding_std`` of the online projections
    of the queries.
    """

    bank_images: torch.Tensor
    bank_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    k: int = 20
    mean: float | None = None
    std: float | None = None

    @torch.no_grad()
    def __call__(self, model: BYOL) -> dict[str, float]:
        bank = pooled_features(model.backbone, self.bank_images, mean=self.mean, std=self.std)
        queries = pooled_features(model.backbone, self.query_images, mean=self.mean, std=self.std)
        was_training = model.projector.training
        model.projector.eval()
        z = model.projector(queries.to(_device_of(model)))
        model.projector.train(was_training)
        return {"knn_acc": knn_accuracy(bank, self.bank_labels, queries, self.query_labels, self.k),
                "collapse_std": embedding_std(z.cpu())}


def pretrain_byol(model: BYOL, loader, *, epochs: int, optimizer: torch.optim.Optimizer, scheduler=None,
                  base_tau: float = 0.99, probe: Callable[[BYOL], dict] | None = None, checkpoint=None,
                  progress: bool | None = None, verbose: bool = True) -> History:
    """Pre-train ``model`` with BYOL for ``epochs`` epochs; return the per-epoch ``History``.

    Args:
        model: a ``BYOL``; ``optimizer`` should hold ``model.online_parameters()``.
        loader: yields ``(views, _)`` with ``views`` ``(B, 2C, H, W)``, e.g. a ``TensorLoader`` with
            ``augment=TwoViews(...)``; told the epoch (``set_epoch``) so a resumed run sees the same batches.
        scheduler: stepped after every optimiser step.
        base_tau: the EMA rate rises from ``base_tau`` to 1 over all steps (``byol_tau``).
        probe: ``probe(model) -> {name: value}`` after every epoch (and once before training), e.g. a ``KNNProbe``.
        checkpoint: a file written atomically after every epoch; if it exists, training resumes from it.
        progress: tqdm bars; ``None`` shows them except under the smoke profile, CI or COURSE_PROGRESS=0.

    Records per epoch: ``train_loss`` (mean symmetric loss, in [0, 8]), ``tau``, ``lr``, the probe's values,
    ``seconds`` and ``images_per_s``. A NaN or infinite loss raises ``DivergenceError``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not isinstance(model, BYOL):
        raise TypeError(f"pretrain_byol trains a course_utils.models.BYOL, got {type(model).__name__}")
    device = _device_of(model)
    total_steps = epochs * len(loader)
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        start, history = _load_checkpoint(checkpoint, model, optimizer, scheduler, None)
        if verbose:
            print(f"resumed from {checkpoint} after epoch {start}")
    if probe is not None and not history.records:
        history.records.append({"epoch": 0, **probe(model)})
    show = _show_progress(progress)
    if show:
        from tqdm.auto import tqdm

    for epoch in range(start + 1, epochs + 1):
        model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch - 1)
        batches = tqdm(loader, desc=f"BYOL epoch {epoch}/{epochs}", leave=False, file=sys.stdout) if show else loader
        t0, total_loss, n = time.perf_counter(), torch.zeros((), dtype=torch.float64), 0
        for step, (views, _) in enumerate(batches):
            views = views.to(device, non_blocking=True)
            loss = model(views)
            if not torch.isfinite(loss):
                raise DivergenceError(
                    f"The BYOL loss became {loss.item()} at epoch {epoch}, step {step + 1}. Lower the learning rate "
                    f"(now {optimizer.param_groups[0]['lr']:.3g}) or add a warm-up, and check the inputs.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            tau = byol_tau((epoch - 1) * len(loader) + step, total_steps, base_tau)
            model.update_target(tau)
            total_loss += loss.detach().double() * len(views)
            n += len(views)
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": float(total_loss) / n, "tau": tau, "lr": optimizer.param_groups[0]["lr"]}
        if probe is not None:
            rec.update(probe(model))
        rec.update(seconds=seconds, images_per_s=n / seconds)
        history.records.append(rec)
        if verbose:
            shown = " ".join(f"{k}={v:.4f}" for k, v in rec.items() if k in ("train_loss", "knn_acc", "collapse_std", "tau"))
            print(f"epoch {epoch:>3}/{epochs} {shown} ({seconds:.1f}s, {n / seconds:.0f} img/s)", flush=True)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, history, None, epoch)
    return history
