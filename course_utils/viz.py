"""Figures the chapters share: training curves, image grids, confusion matrices.

Each function draws into a new figure (or the ``ax`` given) and returns the figure, so a notebook
cell ends with it and Jupyter shows it once.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def plot_history(history, metrics: Sequence[str] = ("loss", "acc"), title: str | None = None):
    """One panel per metric, train (solid) and val (dashed) against epoch. ``history`` is a ``History``
    or a ``{label: History}`` dict to compare runs."""
    runs = history if isinstance(history, dict) else {"": history}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (label, h) in enumerate(runs.items()):
            color = f"C{i}"
            for split, style in (("train", "-"), ("val", "--")):
                values = h[f"{split}_{metric}"]
                if any(v is not None for v in values):
                    name = f"{label} {split}".strip()
                    ax.plot(h["epoch"], values, style, color=color, marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_images(images: torch.Tensor, labels: Sequence[str] | None = None, ncols: int = 8,
                cmap: str = "gray", size: float = 1.3):
    """A grid of ``(N, C, H, W)`` images (uint8 or float) with optional captions."""
    images = images.detach().float().cpu()
    if images.max() > 1.5:
        images = images / 255.0
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.25 if labels else 1)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=7)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm, class_names: Sequence[str] | None = None, normalize: bool = True,
                          title: str | None = None, ax=None):
    """Seaborn heat map of a ``(K, K)`` confusion matrix (rows true, columns predicted)."""
    import seaborn as sns

    cm = torch.as_tensor(cm).double().numpy()
    shown = cm / np.clip(cm.sum(1, keepdims=True), 1, None) if normalize else cm
    if ax is None:
        k = len(cm)
        fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.5 * k + 1.8))
    else:
        fig = ax.figure
    names = class_names if class_names is not None else [str(i) for i in range(len(cm))]
    sns.heatmap(shown, annot=True, fmt=".2f" if normalize else "d" if cm.max() < 1e6 else ".0f",
                cmap="Blues", xticklabels=names, yticklabels=names, cbar=False, ax=ax, annot_kws={"size": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def book_style(dpi: int = 90) -> None:
    """Modest-resolution PNG figures with readable fonts, so executed notebooks stay small."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "font.size": 9, "axes.titlesize": 10})
