"""Figures of segmentation results: loss curves of several runs and per-class precision-recall curves.

``plot_loss_curves`` draws each run's training loss (solid) and held-out loss (dashed) per epoch;
``plot_pr_curves`` draws the precision-recall curve of every class with its AP in the legend and the
worst class (whose AP is the worst-group AP) in a thicker line, so that AP and WGAP are areas one can see.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from course_utils.viz import mask_colors

__all__ = ["plot_loss_curves", "plot_pr_curves"]


def plot_loss_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str | None = None, ax=None):
    """``curves``: ``{label: {"train": per-epoch losses, "val": per-epoch losses (optional)}}``; epochs from 1.

    Each label gets one colour: its training loss solid, its held-out loss dashed."""
    if not curves:
        raise ValueError("curves is empty: pass {label: {'train': [...], 'val': [...]}}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
    fig = ax.figure
    for i, (label, c) in enumerate(curves.items()):
        if "train" not in c:
            raise ValueError(f"curves[{label!r}] has no 'train' losses; keys: {sorted(c)}")
        ax.plot(np.arange(1, len(c["train"]) + 1), c["train"], "-", color=f"C{i % 10}", lw=1.2, label=label,
                gid="train")
        if c.get("val") is not None:
            ax.plot(np.arange(1, len(c["val"]) + 1), c["val"], "--", color=f"C{i % 10}", lw=1.2, gid="val")
    ax.plot([], [], "k-", lw=1.2, label="training (solid)")
    ax.plot([], [], "k--", lw=1.2, label="held out (dashed)")
    ax.set(xlabel="epoch", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_pr_curves(curves: Sequence, ap: Sequence[float], class_names: Sequence[str], title: str | None = None,
                   ax=None):
    """Per-class precision-recall curves (``metrics.precision_recall_curves``), AP per class in the legend.

    ``curves[c]`` is ``(precision, recall)`` or ``None`` (a class without positives, left out); the class with
    the smallest AP, the worst group, is drawn thicker and named so in the legend. Each class has the colour
    ``viz.mask_colors`` gives it in the segmentation figures (background black)."""
    if not (len(curves) == len(ap) == len(class_names)):
        raise ValueError(f"curves, ap and class_names must have one entry per class, got {len(curves)}, "
                         f"{len(ap)} and {len(class_names)}")
    present = [c for c in range(len(curves)) if curves[c] is not None]
    if not present:
        raise ValueError("no class has positive pixels: nothing to draw")
    worst = min(present, key=lambda c: ap[c])
    colors = mask_colors(len(curves))  # each class in the colour of the mask figures
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
    fig = ax.figure
    for c in present:
        precision, recall = (np.asarray(v, dtype=float) for v in curves[c])
        # the step curve whose area is AP: precision P_n held over (R_{n-1}, R_n]
        ax.step(np.concatenate([[0.0], recall]), np.concatenate([precision[:1], precision]), where="pre",
                color=colors[c], lw=2.6 if c == worst else 1.1,
                label=f"{class_names[c]} (AP {ap[c]:.2f})" + (", worst" if c == worst else ""), gid="pr")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)  # off the curves
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
