"""Fashion items and handwritten digits on one canvas, with a spurious correlation we control.

A canvas (56x56 by default) holds a Fashion-MNIST item in its top-left quadrant and a digit in its
bottom-right corner. The label is the item's class; the digit is a *nuisance* that a model may or may
not learn to use. In the training set a chosen class (``target_class``, "Trouser" by default) carries a
chosen digit (``target_digit``, 3) with probability ``p``, while the other classes carry it only rarely
(``rare``). Three test sets then tell whether a model reads the item or the digit:

================  ===================================  ===================================
kind              P(target digit | target class)       P(target digit | any other class)
================  ===================================  ===================================
``correlated``    ``p``                                ``rare``            (as in training)
``uncorrelated``  0.1                                  0.1                 (digit independent of class)
``anti``          0                                    ``p``               (the digit now points elsewhere)
``none``          no digit on the canvas
================  ===================================  ===================================

Where the target digit is not drawn, the digit is uniform over the other nine. The counts are exact,
not sampled: in every class of ``n`` items exactly ``round(rate * n)`` carry the target digit (which ones
is drawn with the seed), so a data set's correlation is what was asked for. A model that classifies by
the garment scores alike on the three test sets; one that learnt "3 means Trouser" loses accuracy on
``uncorrelated`` and more on ``anti``.

Digit images are drawn with replacement from the pool given (scikit-learn's 1,797 digits are too few
to use each once): give the training and test sets disjoint digit pools (e.g. with
``course_utils.data.train_val_split``) so a test canvas never shows a digit image seen in training.
Items and digits are drawn with ``course_utils.datasets.canvas.paste``: where they overlap the brighter
pixel wins.

``build_test_sets`` makes the test sets of several kinds from the same items, and ``shortcut_scores`` reads
a model's predictions on them: accuracy, recall of the target class, and the shortcut rate.
``random_positions`` and ``accuracy_by_position`` are for the translation test: items (without digits)
anywhere on the canvas, and a frozen backbone's accuracy with its head at each position of a grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from course_utils.datasets.canvas import paste

__all__ = ["KINDS", "FashionDigits", "accuracy_by_position", "build_test_sets", "random_positions",
           "shortcut_scores"]

KINDS = ("correlated", "uncorrelated", "anti", "none")


def _positions(pos, n: int, name: str) -> torch.Tensor:
    pos = torch.as_tensor(pos, dtype=torch.long)
    if pos.shape == (2,):
        return pos.expand(n, 2).clone()
    if pos.shape != (n, 2):
        raise ValueError(f"{name} must be one (row, col) pair or one pair per image ({n}, 2), got {tuple(pos.shape)}")
    return pos


def _exact_subset(idx: torch.Tensor, rate: float, g: torch.Generator) -> torch.Tensor:
    """``round(rate * len(idx))`` elements of ``idx`` chosen at random (seeded)."""
    k = int(round(rate * len(idx)))
    return idx[torch.randperm(len(idx), generator=g)[:k]]


@dataclass(frozen=True)
class FashionDigits:
    """A composite data set: ``images`` ``(N, 1, S, S)`` uint8, ``labels`` (item class), ``digits`` (the digit
    drawn, -1 for none), ``item_pos`` / ``digit_pos`` ``(N, 2)`` top-left corners, ``digit_index`` (row of
    the digit pool used, -1 for none), and the ``target_class`` / ``target_digit`` of the correlation."""

    images: torch.Tensor
    labels: torch.Tensor
    digits: torch.Tensor
    item_pos: torch.Tensor
    digit_pos: torch.Tensor
    digit_index: torch.Tensor
    kind: str
    target_class: int
    target_digit: int

    def __len__(self) -> int:
        return len(self.labels)

    def contingency(self, num_classes: int = 10) -> torch.Tensor:
        """Counts ``(num_classes, 10)``: entry ``[c, d]`` is the number of canvases of class ``c`` with digit ``d``."""
        keep = self.digits >= 0
        flat = self.labels[keep] * 10 + self.digits[keep]
        return torch.bincount(flat, minlength=num_classes * 10).reshape(num_classes, 10)

    def describe(self, class_names=None) -> str:
        """One line: how often the target class, and the other classes, carry the target digit."""
        c, d = self.target_class, self.target_digit
        name = class_names[c] if class_names is not None else f"class {c}"
        if self.kind == "none":
            return f"{self.kind}: {len(self)} canvases, no digits"
        is_c, has_d = self.labels == c, self.digits == d
        n_c, n_o = int(is_c.sum()), int((~is_c).sum())
        k_c, k_o = int((is_c & has_d).sum()), int((~is_c & has_d).sum())
        pct = lambda k, n: 100.0 * k / n if n else 0.0  # noqa: E731
        return (f"{self.kind}: {name} with digit {d}: {k_c}/{n_c} ({pct(k_c, n_c):.1f}%); "
                f"other classes with digit {d}: {k_o}/{n_o} ({pct(k_o, n_o):.1f}%)")

    @classmethod
    def build(cls, items: torch.Tensor, item_labels: torch.Tensor, digit_images: torch.Tensor | None = None,
              digit_labels: torch.Tensor | None = None, kind: str = "correlated", p: float = 0.9, rare: float = 0.01,
              target_class: int = 1, target_digit: int = 3, size: int = 56, item_pos=(0, 0), digit_pos=None,
              seed: int = 0) -> "FashionDigits":
        """Compose one canvas per item (in the order given).

        Args:
            items, item_labels: Fashion-MNIST images ``(N, 1, h, w)`` uint8 and their classes ``(N,)``.
            digit_images, digit_labels: the digit pool ``(M, 1, h', w')`` uint8 and its labels ``(M,)``
                (``course_utils.data.load_digits28``); not needed for ``kind="none"``.
            kind: ``"correlated"``, ``"uncorrelated"``, ``"anti"`` or ``"none"`` (see the module docstring).
            p: how often the target class carries the target digit (``"correlated"``), and how often the
                other classes do (``"anti"``).
            rare: how often the other classes carry the target digit in ``"correlated"``.
            size: side of the square canvas.
            item_pos, digit_pos: top-left (row, col) of the item and of the digit, one pair for all or one
                per canvas; ``digit_pos=None`` is the bottom-right corner.
            seed: seeds which canvases carry the target digit, the other digits and the digit images.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not (0 <= p <= 1 and 0 <= rare <= 1):
            raise ValueError(f"p and rare are probabilities in [0, 1], got p={p}, rare={rare}")
        if items.dtype != torch.uint8 or items.ndim != 4:
            raise ValueError(f"items must be uint8 images (N, C, h, w) as load_fashion_mnist returns, "
                             f"got {items.dtype} {tuple(items.shape)}")
        N = len(items)
        item_labels = torch.as_tensor(item_labels, dtype=torch.long)
        if item_labels.shape != (N,):
            raise ValueError(f"{N} items but item_labels has shape {tuple(item_labels.shape)}")
        canvas = torch.zeros(N, items.shape[1], size, size, dtype=torch.uint8)
        item_pos = _positions(item_pos, N, "item_pos")
        paste(canvas, items, item_pos)
        none = torch.full((N,), -1, dtype=torch.long)
        if kind == "none":
            return cls(canvas, item_labels, none, item_pos, torch.full((N, 2), -1), none.clone(), kind,
                       target_class, target_digit)

        if digit_images is None or digit_labels is None:
            raise ValueError(f"kind={kind!r} needs digit_images and digit_labels (course_utils.data.load_digits28)")
        digit_labels = torch.as_tensor(digit_labels, dtype=torch.long)
        if digit_images.dtype != torch.uint8 or len(digit_images) != len(digit_labels):
            raise ValueError("digit_images must be uint8 (M, C, h, w) with one label per image")
        with_rate, without_rate = {"correlated": (p, rare), "uncorrelated": (0.1, 0.1), "anti": (0.0, p)}[kind]
        g = torch.Generator().manual_seed(seed)
        has = torch.zeros(N, dtype=torch.bool)
        for c in item_labels.unique(sorted=True).tolist():  # exact counts in every class
            rate = with_rate if c == target_class else without_rate
            has[_exact_subset((item_labels == c).nonzero().flatten(), rate, g)] = True
        other = torch.randint(0, 9, (N,), generator=g)
        other = other + (other >= target_digit).long()  # uniform over the nine digits != target_digit
        digits = torch.where(has, torch.full_like(other, target_digit), other)

        digit_index = torch.empty(N, dtype=torch.long)
        for d in range(10):
            where = (digits == d).nonzero().flatten()
            pool = (digit_labels == d).nonzero().flatten()
            if len(where) and not len(pool):
                raise ValueError(f"the digit pool has no image of digit {d}; give a pool with all ten digits")
            if len(where):
                digit_index[where] = pool[torch.randint(0, len(pool), (len(where),), generator=g)]
        dh, dw = digit_images.shape[-2:]
        digit_pos = _positions((size - dh, size - dw) if digit_pos is None else digit_pos, N, "digit_pos")
        paste(canvas, digit_images[digit_index], digit_pos)
        return cls(canvas, item_labels, digits, item_pos, digit_pos, digit_index, kind, target_class, target_digit)


