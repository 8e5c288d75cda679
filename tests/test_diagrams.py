"""The explanatory diagrams draw what they claim to draw."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

from course_utils import diagrams  # noqa: E402


def _close():
    plt.close("all")


def test_plot_norm_axes_shades_the_activations_each_norm_averages_over():
    """Per panel, the shaded (sample, channel) cells: BN one channel over all samples, LN one sample over all
    channels, IN one cell, GN one sample over the channels of one group."""
    n, c, g = 4, 6, 2
    fig = diagrams.plot_norm_axes(num_samples=n, num_channels=c, groups=g)
    shaded = [ax.images[0].get_array() for ax in fig.axes]
    assert [a.shape for a in shaded] == [(c, n)] * 4
    assert [int(a.sum()) for a in shaded] == [n, c, 1, c // g]
    bn, ln, inorm, gn = shaded
    assert bn[1].tolist() == [1.0] * n and ln[:, 1].tolist() == [1.0] * c
    assert inorm[1, 1] == 1.0 and gn[: c // g, 1].tolist() == [1.0] * (c // g)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["Batch norm", "Layer norm", "Instance norm",
                                                                  f"Group norm, G={g}"]
    _close()


@pytest.mark.parametrize("stacks, depth", [(1, 2), (2, 3)])
def test_draw_hourglass_draws_one_bar_per_level_and_a_skip_per_level(stacks, depth):
    fig = diagrams.draw_hourglass(stacks, depth)
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 2 + 2 * stacks * depth  # stem, head, and per module one bar per level down and up
    heights = sorted({round(b.get_height(), 6) for b in bars})
    assert heights == sorted(round(1 / 2**level, 6) for level in range(depth + 1))  # bar height = the map's side
    arrows = [p for p in ax.patches if not isinstance(p, Rectangle)]
    assert len(arrows) == len(bars) + stacks * depth  # an intra-skip loop per bar, an inter-skip arc per level
    texts = [t.get_text() for t in ax.texts]
    assert [f"hourglass module {s + 1}" in texts for s in range(stacks)] == [True] * stacks
    assert ax.get_title().startswith(f"Hourglass({stacks}, width)")
    _close()


def test_draw_byol_labels_both_branches_the_stop_gradient_the_ema_and_the_loss():
    fig = diagrams.draw_byol()
    (ax,) = fig.axes
    boxes = {t.get_gid(): t for t in ax.texts if t.get_gid() in diagrams.BYOL_BOXES}
    assert set(boxes) == set(diagrams.BYOL_BOXES)  # every box drawn, each once
    assert all(t.get_bbox_patch() is not None for t in boxes.values())  # as boxes, not loose text
    text = {gid: t.get_text() for gid, t in boxes.items()}
    assert "predictor" in text["predictor"] and "theta" in text["predictor"]
    assert "xi" in text["target backbone"] and "xi" in text["target projector"]
    assert "stop-gradient" in text["stop-gradient"]
    online_y = {boxes[k].get_position()[1] for k in ("online backbone", "online projector", "predictor")}
    target_y = {boxes[k].get_position()[1] for k in ("target backbone", "target projector", "stop-gradient")}
    assert len(online_y) == len(target_y) == 1 and online_y != target_y  # two rows: the two branches
    ema = next(t.get_text() for t in ax.texts if t.get_gid() == "EMA")
    assert "moving average" in ema and "tau" in ema
    assert sum(1 for p in ax.patches) >= 9  # arrows: image -> views, along both rows, into the loss, the EMA
    _close()
