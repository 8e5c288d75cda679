"""Train, evaluate and show semantic segmentation models on canvases held in memory.

``train_segmenter`` is a plain Adam loop (the seed's recipe: Adam, weight decay 1e-4) with a one-cycle
learning-rate schedule, optionally keeping the model's predicted masks on a few fixed images after every
epoch (for "predictions over epochs" figures and sliders). ``predict_proba`` and ``evaluate_segmenter``
give per-pixel probabilities and the metrics of ``course_utils.metrics.segmentation_report``.
``mask_to_rgb``, ``show_segmentations`` and ``draw_hourglass`` are the pictures.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from course_utils.loader import TensorLoader
from course_utils.metrics import segmentation_report

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SegmentationRun(NamedTuple):
    """``history``: one dict per epoch (``epoch``, ``train_loss``, ``lr``, ``seconds``); ``snapshots``:
    ``(epochs, n, H, W)`` uint8 predicted labels on the watched images after each epoch (empty without them)."""

    history: list[dict]
    snapshots: torch.Tensor


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` images -> ``(N, K, H, W)`` softmax probabilities, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(model(images[start:start + batch_size].to(device)).softmax(1).cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate_segmenter(model: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                       max_pixels: int | None = 200_000, seed: int = 0) -> dict:
    """mIoU, mAP, WGAP and per-class ``iou`` / ``ap`` of ``model`` on ``(N, C, H, W)`` images and ``(N, H, W)`` masks.

    AP is computed on ``max_pixels`` pixels drawn at random (the same ones for every model, by ``seed``).
    """
    return segmentation_report(predict_proba(model, images), masks, max_pixels=max_pixels, seed=seed)


def train_segmenter(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, epochs: int, loss_fn: LossFn,
                    lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 32, seed: int = 0,
                    watch: torch.Tensor | None = None, verbose: bool = False,
                    channels_last: bool = True) -> SegmentationRun:
    """Train ``model`` on ``(N, C, H, W)`` images and ``(N, H, W)`` masks with Adam and a one-cycle schedule.

    Args:
        loss_fn: ``loss_fn(logits (B, K, H, W), masks (B, H, W)) -> scalar``.
        lr: the peak learning rate; the schedule warms up over the first 15% of the steps, then anneals.
        watch: ``(n, C, H, W)`` images whose predicted masks are kept after every epoch.
        channels_last: convert the model and the batches to ``torch.channels_last`` (faster convolutions on a
            CPU: 1.2x for the hourglass, measured; the results are the same up to float rounding).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = TensorLoader(images, masks, batch_size, shuffle=True, drop_last=len(images) > batch_size, seed=seed,
                          channels_last=channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                    pct_start=min(0.15, max(0.0, 1 - 1 / steps)))
    history, snapshots = [], []
    for epoch in range(epochs):
        model.train()
        loader.set_epoch(epoch)
        t0, total, n = time.perf_counter(), 0.0, 0
        for x, y in loader:
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss {loss.item()} at epoch {epoch + 1}: lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, n = total + loss.item() * len(y), n + len(y)
        history.append({"epoch": epoch + 1, "train_loss": total / n, "lr": optimizer.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - t0})
        if watch is not None:
            snapshots.append(predict_proba(model, watch).argmax(1).to(torch.uint8))
        if verbose:
            print(f"epoch {epoch + 1}/{epochs} loss {total / n:.4f} ({history[-1]['seconds']:.1f}s)", flush=True)
    model.eval()
    return SegmentationRun(history, torch.stack(snapshots) if snapshots else torch.empty(0, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------------
# Pictures

def mask_colors(num_classes: int = 11) -> np.ndarray:
    """``(num_classes, 3)`` RGB in [0, 1]: black for the background (label 0), then matplotlib's ``tab10``."""
    import matplotlib

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
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

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
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

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


__all__ = ["SegmentationRun", "draw_hourglass", "evaluate_segmenter", "mask_colors", "mask_to_rgb", "predict_proba",
           "show_segmentations", "train_segmenter"]