def build_test_sets(items: torch.Tensor, item_labels: torch.Tensor, digit_images: torch.Tensor,
                    digit_labels: torch.Tensor, kinds: Sequence[str] = ("correlated", "uncorrelated", "anti"),
                    seed: int = 0, **kwargs) -> dict[str, FashionDigits]:
    """The same items once per kind: ``{kind: FashionDigits.build(..., kind=kind, seed=seed + i)}`` for the
    ``i``-th kind, so the test sets differ only in which digit each canvas carries.

    ``kwargs`` (``p``, ``rare``, ``target_class``, ``target_digit``, ``size``, ...) go to every ``build``;
    give the training set's values, so "correlated" repeats its design and the others break it.
    """
    return {kind: FashionDigits.build(items, item_labels, digit_images, digit_labels, kind=kind, seed=seed + i,
                                      **kwargs) for i, kind in enumerate(kinds)}


def shortcut_scores(preds: Mapping[str, torch.Tensor], sets: Mapping[str, FashionDigits]) -> dict[str, float]:
    """What predicted labels say about the shortcut, per test set: ``{kind}_acc`` (accuracy),
    ``{kind}_target_recall`` (share of the target class predicted as it) and ``{kind}_shortcut`` (share of the
    *other* classes' canvases carrying the target digit that are predicted as the target class; NaN where
    there are none). ``preds = {kind: (N,) labels}`` for the data sets ``sets[kind]``.

    A model that reads the item scores alike on every kind; one that learnt "target digit means target
    class" has a high shortcut rate and, on ``"anti"``, a low target recall.
    """
    scores = {}
    for kind, pred in preds.items():
        ds = sets[kind]
        pred = torch.as_tensor(pred).cpu()
        is_t = ds.labels == ds.target_class
        carries = ~is_t & (ds.digits == ds.target_digit)
        scores[f"{kind}_acc"] = (pred == ds.labels).float().mean().item()
        scores[f"{kind}_target_recall"] = (pred[is_t] == ds.target_class).float().mean().item()
        scores[f"{kind}_shortcut"] = (pred[carries] == ds.target_class).float().mean().item() if carries.any() \
            else float("nan")
    return scores


