"""Multi-object canvases of real Fashion-MNIST items with per-pixel labels, for semantic segmentation.

A canvas is a ``size x size`` black image on which 1 to 4 Fashion-MNIST garments are pasted, each
resized to a random side length and placed at a random position fully inside the canvas. Items are
pasted in order, so a later item occludes the earlier ones where they overlap.

Labels. An item *covers* the pixels where its resized intensity (in [0, 1]) exceeds ``threshold``
(default 0.1): Fashion-MNIST's background is exactly 0, and resizing blurs each garment's edge into a
faint halo that the threshold drops (about 1 in 20 of the non-zero source pixels lies below 0.1).
Where an item covers a pixel, the canvas pixel becomes the item's pixel and the label becomes the
item's class + 1; everywhere else both keep what was there before. Label 0 is the background, so
there are 11 classes (``SEGMENTATION_CLASSES``).

Classes or groups. With ``groups`` (e.g. ``GARMENT_GROUPS``), the Fashion-MNIST classes are merged into
named groups and an item's class is its group: the four upper-body garments (T-shirt/top, pullover,
coat, shirt), which even a classifier of whole 28x28 images confuses most often, become one "top",
the three shoes one "footwear". ``class_names`` lists the resulting pixel classes, background first.

Imbalance by construction. Item classes are drawn with skewed frequencies (``DEFAULT_CLASS_FREQ``:
Zipf-like, ``p ∝ 1 / rank^1.5``, so the most common class is ~32x as frequent as the rarest), and the
background covers most pixels, so per-pixel classes are strongly imbalanced (``pixel_counts``).

Everything is drawn from one seeded generator, and the work is batched: the random layout is drawn
for all canvases at once, each (slot, item size) group is resized in one ``F.interpolate`` call and
pasted with one indexing operation, so 6,000 canvases take a few seconds on a CPU.

``paste`` is the one paste of the derived data sets: occluding items here, brighter-pixel-wins strokes
for the fashion + digits canvases of ``course_utils.datasets.spurious``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from course_utils.data import FASHION_CLASSES, load_fashion_mnist

__all__ = ["SEGMENTATION_CLASSES", "NUM_SEGMENTATION_CLASSES", "zipf_frequencies", "FREQUENCY_ORDER",
           "DEFAULT_CLASS_FREQ", "GARMENT_GROUPS", "paste", "ItemLayout", "CanvasBatch", "FashionCanvas", "pixel_counts"]

SEGMENTATION_CLASSES = ("background",) + FASHION_CLASSES
NUM_SEGMENTATION_CLASSES = len(SEGMENTATION_CLASSES)  # 11


def zipf_frequencies(n: int, exponent: float = 1.5) -> tuple[float, ...]:
    """``1 / rank^exponent`` for ranks 1..n: relative frequencies, most frequent first."""
    return tuple(1.0 / (1 + i) ** exponent for i in range(n))


# Frequency rank of each Fashion-MNIST class (most common first) and its relative frequency 1 / rank^1.5.
# The order mixes the look-alike tops (T-shirt, pullover, coat, shirt) between common and rare.
FREQUENCY_ORDER = (0, 1, 7, 2, 8, 5, 3, 9, 4, 6)
DEFAULT_CLASS_FREQ = tuple(zipf_frequencies(len(FASHION_CLASSES))[FREQUENCY_ORDER.index(c)]
                           for c in range(len(FASHION_CLASSES)))

# Fashion-MNIST classes merged into five garment groups, most frequent first (the default frequencies
# of groups are ``zipf_frequencies`` in this order).
GARMENT_GROUPS = {"top": (0, 2, 4, 6), "footwear": (5, 7, 9), "dress": (3,), "bag": (8,), "trouser": (1,)}


def paste(canvas: torch.Tensor, patches: torch.Tensor, positions, cover: torch.Tensor | None = None,
          rows: torch.Tensor | None = None) -> torch.Tensor:
    """Draw patch ``i`` of ``patches`` ``(M, C, h, w)`` onto canvas ``rows[i]`` of ``canvas`` ``(N, C, H, W)``
    (default: canvas ``i``) with its top-left corner at ``positions[i]`` ``(M, 2)`` = (row, col), in place.

    With ``cover=None`` the brighter pixel wins where patch and canvas overlap (max: strokes on black); with
    ``cover`` ``(M, h, w)`` bool the patch replaces the canvas where True (an item occludes what lies below).
    A canvas takes at most one patch per call.
    """
    M, C, h, w = patches.shape
    H, W = canvas.shape[-2:]
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.shape != (M, 2):
        raise ValueError(f"positions must be (N, 2) = ({M}, 2) (row, col) per patch, got {tuple(positions.shape)}")
    if rows is None and len(canvas) != M:
        raise ValueError(f"{M} patches for {len(canvas)} canvases: give one patch per canvas, or rows")
    if (positions < 0).any() or (positions[:, 0] > H - h).any() or (positions[:, 1] > W - w).any():
        raise ValueError(f"a {h}x{w} patch must lie inside the {H}x{W} canvas: rows in [0, {H - h}], cols in "
                         f"[0, {W - w}]; got rows {positions[:, 0].min().item()}..{positions[:, 0].max().item()}, "
                         f"cols {positions[:, 1].min().item()}..{positions[:, 1].max().item()}")
    if rows is None and M and (positions == positions[0]).all():  # every patch at one place: one in-place slice
        r, c = positions[0].tolist()
        region = canvas[:, :, r:r + h, c:c + w]
        if cover is None:
            torch.maximum(region, patches, out=region)
        else:
            region.copy_(torch.where(cover[:, None], patches, region))
        return canvas
    if not canvas.is_contiguous():
        raise ValueError("canvas must be contiguous: paste writes through a flat view of it")
    rows = torch.arange(M) if rows is None else rows
    r = positions[:, :1] + torch.arange(h)  # (M, h) canvas rows
    c = positions[:, 1:] + torch.arange(w)  # (M, w) canvas columns
    flat = (((rows[:, None, None, None] * C + torch.arange(C)[:, None, None]) * H + r[:, None, :, None]) * W
            + c[:, None, None, :]).reshape(-1)  # (M * C * h * w,) one index per pixel: the paste is one scatter
    pixels = canvas.view(-1)
    if cover is None:
        pixels[flat] = torch.maximum(pixels[flat], patches.reshape(-1))
    else:
        on = cover[:, None].expand(M, C, h, w).reshape(-1).nonzero().squeeze(1)  # the covered pixels, found once
        pixels[flat[on]] = patches.reshape(-1)[on]
    return canvas


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, then restore the caller's setting.

    The paste is many small, memory-bound operations; on a busy 2-core machine OpenMP threads mostly wait
    for each other (6,000 canvases: ~2 s on one thread, ~40 s on two, measured under load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ItemLayout(NamedTuple):
    """Where each item went; every field is ``(n, max_items)`` int64, -1 in the slots of absent items."""

    source: torch.Tensor  # index of the source image
    cls: torch.Tensor  # item class: Fashion-MNIST class 0..9, or group index (the pixel label is cls + 1)
    top: torch.Tensor  # row of the item's top-left corner on the canvas
    left: torch.Tensor  # column of the item's top-left corner
    size: torch.Tensor  # side length of the resized item, in pixels


class CanvasBatch(NamedTuple):
    """``images`` ``(n, 1, S, S)`` float32 in [0, 1], ``masks`` ``(n, S, S)`` int64 (0 = background), and the layout."""

    images: torch.Tensor
    masks: torch.Tensor
    items: ItemLayout


class FashionCanvas:
    """Generator of segmentation canvases from a set of source images.

    Args:
        images: ``(N, 1, 28, 28)`` or ``(N, 28, 28)`` uint8 source images (e.g. Fashion-MNIST's train split).
        labels: ``(N,)`` their classes 0..9.
        size: side length ``S`` of the square canvas.
        items: ``(min, max)`` number of items per canvas, drawn uniformly.
        item_size: ``(min, max)`` side length of a resized item in pixels, drawn uniformly (inclusive).
        class_freq: relative frequency of each item class (need not sum to 1): 10 numbers, one per
            Fashion-MNIST class (default ``DEFAULT_CLASS_FREQ``), or one per group with ``groups``
            (default ``zipf_frequencies(len(groups))``).
        threshold: intensity above which a resized item's pixel counts as the item's (foreground).
        groups: ``{name: Fashion-MNIST classes}``, e.g. ``GARMENT_GROUPS``: an item's class is its group's
            index; classes in no group are never drawn.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int = 64, items: tuple[int, int] = (1, 4),
                 item_size: tuple[int, int] = (20, 40), class_freq: Sequence[float] | None = None,
                 threshold: float = 0.1, groups: Mapping[str, Sequence[int]] | None = None):
        images = torch.as_tensor(images)
        if images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, 28, 28) or (N, 1, 28, 28), got {images.dtype} "
                             f"{tuple(images.shape)}; pass the output of load_fashion_mnist")
        labels = torch.as_tensor(labels).long().reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not 1 <= items[0] <= items[1]:
            raise ValueError(f"items must be (min, max) with 1 <= min <= max, got {items}")
        if not 1 <= item_size[0] <= item_size[1] <= size:
            raise ValueError(f"item_size must be (min, max) with 1 <= min <= max <= size={size}, got {item_size}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(FASHION_CLASSES)):
            raise ValueError(f"labels must be in 0..{len(FASHION_CLASSES) - 1}")
        if groups is None:
            names, default_freq = FASHION_CLASSES, DEFAULT_CLASS_FREQ
        else:
            labels, names = _group_labels(labels, groups), tuple(groups)  # -1: in no group, never drawn
            default_freq = zipf_frequencies(len(names))
        num_classes = len(names)
        self.class_names = ("background",) + tuple(names)
        what = "Fashion-MNIST class" if groups is None else "group"
        freq = torch.tensor(default_freq if class_freq is None else class_freq, dtype=torch.float64)
        if freq.shape != (num_classes,) or (freq < 0).any() or freq.sum() <= 0:
            raise ValueError(f"class_freq must be {num_classes} non-negative numbers (one per {what}), not all 0, "
                             f"got {class_freq}")
        counts = torch.bincount(labels[labels >= 0], minlength=num_classes)
        missing = [names[c] for c in range(num_classes) if freq[c] > 0 and counts[c] == 0]
        if missing:
            raise ValueError(f"{missing} have a non-zero frequency but no source image; give them "
                             f"class_freq 0 or pass images of every class")
        self.images, self.labels = images, labels
        self.size, self.items, self.item_size, self.threshold = size, tuple(items), tuple(item_size), threshold
        self.class_freq = freq / freq.sum()
        # Source images grouped by class: class c occupies _order[_start[c] : _start[c] + _count[c]]
        # (images in no group, label -1, sort first and are skipped).
        self._order = torch.argsort(labels, stable=True)
        self._count = counts
        self._start = int((labels < 0).sum()) + torch.cumsum(counts, 0) - counts

    @property
    def num_classes(self) -> int:
        """Pixel classes, background included: 11 without groups, ``len(groups) + 1`` with."""
        return len(self.class_names)

    @classmethod
    def from_fashion_mnist(cls, split: str = "train", **kwargs) -> "FashionCanvas":
        """A generator over the Fashion-MNIST ``split`` (``"train"`` or ``"test"``); ``kwargs`` as the constructor."""
        images, labels = load_fashion_mnist(split)
        return cls(images, labels, **kwargs)

    def layout(self, n: int, seed: int = 0) -> ItemLayout:
        """Draw the random layout of ``n`` canvases: which items, which classes, where and how large."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.items
        count = torch.randint(lo, hi + 1, (n,), generator=g)
        present = torch.arange(hi)[None, :] < count[:, None]  # (n, hi)
        cls = torch.multinomial(self.class_freq, n * hi, replacement=True, generator=g).view(n, hi)
        u = torch.rand(n, hi, generator=g, dtype=torch.float64)  # uniform pick within the class
        within = (u * self._count[cls]).long().minimum(self._count[cls] - 1)
        source = self._order[self._start[cls] + within]
        size = torch.randint(self.item_size[0], self.item_size[1] + 1, (n, hi), generator=g)
        room = self.size - size + 1  # top-left positions that keep the item inside the canvas
        top = (torch.rand(n, hi, generator=g, dtype=torch.float64) * room).long().minimum(room - 1)
        left = (torch.rand(n, hi, generator=g, dtype=torch.float64) * room).long().minimum(room - 1)
        absent = ~present
        return ItemLayout(*(t.masked_fill(absent, -1) for t in (source, cls, top, left, size)))

    def render(self, layout: ItemLayout) -> CanvasBatch:
        """Paste the items of ``layout`` in slot order (later slots occlude earlier ones)."""
        with _one_thread():
            return self._render(layout)

    def _render(self, layout: ItemLayout) -> CanvasBatch:
        n, slots = layout.source.shape
        S = self.size
        images = torch.zeros(n, 1, S, S)
        masks = torch.zeros(n, 1, S, S, dtype=torch.uint8)
        for k in range(slots):
            sizes = layout.size[:, k]
            for s in sizes[sizes > 0].unique().tolist():
                rows = (sizes == s).nonzero().squeeze(1)  # canvases whose slot k holds an item of side s
                src = self.images[layout.source[rows, k]].float().div_(255)[:, None]  # (m, 1, 28, 28)
                patch = F.interpolate(src, size=(s, s), mode="bilinear", align_corners=False)  # (m, 1, s, s)
                fg = patch[:, 0] > self.threshold  # (m, s, s): the pixels the item covers
                at = torch.stack([layout.top[rows, k], layout.left[rows, k]], 1)  # (m, 2) top-left corners
                label = (layout.cls[rows, k] + 1).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, s, s)
                paste(images, patch, at, cover=fg, rows=rows)
                paste(masks, label, at, cover=fg, rows=rows)
        return CanvasBatch(images, masks[:, 0].long(), layout)

    def generate(self, n: int, seed: int = 0) -> CanvasBatch:
        """``n`` canvases, the same for the same ``seed`` (and the same source images and settings)."""
        return self.render(self.layout(n, seed))


def _group_labels(labels: torch.Tensor, groups: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """Fashion-MNIST labels -> group index (-1 for classes in no group); checks that groups are disjoint."""
    if not groups:
        raise ValueError("groups must name at least one group, e.g. GARMENT_GROUPS")
    lookup = torch.full((len(FASHION_CLASSES),), -1, dtype=torch.long)
    for i, (name, members) in enumerate(groups.items()):
        for c in members:
            if not (isinstance(c, int) and 0 <= c < len(FASHION_CLASSES)):
                raise ValueError(f"group {name!r}: {c!r} is not a Fashion-MNIST class 0..{len(FASHION_CLASSES) - 1}")
            if lookup[c] >= 0:
                raise ValueError(f"class {c} ({FASHION_CLASSES[c]}) is in two groups; groups must be disjoint")
            lookup[c] = i
    return lookup[labels]


def pixel_counts(masks: torch.Tensor, num_classes: int = NUM_SEGMENTATION_CLASSES) -> torch.Tensor:
    """``(num_classes,)`` int64: how many pixels of ``masks`` (any shape, labels 0..num_classes-1) have each label."""
    masks = torch.as_tensor(masks)
    if masks.numel() and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(f"mask labels must be in 0..{num_classes - 1}, got {int(masks.min())}..{int(masks.max())}")
    return torch.bincount(masks.reshape(-1).long(), minlength=num_classes)
