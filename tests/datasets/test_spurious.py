import pytest
import torch

from course_utils.datasets.canvas import paste
from course_utils.datasets.spurious import (FashionDigits, accuracy_by_position, build_test_sets, random_positions,
                                            shortcut_scores)


def _items(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)  # no zero pixel: max-paste is exact
    labels = torch.arange(n) % 10
    return items, labels


def _digits(m=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (m, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(m) % 10


def test_deterministic_for_a_seed_and_different_across_seeds():
    items, labels = _items()
    dimg, dlab = _digits()
    a = FashionDigits.build(items, labels, dimg, dlab, seed=3)
    b = FashionDigits.build(items, labels, dimg, dlab, seed=3)
    c = FashionDigits.build(items, labels, dimg, dlab, seed=4)
    for f in ("images", "labels", "digits", "digit_index", "item_pos", "digit_pos"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.digit_index, c.digit_index)


@pytest.mark.parametrize("p, rare", [(0.9, 0.01), (0.75, 0.05), (1.0, 0.0)])
def test_correlated_counts_are_exact(p, rare):
    items, labels = _items(1000)
    ds = FashionDigits.build(items, labels, *_digits(), kind="correlated", p=p, rare=rare, target_class=1, target_digit=3)
    table = ds.contingency()
    assert table.sum() == 1000 and table.shape == (10, 10)
    assert table[1, 3] == round(p * 100)  # 100 trousers
    assert table[:, 3].sum() - table[1, 3] == 9 * round(rare * 100)  # exact in each of the nine other classes
    assert table[1].sum() == 100 and (table.sum(1) == 100).all()
    assert ds.describe().startswith(f"correlated: class 1 with digit 3: {round(p * 100)}/100")


def test_uncorrelated_and_anti_sets():
    items, labels = _items(2000)
    dimg, dlab = _digits()
    unc = FashionDigits.build(items, labels, dimg, dlab, kind="uncorrelated", seed=1).contingency().float()
    assert (unc[:, 3] == 20).all()  # exactly 10% of each class carries the target digit
    # the other digits are uniform draws: each cell ~ Binomial(200, 0.1), mean 20, sd ~4.2
    assert ((unc - 20).abs() < 20).all() and abs(unc.mean().item() - 20) < 1e-6
    anti = FashionDigits.build(items, labels, dimg, dlab, kind="anti", p=0.8, target_class=1, target_digit=3)
    t = anti.contingency()
    assert t[1, 3] == 0  # the target class never carries the target digit
    assert t[:, 3].sum() == round(0.8 * 1800)
    assert ((anti.labels == 1) & (anti.digits == 3)).sum() == 0


def test_pixels_are_the_source_item_and_digit_and_the_rest_is_black():
    items, labels = _items(50)
    dimg, dlab = _digits()
    ds = FashionDigits.build(items, labels, dimg, dlab, size=56)
    assert ds.images.shape == (50, 1, 56, 56) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, :, :28, :28], items)
    assert torch.equal(ds.images[:, :, 28:, 28:], dimg[ds.digit_index])
    assert (ds.images[:, :, :28, 28:] == 0).all() and (ds.images[:, :, 28:, :28] == 0).all()
    assert torch.equal(dlab[ds.digit_index], ds.digits)
    assert (ds.item_pos == 0).all() and (ds.digit_pos == 28).all()


def test_item_at_given_positions_and_no_digit():
    items, labels = _items(3)
    pos = torch.tensor([[0, 0], [10, 20], [36, 36]])
    ds = FashionDigits.build(items, labels, kind="none", size=64, item_pos=pos)
    for n, (r, c) in enumerate(pos.tolist()):
        assert torch.equal(ds.images[n, :, r:r + 28, c:c + 28], items[n])
        assert ds.images[n].sum() == items[n].sum()  # nothing else on the canvas
    assert (ds.digits == -1).all() and ds.contingency().sum() == 0


def test_paste_takes_the_brighter_pixel_where_strokes_overlap():
    canvas = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    paste(canvas, torch.full((1, 1, 2, 2), 100, dtype=torch.uint8), torch.tensor([[1, 1]]))
    paste(canvas, torch.tensor([[[[50, 200], [0, 0]]]], dtype=torch.uint8), torch.tensor([[1, 1]]))
    assert canvas[0, 0].tolist() == [[0, 0, 0, 0], [0, 100, 200, 0], [0, 100, 100, 0], [0, 0, 0, 0]]


