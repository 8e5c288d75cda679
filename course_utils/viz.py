"""Figures the chapters share: training curves, image grids, confusion matrices, attribution maps,
embeddings, coloured segmentation masks, forest plots of claims, differences against the training budget, and a
slider explorer. Diagrams that explain
an idea (which axes a norm averages over, the hourglass's skips) are in ``course_utils.diagrams``.

Each function draws into a new figure (or the ``ax`` given) and returns the figure, so a notebook
cell ends with it and Jupyter shows it once.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch, Rectangle


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


def plot_embeddings(panels: dict, labels, class_names: Sequence[str] | None = None, size: float = 3.0,
                    ncols: int | None = None):
    """Scatter plots of 2-D projections: ``panels = {title: (N, 2) array}``, points coloured by ``labels``;
    ``ncols`` panels per row (default: all in one row)."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes = axes.reshape(1, -1)
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


VERDICT_COLORS = {"supported": "#1a9850", "contradicted": "#d73027", "inconclusive": "#e6a100",
                  "not testable here": "0.6", "not judged": "0.6", None: "C0"}


def forest_plot(rows: Sequence[Mapping], xlabel: str = "difference a − b", title: str | None = None, ax=None):
    """Intervals as rows: each row's mean difference and 95% interval (coloured by verdict), the source's
    effect (black ×), the equivalence margin (grey band) and 0 (dotted). A row without an interval (an arm
    with < 3 values) is a hollow circle. ``rows``: mappings with ``label``, ``diff``, ``ci95`` ((lo, hi) or
    None) and optional ``source``, ``margin``, ``verdict`` (``claims.forest_rows`` builds them)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.36 * len(rows)))
    fig = ax.figure
    for y, r in zip(range(len(rows), 0, -1), rows):
        color = VERDICT_COLORS.get(r.get("verdict"), "C0")
        if r.get("margin"):
            m = r["margin"]
            ax.add_patch(Rectangle((-m, y - 0.35), 2 * m, 0.7, color="0.85", zorder=0, gid="margin"))
        if r.get("ci95") is not None:
            lo, hi = r["ci95"]
            ax.plot([lo, hi], [y, y], color=color, lw=2.5, solid_capstyle="butt", gid="interval")
            ax.plot([r["diff"]], [y], "o", color=color, ms=5, gid="estimate")
        else:
            ax.plot([r["diff"]], [y], "o", mfc="none", color=color, ms=6, gid="estimate")
        if r.get("source") is not None:
            ax.plot([r["source"]], [y], "x", color="k", ms=7, mew=1.8, gid="source")
    ax.axvline(0, color="0.3", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows), 0, -1), [str(r["label"]) for r in rows], fontsize=8)
    ax.set_ylim(0.4, len(rows) + 0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    shown = list(dict.fromkeys(r.get("verdict") for r in rows if r.get("verdict")))
    handles = [Patch(color=VERDICT_COLORS[v], label=v) for v in shown]
    if any(r.get("source") is not None for r in rows):
        handles.append(plt.Line2D([], [], marker="x", color="k", ls="none", label="source"))
    if any(r.get("margin") for r in rows):
        handles.append(Patch(color="0.85", label="margin"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def budget_plot(series: Mapping[str, Sequence[tuple]], xlabel: str = "training budget",
                ylabel: str = "difference a − b", source: Mapping[str, float] | None = None, logx: bool = False,
                ax=None):
    """Differences against the training budget: for each series, its mean difference at each budget (dots and
    line) and its 95% interval (band, where there is one); the source's effect for a series as a dashed line
    of the same colour; 0 dotted. ``series``: ``{label: [(budget, diff, (lo, hi) or None), ...]}``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
    fig = ax.figure
    for i, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda p: p[0])
        x, d = [p[0] for p in points], [p[1] for p in points]
        ax.plot(x, d, "o-", color=f"C{i}", ms=4, label=label, gid="estimate")
        banded = [p for p in points if p[2] is not None]
        if banded:
            ax.fill_between([p[0] for p in banded], [p[2][0] for p in banded], [p[2][1] for p in banded],
                            color=f"C{i}", alpha=0.2, lw=0, gid="interval")
        if source and source.get(label) is not None:
            ax.axhline(source[label], color=f"C{i}", ls="--", lw=1, gid="source")
    ax.axhline(0, color="0.3", lw=0.8, ls=":")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if source and any(v is not None for v in source.values()):
        handles.append(plt.Line2D([], [], color="0.3", ls="--", lw=1, label="source (same colour)"))
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    return fig


def explorer(n: int, draw: Callable[[int], object], description: str = "index", value: int = 0):
    """An interactive explorer for a notebook: a slider over ``0 .. n - 1``; moving it to ``i`` calls ``draw(i)``
    (which makes a figure, e.g. ``show_attributions`` of image ``i``) and shows that figure in place of the
    previous one. Nothing is drawn until the slider moves. Returns the widget: end a cell with it.

    Needs ``ipywidgets`` (installed with Jupyter); a static page (the book) shows the slider without figures.
    """
    import ipywidgets as widgets

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    slider = widgets.IntSlider(value=value, min=0, max=n - 1, description=description, continuous_update=False)
    shown = widgets.Output()

    def redraw(change):
        with shown:
            shown.clear_output(wait=True)
            draw(change["new"])
            plt.show()

    slider.observe(redraw, names="value")
    return widgets.VBox([slider, shown])


__all__ = ["VERDICT_COLORS", "book_style", "declutter_labels", "explorer", "forest_plot",
           "mask_colors", "mask_to_rgb", "plot_confusion_matrix", "plot_embeddings", "plot_history",
           "project_2d", "show_attributions", "show_cams", "show_images", "show_segmentations"]
