"""Diagrams that explain an idea rather than show data: which activations a norm averages over (chapter 1),
BYOL's two branches (chapter 5) and the stacked hourglass with its skips (chapter 6). Each returns its figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle


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


BYOL_BOXES = {  # name: (x, y, text, colour); online branch on top, target branch below
    "image": (0.4, 1.0, "image $x$", "0.85"),
    "view1": (1.9, 2.0, "view $v$\n$t(x)$", "0.85"),
    "view2": (1.9, 0.0, "view $v'$\n$t'(x)$", "0.85"),
    "online backbone": (3.6, 2.0, "backbone\n$f_\\theta$", "#a6c8e8"),
    "online projector": (5.3, 2.0, "projector\n$g_\\theta$", "#a6c8e8"),
    "predictor": (7.0, 2.0, "predictor\n$q_\\theta$", "#a6c8e8"),
    "target backbone": (3.6, 0.0, "backbone\n$f_\\xi$", "#f3c49b"),
    "target projector": (5.3, 0.0, "projector\n$g_\\xi$", "#f3c49b"),
    "stop-gradient": (7.0, 0.0, "stop-gradient\n(sg)", "0.92"),
    "loss": (8.9, 1.0, "loss\n$\\|\\bar q_\\theta(z_\\theta) - \\bar z'_\\xi\\|_2^2$", "#c9e4c5"),
}


def draw_byol():
    """BYOL's two branches (Grill et al. 2020, Fig. 2): two views of an image; the online network (backbone,
    projector, predictor; trained by gradients) predicts the target network's projection of the other view;
    the target (backbone, projector; no predictor) gets no gradient and follows the online weights by a moving
    average. Each box is a text artist with ``gid`` = its name in ``BYOL_BOXES``; returns the figure."""
    fig, ax = plt.subplots(figsize=(9.6, 3.6))
    w, h = 1.25, 0.8
    for name, (x, y, text, color) in BYOL_BOXES.items():
        ax.text(x, y, text, ha="center", va="center", fontsize=8, gid=name,
                bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="0.3", lw=0.8))

    def arrow(a, b, color="0.3", style="-|>", rad=0.0, **kw):
        (xa, ya), (xb, yb) = a, b
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), arrowstyle=style, mutation_scale=10, color=color, lw=1.0,
                                     connectionstyle=f"arc3,rad={rad}", **kw))

    box = {name: (x, y) for name, (x, y, _, _) in BYOL_BOXES.items()}
    arrow((box["image"][0] + 0.45, 1.15), (box["view1"][0] - 0.55, 1.85))
    arrow((box["image"][0] + 0.45, 0.85), (box["view2"][0] - 0.55, 0.15))
    for row, names in ((2.0, ("view1", "online backbone", "online projector", "predictor")),
                       (0.0, ("view2", "target backbone", "target projector", "stop-gradient"))):
        for a, b in zip(names, names[1:]):
            arrow((box[a][0] + w / 2, row), (box[b][0] - w / 2, row))
    arrow((box["predictor"][0] + w / 2, 2.0), (box["loss"][0] - 0.3, 1.35))
    arrow((box["stop-gradient"][0] + w / 2 + 0.2, 0.0), (box["loss"][0] - 0.3, 0.65))
    ax.text(5.3 - 0.8, 2.75, "online network $\\theta$: trained by gradient descent", fontsize=8, color="#2a5d8f",
            ha="center", gid="online label")
    ax.text(5.3 - 0.8, -0.8, "target network $\\xi$: no gradient, no predictor", fontsize=8, color="#a3561a",
            ha="center", gid="target label")
    arrow((4.45, 1.55), (4.45, 0.45), color="#a3561a", style="-|>", ls="--")
    ax.text(4.55, 1.0, "moving average\n$\\xi \\leftarrow \\tau\\xi + (1-\\tau)\\theta$", fontsize=7.5,
            va="center", color="#a3561a", gid="EMA")
    ax.text(8.9, 2.2, "gradients flow back\nthrough the online branch only", fontsize=7, ha="center", color="0.35")
    ax.text(8.9, -0.2, "symmetrised: swap $v$ and $v'$\nand add the two losses", fontsize=7, ha="center",
            color="0.35")
    ax.set_xlim(-0.4, 10.1)
    ax.set_ylim(-1.1, 3.1)
    ax.axis("off")
    ax.set_title("BYOL: the online network predicts the target's projection of the other view", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["BYOL_BOXES", "draw_byol", "draw_hourglass", "plot_norm_axes"]