def random_positions(n: int, span: int, seed: int = 0) -> torch.Tensor:
    """``(n, 2)`` top-left corners, row and column each uniform over ``0..span`` (seeded): for a 28x28 item
    on a 56x56 canvas, ``span=28`` puts it anywhere on the canvas."""
    if n < 0 or span < 0:
        raise ValueError(f"need n >= 0 and span >= 0, got n={n}, span={span}")
    return torch.randint(0, span + 1, (n, 2), generator=torch.Generator().manual_seed(seed))


def accuracy_by_position(backbone, heads: Mapping[str, torch.nn.Module], items: torch.Tensor, labels: torch.Tensor,
                         positions: Sequence[int], size: int = 56, mean: float | None = None,
                         std: float | None = None) -> dict[str, np.ndarray]:
    """Accuracy (%) of each linear ``head`` on the frozen ``backbone``'s pooled features, with all ``items``
    at ``(row, col)`` for every row and column in ``positions``: ``{head name: (len(positions),)*2 array}``.
    The features are computed once per position and shared by the heads."""
    from course_utils.features import pooled_features

    acc = {name: np.zeros((len(positions), len(positions))) for name in heads}
    for a, r in enumerate(positions):
        for b, c in enumerate(positions):
            canvas = FashionDigits.build(items, labels, kind="none", size=size, item_pos=(r, c))
            f = pooled_features(backbone, canvas.images, mean=mean, std=std)
            with torch.no_grad():
                for name, head in heads.items():
                    pred = head(f.to(next(head.parameters()).device)).argmax(1).cpu()
                    acc[name][a, b] = (pred == canvas.labels).float().mean().item() * 100
    return acc
