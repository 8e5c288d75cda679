"""Distorted Fashion-MNIST and the transformation-pair data set, warped by ``course_utils.augment.warp``.

Every transformation here is affine, so a whole batch is warped by one call with one 2x3 matrix per
image (no per-image Python work), built by ``course_utils.augment.affine_theta``: a matrix
``theta = [M | -M t]`` says that output pixel ``p`` shows input pixel ``M (p - t)``. Pixels that come
from outside the image read 0, which is Fashion-MNIST's background.

Two data sets are built from real images:

- **distorted Fashion-MNIST** (``distort``): each image rotated, scaled and moved at random, with one
  ``strength`` knob (0 = clean); ``distortion_params`` recomputes each image's angle, zoom and shift;
- **transformation pairs** (``make_pairs``): an image and a changed copy, with one of seven labels
  (``PAIR_LABELS``): unchanged, displacement, rotation, scaling, and the three pairs of changes.
  Rotation follows the assignment this chapter comes from: rotate by 15-30 degrees, cut out the largest
  axis-aligned square that has no empty corners, and resize it back to the full size.

Both are deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from course_utils.augment import affine_theta, warp

__all__ = ["PAIR_LABELS", "PAIR_CHANGES", "crop_zoom", "Distortion", "distort", "distortion_params", "PairChanges",
           "pair_theta", "make_pairs"]

PAIR_LABELS = ("unchanged", "displacement", "rotation", "scaling",
               "displacement+rotation", "displacement+scaling", "rotation+scaling")
#: number of changes of each label: 0 for unchanged, 1 for the single changes, 2 for the combinations
PAIR_CHANGES = (0, 1, 1, 1, 2, 2, 2)
_HAS = {  # label -> (displaced, rotated, scaled)
    0: (False, False, False), 1: (True, False, False), 2: (False, True, False), 3: (False, False, True),
    4: (True, True, False), 5: (True, False, True), 6: (False, True, True),
}


def crop_zoom(angle: torch.Tensor) -> torch.Tensor:
    """Magnification that keeps only the largest axis-aligned square inside a square rotated by ``angle``.

    A square of half-side 1 rotated by ``a`` contains the axis-aligned square of half-side
    ``1 / (|cos a| + |sin a|)``; resizing that back to full size magnifies by ``|cos a| + |sin a|``.
    """
    return angle.cos().abs() + angle.sin().abs()


@dataclass(frozen=True)
class Distortion:
    """Random rotation, scaling and displacement whose size grows with ``strength`` (0 = none).

    At strength ``s``: rotation uniform in ``±max_degrees * s``, magnification ``2 ** u`` with ``u`` uniform in
    ``±max_log2_zoom * s``, displacement uniform in ``±max_shift * s`` of the image size on each axis.
    Callable as a batched augmentation, ``Distortion(1.0)(x, generator)`` (see ``course_utils.augment``).
    """

    strength: float = 1.0
    max_degrees: float = 25.0
    max_log2_zoom: float = 0.25
    max_shift: float = 0.1

    def __post_init__(self):
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0 (0 = no distortion), got {self.strength}")

    def params(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` random distortions drawn from ``g``: ``angle`` ``(n,)`` in radians, ``zoom`` ``(n,)`` (> 1 magnifies)
        and ``shift`` ``(n, 2)`` = (dx, dy) in normalised units (2 = the image's width), all float64."""
        u = torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1]
        s = self.strength
        return {"angle": u[:, 0] * math.radians(self.max_degrees) * s,
                "zoom": torch.exp2(u[:, 1] * self.max_log2_zoom * s),
                "shift": u[:, 2:] * 2 * self.max_shift * s}

    def theta(self, n: int, g: torch.Generator) -> torch.Tensor:
        """``(n, 2, 3)`` random matrices drawn from ``g`` (``affine_theta`` of ``params``)."""
        return affine_theta(**self.params(n, g)).float()

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return warp(x, self.theta(len(x), g)) if self.strength > 0 else x


def distort(images: torch.Tensor, strength: float, seed: int, batch_size: int = 10_000) -> torch.Tensor:
    """A fixed, seeded distorted copy of ``images`` ``(N, C, H, W)`` (same dtype); ``strength=0`` returns them unchanged."""
    d = Distortion(strength)
    if strength == 0:
        return images.clone()
    g = torch.Generator().manual_seed(seed)
    theta = d.theta(len(images), g)  # drawn at once, so the result does not depend on batch_size
    return torch.cat([warp(images[i:i + batch_size], theta[i:i + batch_size])
                      for i in range(0, len(images), batch_size)])


