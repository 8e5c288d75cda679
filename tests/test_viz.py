"""viz.declutter_labels: overlapping labels end up apart, each still pointing at its point."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from course_utils import viz  # noqa: E402


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
