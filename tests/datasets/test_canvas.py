"""FashionCanvas: determinism, label range, occlusion, class skew, pixels equal to the resized source; the one paste."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.datasets.canvas import DEFAULT_CLASS_FREQ, FashionCanvas, paste, pixel_counts


def _sources(per_class=6, seed=0):
    """Synthetic uint8 'garments': a random bright blob with a dark rim, per_class images of each of 10 classes."""
    g = torch.Generator().manual_seed(seed)
    n = 10 * per_class
    x = torch.randint(60, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    x[:, :, :4], x[:, :, -4:], x[:, :, :, :4], x[:, :, :, -4:] = 0, 0, 0, 0  # background border, as Fashion-MNIST
    x[:, :, 12:14, 12:14] = 10  # a dark spot inside: below the threshold, so not the item's pixel
    return x, torch.arange(n) % 10


@pytest.fixture(scope="module")
def gen():
    return FashionCanvas(*_sources(), size=48, item_size=(12, 30))


def test_deterministic_per_seed(gen):
    a, b, c = gen.generate(50, seed=3), gen.generate(50, seed=3), gen.generate(50, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert all(torch.equal(u, v) for u, v in zip(a.items, b.items))
    assert not torch.equal(a.masks, c.masks)


def test_shapes_dtypes_and_label_range(gen):
    batch = gen.generate(40, seed=0)
    assert batch.images.shape == (40, 1, 48, 48) and batch.images.dtype == torch.float32
    assert batch.masks.shape == (40, 48, 48) and batch.masks.dtype == torch.int64
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert 0 <= batch.masks.min() and batch.masks.max() <= 10
    items = batch.items
    present = items.size > 0
    n_items = present.sum(1)
    assert ((1 <= n_items) & (n_items <= 4)).all()
    assert (present[:, :-1] >= present[:, 1:]).all()  # items fill the first slots
    assert ((items.top[present] >= 0) & (items.top[present] + items.size[present] <= 48)).all()  # inside
    assert ((items.left[present] >= 0) & (items.left[present] + items.size[present] <= 48)).all()
    assert (items.cls[~present] == -1).all() and (items.source[~present] == -1).all()
    # every labelled pixel is a pixel of an item of that class; background pixels are 0 in the image
    assert (batch.images[:, 0][batch.masks == 0] == 0).all()
    for i in range(40):
        assert set(batch.masks[i].unique().tolist()) - {0} <= set((items.cls[i][present[i]] + 1).tolist())


def _resized(gen, source, size):
    return F.interpolate(gen.images[source][None, None].float() / 255, size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0]


def test_last_item_pixels_equal_resized_source_and_win_occlusion(gen):
    batch = gen.generate(60, seed=1)
    items = batch.items
    checked = 0
    for i in range(60):
        k = int((items.size[i] > 0).sum()) - 1  # the last item of canvas i, pasted on top
        t, left, s = int(items.top[i, k]), int(items.left[i, k]), int(items.size[i, k])
        patch = _resized(gen, int(items.source[i, k]), s)
        fg = patch > gen.threshold
        box_img = batch.images[i, 0, t:t + s, left:left + s]
        box_mask = batch.masks[i, t:t + s, left:left + s]
        assert torch.equal(box_img[fg], patch[fg])  # exactly F.interpolate's values
        assert (box_mask[fg] == items.cls[i, k] + 1).all()  # the last item's foreground wins
        if k == 0:  # a lone item: its sub-threshold pixels (the dark spot, the border) stay background
            assert (box_mask[~fg] == 0).all() and (box_img[~fg] == 0).all()
        checked += k > 0
    assert checked > 20  # many canvases had an occluded earlier item


def test_earlier_item_shows_only_where_not_covered():
    """Two items forced onto the same place: the second covers the first wherever it is foreground."""
    x, y = _sources()
    gen = FashionCanvas(x, y, size=32, items=(2, 2), item_size=(28, 28))
    layout = gen.layout(1, seed=0)
    layout = layout._replace(top=torch.tensor([[2, 2]]), left=torch.tensor([[2, 2]]),
                             source=torch.tensor([[0, 1]]), cls=torch.tensor([[0, 1]]))
    batch = gen.render(layout)
    first, second = x[0, 0].float() / 255, x[1, 0].float() / 255  # 28 -> 28: interpolation is the identity
    box = batch.masks[0, 2:30, 2:30]
    assert (box[second > 0.1] == 2).all()
    assert (box[(second <= 0.1) & (first > 0.1)] == 1).all()
    assert (box[(second <= 0.1) & (first <= 0.1)] == 0).all()
    torch.testing.assert_close(batch.images[0, 0, 2:30, 2:30], torch.where(second > 0.1, second,
                                                                           torch.where(first > 0.1, first, 0.0)))


def test_class_skew_makes_rare_classes_rarer(gen):
    batch = gen.generate(1500, seed=0)
    items = batch.items
    drawn = torch.bincount(items.cls[items.cls >= 0], minlength=10).double()
    freq = torch.tensor(DEFAULT_CLASS_FREQ)
    expected = freq / freq.sum() * drawn.sum()
    assert (drawn - expected).abs().max() < 5 * expected.sqrt().max()  # multinomial counts within ~5 sigma
    counts = pixel_counts(batch.masks).double()
    common, rare = freq.argmax() + 1, freq.argmin() + 1
    assert counts[common] > 10 * counts[rare] > 0  # ~32x more items of the common class
    assert counts[0] == counts.max()  # background dominates
    assert counts.sum() == 1500 * 48 * 48


def test_class_freq_zero_excludes_a_class_and_errors_name_the_fix():
    x, y = _sources()
    freq = [1.0] * 10
    freq[3] = 0.0
    batch = FashionCanvas(x, y, size=48, item_size=(12, 30), class_freq=freq).generate(200, seed=0)
    assert (batch.items.cls != 3).all() and (batch.masks != 4).all()
    with pytest.raises(ValueError, match="no source image"):
        FashionCanvas(x[y != 5], y[y != 5])
    with pytest.raises(ValueError, match="class_freq must be 10"):
        FashionCanvas(x, y, class_freq=[1.0] * 9)
    with pytest.raises(ValueError, match="uint8"):
        FashionCanvas(x.float(), y)
    with pytest.raises(ValueError, match="item_size"):
        FashionCanvas(x, y, size=32, item_size=(20, 40))
    with pytest.raises(ValueError, match="labels must be in 0..10"):
        pixel_counts(torch.tensor([0, 11]))
    assert pixel_counts(torch.tensor([[0, 2], [2, 10]])).tolist() == [1, 0, 2] + [0] * 7 + [1]


def test_groups_merge_classes_into_one_label_each():
    from course_utils.datasets.canvas import GARMENT_GROUPS, zipf_frequencies

    x, y = _sources()
    gen = FashionCanvas(x, y, size=48, item_size=(12, 30), groups=GARMENT_GROUPS)
    assert gen.class_names == ("background", "top", "footwear", "dress", "bag", "trouser") and gen.num_classes == 6
    batch = gen.generate(600, seed=0)
    assert 0 <= batch.masks.min() and batch.masks.max() <= 5
    items = batch.items
    present = items.cls >= 0
    # every item's group is the group of its source image's Fashion-MNIST class
    for g, members in enumerate(GARMENT_GROUPS.values()):
        src_classes = set(y[items.source[present & (items.cls == g)]].tolist())
        assert src_classes and src_classes <= set(members)
    drawn = torch.bincount(items.cls[present], minlength=5).double()
    freq = torch.tensor(zipf_frequencies(5))
    expected = freq / freq.sum() * drawn.sum()
    assert (drawn - expected).abs().max() < 5 * expected.sqrt().max()
    # a group of one class draws exactly the images of that class: the pixels equal the ungrouped canvases'
    one = FashionCanvas(x, y, size=48, item_size=(12, 30), groups={"trouser": (1,)}).generate(20, seed=1)
    assert set(y[one.items.source[one.items.source >= 0]].tolist()) == {1}
    assert set(one.masks.unique().tolist()) <= {0, 1}


def test_groups_errors_name_the_fix():
    x, y = _sources()
    with pytest.raises(ValueError, match="two groups"):
        FashionCanvas(x, y, groups={"a": (0, 1), "b": (1,)})
    with pytest.raises(ValueError, match="not a Fashion-MNIST class"):
        FashionCanvas(x, y, groups={"a": (10,)})
    with pytest.raises(ValueError, match="one per group"):
        FashionCanvas(x, y, groups={"a": (0,), "b": (1,)}, class_freq=[1.0] * 10)
    with pytest.raises(ValueError, match="at least one group"):
        FashionCanvas(x, y, groups={})


def test_paste_covers_where_told_into_chosen_canvases():
    canvas = torch.full((3, 1, 5, 5), 0.5)
    patches = torch.tensor([[[[0.125, 0.875], [0.25, 0.75]]]]).expand(2, 1, 2, 2)
    cover = torch.tensor([[[True, False], [False, True]]]).expand(2, 2, 2)
    paste(canvas, patches, torch.tensor([[0, 0], [3, 2]]), cover=cover, rows=torch.tensor([2, 0]))
    assert torch.equal(canvas[1], torch.full((1, 5, 5), 0.5))  # no patch for canvas 1
    assert canvas[2, 0, :2, :2].tolist() == [[0.125, 0.5], [0.5, 0.75]]  # replaced only where covered, even darker
    assert canvas[0, 0, 3:, 2:4].tolist() == [[0.125, 0.5], [0.5, 0.75]]
    assert (canvas[0, 0, :3] == 0.5).all() and (canvas[2, 0, 2:] == 0.5).all()


@pytest.mark.parametrize("same_place", [True, False])
def test_paste_max_is_the_same_on_the_fast_and_the_general_path(same_place):
    g = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, 256, (6, 2, 9, 9), generator=g, dtype=torch.uint8)
    patches = torch.randint(0, 256, (6, 2, 4, 3), generator=g, dtype=torch.uint8)
    pos = torch.tensor([[2, 5]] * 6) if same_place else torch.randint(0, 6, (6, 2), generator=g)
    expected = canvas.clone()
    for i, (r, c) in enumerate(pos.tolist()):
        expected[i, :, r:r + 4, c:c + 3] = torch.maximum(expected[i, :, r:r + 4, c:c + 3], patches[i])
    assert torch.equal(paste(canvas, patches, pos), expected)
    with pytest.raises(ValueError, match="inside the 9x9 canvas"):
        paste(canvas, patches, pos + 6)
    with pytest.raises(ValueError, match="one patch per canvas"):
        paste(canvas[:3], patches, pos)