def distortion_params(n: int, strength: float, seed: int) -> dict[str, torch.Tensor]:
    """The angle, zoom and shift (``Distortion.params``) that ``distort(images, strength, seed)`` applied to each of
    its ``n`` images, recomputed from the seed: output pixel ``p`` of image ``i`` shows input pixel
    ``R(angle_i) (p - shift_i) / zoom_i`` (``course_utils.augment.affine_theta``)."""
    if strength <= 0:
        raise ValueError(f"strength must be > 0 (strength 0 leaves the images unchanged), got {strength}")
    return Distortion(strength).params(n, torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class PairChanges:
    """Ranges of the changes of ``make_pairs``: rotation in degrees (either sign), magnification of the scaling
    change, displacement length in pixels (random direction)."""

    degrees: tuple[float, float] = (15.0, 30.0)
    zoom: tuple[float, float] = (1.15, 1.4)
    shift_pixels: tuple[float, float] = (2.0, 4.0)


def pair_theta(labels: torch.Tensor, size: int, g: torch.Generator, changes: PairChanges = PairChanges()) -> torch.Tensor:
    """``(N, 2, 3)`` matrices that turn an image into its changed copy for each label of ``PAIR_LABELS``.

    Rotation = rotate, then magnify by ``crop_zoom`` (the largest square without empty corners, resized back);
    scaling = magnify by a random factor (the centre crop of a zoomed image); displacement = move by a random
    vector. A combination applies rotation/scaling first, then the displacement.
    """
    n = len(labels)
    u = torch.rand(n, 4, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    has = torch.tensor([_HAS[int(k)] for k in range(len(PAIR_LABELS))])[labels]  # (N, 3) bool
    lo, hi = (math.radians(d) for d in changes.degrees)
    angle = torch.where(has[:, 1], sign * (lo + (hi - lo) * u[:, 0]), torch.zeros(n, dtype=torch.float64))
    zoom = torch.where(has[:, 2], changes.zoom[0] + (changes.zoom[1] - changes.zoom[0]) * u[:, 1], torch.ones(n, dtype=torch.float64))
    zoom = zoom * crop_zoom(angle)  # 1 when there is no rotation
    length = changes.shift_pixels[0] + (changes.shift_pixels[1] - changes.shift_pixels[0]) * u[:, 2]
    direction = 2 * math.pi * u[:, 3]
    shift = torch.stack([direction.cos(), direction.sin()], 1) * (length * 2 / size)[:, None]
    shift = torch.where(has[:, :1], shift, torch.zeros_like(shift))
    return affine_theta(angle, zoom, shift).float()


def make_pairs(images: torch.Tensor, per_label: int, seed: int,
               changes: PairChanges = PairChanges()) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformation-pair data set: ``per_label`` pairs of each of the 7 labels, in a seeded random order.

    Args:
        images: ``(N, 1, H, W)`` uint8 source images (e.g. Fashion-MNIST); ``7 * per_label`` of them are drawn
            without replacement when there are enough, else with replacement.
        per_label: pairs per label (the labels are exactly balanced).

    Returns:
        ``pairs`` ``(7 * per_label, 2, H, W)`` uint8 (channel 0 the original, channel 1 the changed copy) and
        ``labels`` ``(7 * per_label,)`` int64, indices into ``PAIR_LABELS``. An unchanged pair holds two identical images.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be grey-scale (N, 1, H, W), got shape {tuple(images.shape)}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square for the rotation crop, got {images.shape[2]}x{images.shape[3]}")
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1, got {per_label}")
    g = torch.Generator().manual_seed(seed)
    n = per_label * len(PAIR_LABELS)
    labels = torch.arange(len(PAIR_LABELS)).repeat_interleave(per_label)
    labels = labels[torch.randperm(n, generator=g)]
    source = torch.randperm(len(images), generator=g)[:n] if n <= len(images) else \
        torch.randint(len(images), (n,), generator=g)
    originals = images[source]
    theta = pair_theta(labels, images.shape[-1], g, changes)
    changed = warp(originals, theta)
    changed[labels == 0] = originals[labels == 0]  # unchanged means identical, not resampled
    return torch.cat([originals, changed], 1), labels
