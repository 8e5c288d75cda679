"""Running a trained model without training it: inference, features, and probes of a representation.

- ``predict``: THE inference function (eval mode, no gradients, batches on the model's device, outputs
  concatenated on the CPU); every other function here is built on it;
- ``pooled_features``: a backbone's globally pooled features (the representation a linear head sees);
- ``predict_proba`` / ``evaluate_segmenter``: per-pixel softmax of a segmentation model, and its metrics;
- ``knn_predict`` / ``knn_accuracy``: classify each query by a vote of its ``k`` nearest labelled
  neighbours under cosine similarity (as in Wu et al. 2018's kNN monitor); checked against
  scikit-learn's ``KNeighborsClassifier(metric="cosine")``;
- ``embedding_std``: the collapse check of Chen & He (2021, SimSiam, section 4.1): the standard
  deviation of L2-normalised embeddings, averaged over dimensions; about ``1/sqrt(d)`` for embeddings
  spread over the sphere, 0 when every image maps to the same point;
- ``linear_probe``: logistic regression on frozen features, its strength chosen by cross-validation;
- ``train_linear_head``: a linear layer trained with ``train.fit`` on frozen features (SGD or Adam, any loss);
- ``recalibrate_batchnorm``: batch-norm statistics re-estimated on clean images before a frozen use;
- ``KNNProbe``: kNN accuracy and collapse check of a BYOL model, to watch it during pre-training.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.hooks import eval_mode, train_mode
from course_utils.loader import TensorLoader
from course_utils.metrics import segmentation_report
from course_utils.optim import sgd_one_cycle
from course_utils.runtime import dry_run_rows, dry_run_steps
from course_utils.train import fit


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(data: torch.Tensor | Iterable, batch_size: int, mean: float | None, std: float | None) -> Iterable:
    """``data`` as ``(x, _)`` batches: a loader as it is, a tensor of images through a ``TensorLoader``."""
    if isinstance(data, torch.Tensor):
        return TensorLoader(data, torch.zeros(len(data)), batch_size, mean=mean, std=std)
    return data


def predict(model: nn.Module, data: torch.Tensor | Iterable, *, batch_size: int = 500, mean: float | None = None,
            std: float | None = None, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``forward(x)`` (default ``model(x)``) for every batch of ``data``, in eval mode and without gradients,
    concatenated on the CPU as float32.

    Args:
        model: its train/eval flags are restored afterwards; batches go to the device of its parameters.
        data: ``(N, C, H, W)`` images (uint8 are scaled to [0, 1], then ``(x - mean) / std``, in batches of
            ``batch_size``) or a loader yielding ``(x, y)`` (then ``batch_size``, ``mean``, ``std`` are unused).
        forward: what to compute from a batch, e.g. ``lambda x: model.forward_features(x).mean((2, 3))``.

    Under a dry run (``COURSE_DRY_RUN``) a few rows of the first batch are computed and repeated to ``N`` rows.
    """
    forward = model if forward is None else forward
    device, rows, outs, n = _device_of(model), dry_run_rows(), [], 0
    with eval_mode(model), torch.no_grad():
        for i, (x, _) in enumerate(_batches(data, batch_size, mean, std)):
            n += len(x)
            if rows is None or i == 0:  # a dry run computes a few rows of the first batch and repeats them
                outs.append(forward(x[:rows].to(device)).float().cpu())
    out = torch.cat(outs)
    return out if len(out) == n else out.repeat(-(-n // len(out)), *[1] * (out.ndim - 1))[:n]


def pooled_features(backbone: nn.Module, data: torch.Tensor | Iterable, batch_size: int = 500,
                    mean: float | None = None, std: float | None = None) -> torch.Tensor:
    """``backbone.forward_features`` of ``data`` (images or a loader, as in ``predict``), mean-pooled over
    the positions: ``(N, channels)`` on the CPU, the features a linear head sees (``pre_logits``)."""
    return predict(backbone, data, batch_size=batch_size, mean=mean, std=std,
                   forward=lambda x: backbone.forward_features(x).mean((2, 3)))


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` images -> ``(N, K, H, W)`` softmax probabilities of a segmentation model."""
    return predict(model, images, batch_size=batch_size, forward=lambda x: model(x).softmax(1))


def evaluate_segmenter(model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                       max_pixels: int | None = 200_000, seed: int = 0) -> dict:
    """mIoU, mAP, WGAP and per-class ``iou`` / ``ap`` of ``model`` on ``(N, C, H, W)`` images and ``(N, H, W)`` masks.

    AP is computed on ``max_pixels`` pixels drawn at random (the same ones for every model, by ``seed``).
    """
    return segmentation_report(predict_proba(model, images), masks, max_pixels=max_pixels, seed=seed)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 500, mean: float | None = None,
                          std: float | None = None) -> nn.Module:
    """Re-estimate every batch norm's running mean and variance on ``images``, in place; returns ``model``.

    BYOL trains on augmented views, so its running statistics describe crops, jitter and blur, not the
    clean images a frozen backbone later sees. This replaces them by the average of the per-batch
    statistics over ``images`` (``momentum=None``); the weights are not changed.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    device = _device_of(model)
    run = model.forward_features if hasattr(model, "forward_features") else model
    try:
        with train_mode(model):
            loader = TensorLoader(images, torch.zeros(len(images)), batch_size, mean=mean, std=std)
            for x, _ in itertools.islice(loader, dry_run_steps()):  # all batches, or a dry run's few
                run(x.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
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


def train_linear_head(features: torch.Tensor, labels: torch.Tensor, out_features: int, *, epochs: int, lr: float,
                      seed: int, batch_size: int = 64, optimizer: Callable = sgd_one_cycle,
                      loss_fn: Callable = F.cross_entropy, init: nn.Linear | None = None) -> nn.Linear:
    """A linear head ``nn.Linear(d, out_features)`` trained with ``train.fit`` on frozen ``(N, d)`` features;
    returned in eval mode, on the CPU.

    Args:
        features, labels: ``(N, d)`` features (e.g. from ``pooled_features``) and their ``(N,)`` targets.
        epochs, lr, batch_size: shuffled batches of a ``TensorLoader`` seeded with ``seed``.
        seed: seeds PyTorch's global generator first (``torch.manual_seed``), so the head's initial weights
            and the batch order depend on ``seed`` only.
        optimizer: ``optimizer(head, lr, total_steps) -> (optimizer, scheduler or None)``, as in
            ``optim.OPTIMIZERS``: ``sgd_one_cycle`` (default), ``adam_constant``, or a ``functools.partial``
            of one (e.g. ``partial(sgd_one_cycle, weight_decay=0.0)``).
        loss_fn: ``loss_fn(logits, labels)``; e.g. ``losses.binary_cross_entropy`` with ``out_features=1``.
        init: start from a copy of this layer instead of a freshly initialised one (``init`` is not changed).
    """
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], out_features) if init is None else copy.deepcopy(init).cpu()
    loader = TensorLoader(features, labels, batch_size, shuffle=True, seed=seed)
    opt, scheduler = optimizer(head, lr, epochs * len(loader))
    fit(head, loader, None, epochs=epochs, optimizer=opt, scheduler=scheduler, loss_fn=loss_fn, metrics={},
        progress=False, verbose=False)
    return head.eval()


def class_separation(features: torch.Tensor, labels: torch.Tensor, k: int = 10, seed: int = 0,
                     spaces: Iterable[str] = ("features", "PCA", "t-SNE")) -> tuple[dict, dict]:
    """How well classes separate in ``(N, D)`` features and in their 2-D PCA and t-SNE maps: one number per space.

    The features are standardised per dimension; the maps are ``viz.project_2d`` of them (seeded). In each
    space, the even-indexed points vote for the odd-indexed ones: ``knn`` is the accuracy of a Euclidean
    ``k``-nearest-neighbour classifier (scikit-learn) of held-out points; ``silhouette`` is scikit-learn's
    silhouette score of all points (from -1 to 1, higher when classes form compact, apart groups).
    Returns ``(scores, maps)``: ``{"knn <space>": ..., "silhouette <space>": ...}`` and ``{space: (N, 2)}``.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    from course_utils.viz import project_2d

    x, y = torch.as_tensor(features).double(), np.asarray(torch.as_tensor(labels).cpu())
    if x.ndim != 2 or len(x) != len(y) or len(np.unique(y)) < 2:
        raise ValueError(f"features must be (N, D) with N labels of at least 2 classes, got {tuple(x.shape)}, "
                         f"{len(y)} labels")
    x = ((x - x.mean(0)) / (x.std(0) + 1e-8)).numpy()
    bank, query = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    scores, maps = {}, {}
    for space in spaces:
        if space not in ("features", "PCA", "t-SNE"):
            raise ValueError(f"spaces are 'features', 'PCA' and 't-SNE', got {space!r}")
        xy = x if space == "features" else project_2d(x, "pca" if space == "PCA" else "tsne", seed=seed)
        if space != "features":
            maps[space] = xy
        knn = KNeighborsClassifier(n_neighbors=min(k, int(bank.sum()))).fit(xy[bank], y[bank])
        scores[f"knn {space}"] = float((knn.predict(xy[query]) == y[query]).mean())
        scores[f"silhouette {space}"] = float(silhouette_score(xy, y))
    return scores, maps


@dataclass
class KNNProbe:
    """Watch a BYOL model during training: kNN accuracy of its backbone features, and the collapse check.

    ``bank_*`` are labelled images whose features vote, ``query_*`` the images classified; labels are
    used only to watch, never to train. ``collapse_std`` is ``embedding_std`` of the online projections
    of the queries. Called with a model that has a ``backbone`` and a ``projector`` (a ``BYOL``).
    """

    bank_images: torch.Tensor
    bank_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    k: int = 20
    mean: float | None = None
    std: float | None = None

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``{"knn_acc": ..., "collapse_std": ...}`` of ``model`` now."""
        bank = pooled_features(model.backbone, self.bank_images, mean=self.mean, std=self.std)
        queries = pooled_features(model.backbone, self.query_images, mean=self.mean, std=self.std)
        with eval_mode(model.projector), torch.no_grad():
            z = model.projector(queries.to(_device_of(model)))
        return {"knn_acc": knn_accuracy(bank, self.bank_labels, queries, self.query_labels, self.k),
                "collapse_std": embedding_std(z.cpu())}


__all__ = ["KNNProbe", "class_separation", "embedding_std", "evaluate_segmenter", "knn_accuracy", "knn_predict", "linear_probe",
           "pooled_features", "predict", "predict_proba", "recalibrate_batchnorm", "train_linear_head"]
