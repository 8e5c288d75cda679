import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils.metrics import average_precision_per_class, precision_recall_curves
from course_utils.segfigures import plot_loss_curves, plot_pr_curves
from course_utils.viz import mask_colors


def test_loss_curves_draw_train_solid_and_val_dashed_per_run():
    fig = plot_loss_curves({"a": {"train": [3, 2, 1], "val": [3.5, 2.5, 2]}, "b": {"train": [2, 1]}})
    ax = fig.axes[0]
    train = [l for l in ax.lines if l.get_gid() == "train"]
    val = [l for l in ax.lines if l.get_gid() == "val"]
    assert len(train) == 2 and len(val) == 1
    assert list(train[0].get_xdata()) == [1, 2, 3] and val[0].get_linestyle() == "--"
    assert train[0].get_color() == val[0].get_color()
    plt.close(fig)
    with pytest.raises(ValueError, match="no 'train'"):
        plot_loss_curves({"a": {"val": [1]}})


def test_pr_curves_mark_the_worst_class_and_show_its_ap():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    scores = torch.rand(2, 3, 8, 8, generator=g).softmax(1)
    curves = precision_recall_curves(scores, target)
    ap = average_precision_per_class(scores, target).tolist()
    fig = plot_pr_curves(curves, ap, ["bg", "a", "b"])
    labels = fig.axes[0].get_legend_handles_labels()[1]
    worst = int(np.argmin(ap))
    assert labels[worst].endswith(", worst") and f"AP {ap[worst]:.2f}" in labels[worst]
    assert sum(label.endswith("worst") for label in labels) == 1
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "pr"]
    assert [matplotlib.colors.to_rgb(ln.get_color()) for ln in lines] == [tuple(c) for c in mask_colors(3)]
    plt.close(fig)
    with pytest.raises(ValueError, match="one entry per class"):
        plot_pr_curves(curves, ap[:2], ["bg", "a", "b"])
