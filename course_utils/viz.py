"""Figures the chapters share: training curves, image grids, confusion matrices, attribution maps,
embeddings, and segmentation pictures (coloured masks, predictions grids, the hourglass diagram).

Each function draws into a new figure (or the ``ax`` given) and returns the figure, so a notebook
cell ends with it and Jupyter shows it once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle


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


def show_cams(images: torch.Tensor, cams, titles: Sequence[str] | None = None, ncols: int = 10,
              alpha: float = 0.5, size: float = 1.2, row_labels: Sequence[str] | None = None):
    """Heat maps ``(N, H, W)`` in [0, 1] (e.g. Grad-CAM) superimposed on grey-scale images ``(N, 1, H, W)``."""
    images = images.detach().float().cpu()
    if images.max() > 1.5:
        images = images / 255.0
    cams = np.asarray(cams)
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        if i < n:
            ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.imshow(cams[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=6)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def show_attributions(images: torch.Tensor, maps: dict, row_titles: Sequence[str] | None = None,
                      size: float = 1.4, alpha: float = 0.5):
    """One row per image ``(N, 1, H, W)``: the image, then each map of ``maps = {column title: (N, H, W) in
    [0, 1]}`` overlaid on it (e.g. CAM, Grad-CAM and occlusion of several models side by side)."""
    images = images.detach().float().cpu()
    if images.max() > 1.5:
        images = images / 255.0
    n, ncols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, ncols, figsize=(size * ncols, size * n), squeeze=False)
    for r in range(n):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(images[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            if c:
                title, m = list(maps.items())[c - 1]
                ax.imshow(np.asarray(torch.as_tensor(m[r]).cpu()), cmap="jet", alpha=alpha, vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(title, fontsize=7)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def plot_norm_axes(num_samples: int = 4, num_channels: int = 6, groups: int = 2):
    """Which activations share one mean and variance, for BN, LN, IN and GN (after Wu & He 2018, Fig. 2).

    Each cell is the H x W plane of one sample (column) and one channel (row); the shaded cells are
    normalised together with the statistics of that set.
    """
    sets = {
        "Batch norm\n(N, H, W) per channel": lambda n, c: c == 1,
        "Layer norm\n(C, H, W) per sample": lambda n, c: n == 1,
        "Instance norm\n(H, W) per sample, channel": lambda n, c: n == 1 and c == 1,
        f"Group norm, G={groups}\n(C/G, H, W) per sample": lambda n, c: n == 1 and c < num_channels // groups,
    }
    fig, axes = plt.subplots(1, len(sets), figsize=(3.0 * len(sets), 2.6))
    for ax, (title, member) in zip(axes, sets.items()):
        grid = np.array([[1.0 if member(n, c) else 0.0 for n in range(num_samples)] for c in range(num_channels)])
        ax.imshow(grid, cmap="Blues", vmin=-0.3, vmax=1.3)
        ax.set_xticks(range(num_samples), [str(i) for i in range(num_samples)], fontsize=7)
        ax.set_yticks(range(num_channels), [str(i) for i in range(num_channels)], fontsize=7)
        ax.set_xticks(np.arange(-0.5, num_samples), minor=True)
        ax.set_yticks(np.arange(-0.5, num_channels), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("sample n (batch axis)", fontsize=8)
        ax.set_ylabel("channel c", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def project_2d(features, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, D)`` features -> ``(N, 2)`` with scikit-learn's PCA or t-SNE (perplexity 30, PCA init, seeded)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = torch.as_tensor(features).detach().float().cpu().numpy()
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings(panels: dict, labels, class_names: Sequence[str] | None = None, size: float = 3.0):
    """Scatter plots of 2-D projections: ``panels = {title: (N, 2) array}``, points coloured by ``labels``."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, (title, xy) in zip(axes[0], panels.items()):
        for c in np.unique(labels):
            sel = labels == c
            name = class_names[int(c)] if class_names is not None else str(c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, color=f"C{int(c) % 10}", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    return fig


def declutter_labels(ax, texts, step: float = 1.0, max_shift: float = 40.0) -> None:
    """Move overlapping text labels of ``ax`` apart: from the highest label down, each label whose box
    overlaps one already placed moves down by ``step`` points until it is free (at most ``max_shift``).

    ``texts`` are ``ax.annotate(..., textcoords="offset points")`` annotations; only their offsets change,
    so each still points at its data point.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed = []
    for text in sorted(texts, key=lambda t: -t.get_window_extent(renderer).y0):
        dx, dy = text.xyann
        shift = 0.0
        while True:
            box = text.get_window_extent(renderer).expanded(1.0, 1.05)
            if not any(box.overlaps(other) for other in placed) or shift >= max_shift:
                break
            shift += step
            text.xyann = (dx, dy - shift)
        placed.append(text.get_window_extent(renderer))


# --------------------------------------------------------------------------------------------------
# Segmentation

def mask_colors(num_classes: int = 11) -> np.ndarray:
    """``(num_classes, 3)`` RGB in [0, 1]: black for the background (label 0), then matplotlib's ``tab10``."""
    tab = matplotlib.colormaps["tab10"].colors
    return np.array([(0.0, 0.0, 0.0)] + [tab[i % 10] for i in range(num_classes - 1)])


def mask_to_rgb(masks, num_classes: int = 11) -> np.ndarray:
    """``(..., H, W)`` integer labels -> ``(..., H, W, 3)`` colours of ``mask_colors``."""
    masks = torch.as_tensor(masks).long().numpy()
    return mask_colors(num_classes)[masks]


def show_segmentations(images: torch.Tensor, rows: Mapping[str, torch.Tensor], class_names: Sequence[str],
                       size: float = 1.3):
    """A grid: the ``(n, 1, H, W)`` images in the first row, then one row of coloured masks per ``rows`` entry.

    ``rows`` maps a row title (e.g. ``"ground truth"``, ``"epoch 1"``) to ``(n, H, W)`` labels. A legend of the
    classes goes below. Returns the figure.
    """
    n = len(images)
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(size * n + 1.2, size * (1 + len(rows)) + 0.5), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j, 0], cmap="gray", vmin=0, vmax=1)
        for i, masks in enumerate(rows.values(), start=1):
            axes[i, j].imshow(mask_to_rgb(masks[j], len(class_names)), interpolation="nearest")
    for i, title in enumerate(["image", *rows]):
        axes[i, 0].set_ylabel(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    colors = mask_colors(len(class_names))
    fig.legend(handles=[Patch(color=colors[k], label=name) for k, name in enumerate(class_names)],
               loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def draw_hourglass(stacks: int = 2, depth: int = 3):
    """A diagram of ``Hourglass(stacks, width)``: each module's resolution levels as bars whose height is the
    map's side; inter skips as arcs from each down level to the up level of the same size; intra skips
    (residual shortcuts inside each block) as small loops. Returns the figure."""
    fig, ax = plt.subplots(figsize=(2.0 + 2.6 * stacks, 2.8))
    x, step, colors = 0.0, 0.45, ("#4c72b0", "#dd8452")

    def block(x0, level, color, label=None):
        h = 1.0 / 2**level
        ax.add_patch(Rectangle((x0, 0.5 - h / 2), 0.28, h, color=color, alpha=0.85))
        loop = FancyArrowPatch((x0 + 0.02, 0.5 + h / 2), (x0 + 0.26, 0.5 + h / 2), connectionstyle="arc3,rad=-0.8",
                               arrowstyle="-|>", mutation_scale=6, color="0.4", lw=0.8)
        ax.add_patch(loop)  # intra skip: a shortcut around the block
        if label:
            ax.text(x0 + 0.14, 0.5 - h / 2 - 0.06, label, ha="center", va="top", fontsize=6)

    block(x, 0, "0.6", "stem")
    x += step
    for s in range(stacks):
        downs = []
        for level in range(1, depth + 1):
            block(x, level, colors[0], "down" if level == 1 else None)
            downs.append(x)
            x += step
        ups = {}
        for level in range(depth, 0, -1):
            block(x, level, colors[1], "up" if level == 1 else None)
            ups[level] = x
            x += step
        for level, xd in enumerate(downs, start=1):  # inter skip: encoder level -> decoder level of that size
            h = 1.0 / 2 ** (level - 1)
            end = ups[level] + 0.28 if level > 1 else ups[1] + step + 0.02
            ax.add_patch(FancyArrowPatch((xd - 0.05, 0.5 + h / 2 + 0.03), (end, 0.5 + h / 2 + 0.03),
                                         connectionstyle=f"arc3,rad=-{0.25 / level:.2f}", arrowstyle="-|>",
                                         mutation_scale=7, color="C2", lw=1.0))
        ax.text((downs[0] + ups[1]) / 2 + 0.14, -0.05, f"hourglass module {s + 1}", ha="center", fontsize=7)
    block(x, 0, "0.6", "head")
    ax.text(x + 0.5, 0.9, "intra skip (loop)\ninter skip (green arc)", fontsize=6, va="top")
    ax.set_xlim(-0.2, x + 1.3)
    ax.set_ylim(-0.15, 1.35)
    ax.axis("off")
    ax.set_title(f"Hourglass({stacks}, width): bar height = map side, down = max-pool + block, up = block + upsample",
                 fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["book_style", "declutter_labels", "draw_hourglass", "mask_colors", "mask_to_rgb", "plot_confusion_matrix",
           "plot_embeddings", "plot_history", "plot_norm_axes", "project_2d", "show_attributions", "show_cams",
           "show_images", "show_segmentations"]