def test_bad_input_is_explained():
    items, labels = _items(4)
    dimg, dlab = _digits()
    with pytest.raises(ValueError, match="kind must be one of"):
        FashionDigits.build(items, labels, dimg, dlab, kind="opposite")
    with pytest.raises(ValueError, match="inside the 40x40 canvas"):
        FashionDigits.build(items, labels, dimg, dlab, size=40, item_pos=(20, 0))
    with pytest.raises(ValueError, match="needs digit_images"):
        FashionDigits.build(items, labels)
    with pytest.raises(ValueError, match="no image of digit"):
        FashionDigits.build(items, labels, dimg[dlab != 3], dlab[dlab != 3], p=1.0, target_class=labels[0].item())
    with pytest.raises(ValueError, match="uint8"):
        FashionDigits.build(items.float(), labels, dimg, dlab)


def test_build_test_sets_is_one_build_per_kind_with_consecutive_seeds():
    items, labels = _items(300)
    dimg, dlab = _digits()
    design = dict(p=0.8, rare=0.05, target_class=2, target_digit=7)
    sets = build_test_sets(items, labels, dimg, dlab, seed=10, **design)
    assert list(sets) == ["correlated", "uncorrelated", "anti"]
    for i, (kind, ds) in enumerate(sets.items()):
        ref = FashionDigits.build(items, labels, dimg, dlab, kind=kind, seed=10 + i, **design)
        assert ds.kind == kind and ds.target_class == 2 and ds.target_digit == 7
        for f in ("images", "labels", "digits", "digit_index"):
            assert torch.equal(getattr(ds, f), getattr(ref, f))
    assert list(build_test_sets(items, labels, dimg, dlab, kinds=("anti",))) == ["anti"]


def test_shortcut_scores_by_hand():
    items, labels = _items(200)
    dimg, dlab = _digits()
    sets = build_test_sets(items, labels, dimg, dlab, kinds=("correlated", "anti"), rare=0.1,
                           target_class=1, target_digit=3)
    anti = sets["anti"]
    # a pure digit-reader: "3 means class 1", otherwise the true label
    reader = torch.where(anti.digits == 3, torch.ones_like(anti.labels), anti.labels)
    s = shortcut_scores({"anti": reader, "correlated": sets["correlated"].labels}, sets)
    assert set(s) == {f"{k}_{m}" for k in ("anti", "correlated") for m in ("acc", "target_recall", "shortcut")}
    carries = (anti.labels != 1) & (anti.digits == 3)
    assert s["anti_shortcut"] == 1.0 and s["anti_target_recall"] == 1.0  # no class-1 canvas carries a 3 in "anti"
    assert s["anti_acc"] == pytest.approx(1 - carries.float().mean().item())
    assert s["correlated_acc"] == s["correlated_target_recall"] == 1.0 and s["correlated_shortcut"] == 0.0
    # no other-class canvas with the target digit: the shortcut rate is undefined
    unc = FashionDigits.build(items[labels == 1], labels[labels == 1], dimg, dlab, kind="uncorrelated",
                              target_class=1, target_digit=3)
    nan = shortcut_scores({"u": unc.labels}, {"u": unc})["u_shortcut"]
    assert nan != nan


def test_random_positions_cover_the_span_and_follow_the_seed():
    pos = random_positions(2000, 28, seed=3)
    assert pos.shape == (2000, 2) and pos.min() == 0 and pos.max() == 28
    assert torch.equal(pos, random_positions(2000, 28, seed=3))
    assert not torch.equal(pos, random_positions(2000, 28, seed=4))
    with pytest.raises(ValueError, match="span"):
        random_positions(5, -1)


def test_accuracy_by_position_is_each_heads_accuracy_at_each_place():
    from course_utils.models.small_vgg import SmallVGG

    torch.manual_seed(0)
    backbone = SmallVGG((4, 4, 8), num_classes=3).eval()
    items = torch.randint(0, 255, (12, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    heads = {"fc": backbone.fc, "other": torch.nn.Linear(8, 3)}
    acc = accuracy_by_position(backbone, heads, items, labels, [0, 14], size=42, mean=0.3, std=0.4)
    assert set(acc) == {"fc", "other"} and acc["fc"].shape == (2, 2)
    canvas = FashionDigits.build(items, labels, kind="none", size=42, item_pos=(14, 0))
    x = (canvas.images.float() / 255 - 0.3) / 0.4
    with torch.no_grad():
        expected = (backbone(x).argmax(1) == labels).float().mean().item() * 100
    assert acc["fc"][1, 0] == pytest.approx(expected)
