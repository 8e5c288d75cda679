"""Figures of course_utils.viz, checked on what they draw (image data, line data, labels, colours, legends);
viz.declutter_labels: overlapping labels end up apart, each still pointing at its point."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import viz  # noqa: E402
from course_utils.train import History  # noqa: E402


def test_declutter_labels_separates_overlapping_labels():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set(xlim=(0, 10), ylim=(0, 10))
    points = [(5, 5.0), (5, 5.05), (5.1, 4.95), (1, 1)]
    texts = [ax.annotate(f"label {i}", p, xytext=(3, 0), textcoords="offset points", fontsize=8)
             for i, p in enumerate(points)]
    renderer = fig.canvas.get_renderer()
    boxes = lambda: [t.get_window_extent(renderer) for t in texts]  # noqa: E731
    assert any(a.overlaps(b) for i, a in enumerate(boxes()) for b in boxes()[i + 1:])  # they start on top of each other
    viz.declutter_labels(ax, texts)
    after = boxes()
    assert not any(a.overlaps(b) for i, a in enumerate(after) for b in after[i + 1:])
    assert [t.xy for t in texts] == points  # each label still points at its own data point
    assert texts[3].xyann == (3, 0)  # a label that overlapped nothing did not move
    plt.close(fig)


# ------------------------------------------------------------------------------- what the figures draw

def _close():
    plt.close("all")


def test_plot_history_draws_train_solid_and_val_dashed():
    h = History(records=[{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "train_acc": 0.3, "val_acc": 0.2},
                 {"epoch": 2, "train_loss": 1.0, "val_loss": 1.5, "train_acc": 0.6, "val_acc": 0.5}])
    fig = viz.plot_history({"a": h}, metrics=("loss",))
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"a train", "a val"}
    assert list(lines["a train"].get_ydata()) == [2.0, 1.0] and lines["a train"].get_linestyle() == "-"
    assert list(lines["a val"].get_ydata()) == [2.5, 1.5] and lines["a val"].get_linestyle() == "--"
    assert list(lines["a val"].get_xdata()) == [1, 2] and ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a train", "a val"]
    _close()


def test_show_images_scales_uint8_and_writes_captions():
    images = torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8)
    fig = viz.show_images(images, ["x", "y", "z"], ncols=2)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 4 and len(drawn) == 3  # the fourth cell stays empty
    for ax, img, caption in zip(drawn, images, "xyz"):
        np.testing.assert_allclose(ax.images[0].get_array(), img[0].float().numpy() / 255, rtol=1e-6)
        assert ax.get_title() == caption
    _close()


def test_projections_and_embedding_plot():
    feats = torch.cat([torch.randn(20, 6, generator=torch.Generator().manual_seed(0)),
                       torch.randn(20, 6, generator=torch.Generator().manual_seed(1)) + 8])
    pca = viz.project_2d(feats, "pca")
    assert pca.shape == (40, 2) and abs(pca[:20, 0].mean() - pca[20:, 0].mean()) > 5  # the first component splits them
    assert viz.project_2d(feats, "tsne").shape == (40, 2)
    fig = viz.plot_embeddings({"PCA": pca}, torch.tensor([0] * 20 + [1] * 20), ["a", "b"])
    (ax,) = fig.axes
    assert ax.get_title() == "PCA"
    points = [c.get_offsets() for c in ax.collections]
    np.testing.assert_allclose(points[0], pca[:20])
    np.testing.assert_allclose(points[1], pca[20:])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert [tuple(c.get_facecolor()[0][:3]) for c in ax.collections] == [
        tuple(matplotlib.colors.to_rgb(c)) for c in ("C0", "C1")]
    with pytest.raises(ValueError, match="pca' or 'tsne"):
        viz.project_2d(feats, "umap")
    _close()


def test_show_attributions_overlays_each_map_on_its_image():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    maps = {"CAM": torch.rand(3, 8, 8), "occlusion": torch.rand(3, 8, 8).numpy()}
    fig = viz.show_attributions(images, maps, row_titles=["a", "b", "c"])
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["", "CAM", "occlusion"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    for r in range(3):
        assert len(axes[r, 0].images) == 1 and all(len(ax.images) == 2 for ax in axes[r, 1:])  # image, then the map
        np.testing.assert_allclose(axes[r, 0].images[0].get_array(), images[r, 0].numpy() / 255, rtol=1e-6)
        np.testing.assert_allclose(axes[r, 1].images[1].get_array(), maps["CAM"][r].numpy())
        np.testing.assert_allclose(axes[r, 2].images[1].get_array(), maps["occlusion"][r])
    _close()


def test_mask_to_rgb_uses_black_for_the_background_and_tab10_after():
    rgb = viz.mask_to_rgb(torch.tensor([[0, 1], [2, 10]]))
    assert rgb.shape == (2, 2, 3) and (rgb[0, 0] == 0).all()
    tab = matplotlib.colormaps["tab10"].colors
    np.testing.assert_allclose(rgb[0, 1], tab[0])
    np.testing.assert_allclose(rgb[1, 0], tab[1])
    np.testing.assert_allclose(rgb[1, 1], tab[9])
    assert viz.mask_colors(3).shape == (3, 3)


def test_show_segmentations_draws_images_masks_titles_and_a_legend():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 8, 8, generator=g)
    truth, pred = torch.randint(0, 2, (4, 8, 8), generator=g), torch.randint(0, 2, (4, 8, 8), generator=g)
    fig = viz.show_segmentations(images, {"truth": truth, "pred": pred}, ["bg", "square"])
    axes = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["image", "truth", "pred"]
    for j in range(4):
        np.testing.assert_allclose(axes[0, j].images[0].get_array(), images[j, 0].numpy())
        np.testing.assert_allclose(axes[1, j].images[0].get_array(), viz.mask_to_rgb(truth[j], 2))
        np.testing.assert_allclose(axes[2, j].images[0].get_array(), viz.mask_to_rgb(pred[j], 2))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["bg", "square"]
    np.testing.assert_allclose([h.get_facecolor()[:3] for h in legend.legend_handles], viz.mask_colors(2))
    _close()




def test_explorer_draws_only_when_the_slider_moves():
    calls = []
    widget = viz.explorer(5, calls.append, description="image")
    slider = widget.children[0]
    assert (slider.min, slider.max, slider.value, slider.description) == (0, 4, 0, "image")
    assert calls == []  # nothing drawn before the slider moves
    slider.value = 3
    slider.value = 1
    assert calls == [3, 1]
    with pytest.raises(ValueError):
        viz.explorer(0, calls.append)


def test_forest_plot_draws_each_interval_source_and_margin():
    rows = [{"label": "max-pool − stride", "diff": 1.2, "ci95": (0.4, 2.0), "source": 1.15, "verdict": "supported"},
            {"label": "GELU − ReLU", "diff": 0.1, "ci95": (-0.3, 0.6), "source": 0.02, "margin": 0.5,
             "verdict": "inconclusive"},
            {"label": "deep − base", "diff": -0.4, "ci95": None, "verdict": "not judged"}]
    fig = viz.forest_plot(rows, xlabel="Δ test accuracy")
    ax = fig.axes[0]
    by = lambda gid: [a for a in [*ax.lines, *ax.patches] if a.get_gid() == gid]  # noqa: E731
    intervals = by("interval")
    assert [tuple(ln.get_xdata()) for ln in intervals] == [(0.4, 2.0), (-0.3, 0.6)]
    assert [ln.get_ydata()[0] for ln in intervals] == [3, 2]  # first row on top
    assert matplotlib.colors.same_color(intervals[0].get_color(), viz.VERDICT_COLORS["supported"])
    assert matplotlib.colors.same_color(intervals[1].get_color(), viz.VERDICT_COLORS["inconclusive"])
    assert [tuple(ln.get_xdata()) for ln in by("source")] == [(1.15,), (0.02,)]
    (band,) = by("margin")
    assert (band.get_x(), band.get_width()) == (-0.5, 1.0)
    hollow = by("estimate")[2]  # the row without an interval: a hollow marker at its mean difference
    assert tuple(hollow.get_xdata()) == (-0.4,) and hollow.get_markerfacecolor() == "none"
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in rows]
    assert ax.get_xlabel() == "Δ test accuracy"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["supported", "inconclusive", "not judged", "source", "margin"]
    plt.close(fig)


def test_budget_plot_draws_each_series_band_and_source():
    series = {"− BN − stride": [(24000, -4.0, (-5.0, -3.0)), (6000, -8.0, (-9.5, -6.5)), (12000, -6.0, None)],
              "max-pool − stride": [(6000, 1.0, (0.2, 1.8)), (24000, 1.3, (0.6, 2.0))]}
    fig = viz.budget_plot(series, xlabel="images seen", source={"− BN − stride": 0.74}, logx=True)
    ax = fig.axes[0]
    lines = [ln for ln in ax.lines if ln.get_gid() == "estimate"]
    assert [list(ln.get_xdata()) for ln in lines] == [[6000, 12000, 24000], [6000, 24000]]  # sorted by budget
    assert list(lines[0].get_ydata()) == [-8.0, -6.0, -4.0]
    bands = [c for c in ax.collections if c.get_gid() == "interval"]
    assert len(bands) == 2  # a band through the budgets that have an interval
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == -9.5 and ys.max() == -3.0
    (src,) = [ln for ln in ax.lines if ln.get_gid() == "source"]
    assert list(src.get_ydata()) == [0.74, 0.74]
    assert matplotlib.colors.same_color(src.get_color(), lines[0].get_color())
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "images seen"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*series, "source (same colour)"]
    plt.close(fig)


def test_plot_embeddings_wraps_panels_into_rows():
    xy = np.random.default_rng(0).normal(size=(10, 2))
    fig = viz.plot_embeddings({f"p{i}": xy for i in range(5)}, torch.arange(10) % 2, ncols=3)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and [ax.get_title() for ax in shown] == [f"p{i}" for i in range(5)]
    assert fig.axes[0].get_position().y0 > fig.axes[3].get_position().y0  # a second row below the first
    plt.close(fig)
