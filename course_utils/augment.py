"""BYOL's image augmentations as batched tensor operations, adapted to grey-scale images.

Self-supervised methods learn what stays the same across two random *views* of an image, so the
augmentations define what the representation ignores. BYOL (Grill et al. 2020, appendix B) takes
SimCLR's: random resized crop, horizontal flip, colour jitter, grey-scale conversion, Gaussian blur
(and solarisation). On one-channel images, colour jitter reduces to brightness and contrast (saturation
and hue do not exist) and grey-scale conversion does nothing, so they are left out.

Each class is an augmentation ``aug(x, generator) -> x`` on a float batch ``(B, C, H, W)`` in [0, 1]
(the convention of ``course_utils.loader``): every random number of a batch is drawn at once from
the generator, so a seed fixes the result, and no Python loop runs over images. Every output stays
in [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from course_utils.loader import Augment, Compose, RandomHorizontalFlip


def _chance(p: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    """``(n,)`` booleans, each True with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], got {p}")
    return (torch.rand(n, generator=g) < p).to(device)


def crop_boxes_to_theta(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``(B, 4)`` as fractions ``(top, left, height, width)`` of the image -> ``affine_grid`` matrices ``(B, 2, 3)``.

    ``affine_grid`` maps output coordinates in [-1, 1] to input coordinates; a box of width ``w``
    (fraction) starting at ``left`` covers ``[2 left - 1, 2 (left + w) - 1]``, a scale ``w`` around its centre.
    """
    top, left, h, w = boxes.unbind(1)
    zero = torch.zeros_like(w)
    cx, cy = 2 * left + w - 1, 2 * top + h - 1
    return torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop box ``boxes[i]`` (fractions ``top, left, height, width``) of image ``i`` and resize it to ``(H, W)``, bilinearly."""
    theta = crop_boxes_to_theta(boxes.to(x))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class RandomResizedCrop:
    """A random box of ``scale`` times the area and aspect ratio in ``ratio`` (log-uniform), resized to the input size.

    As ``torchvision.transforms.RandomResizedCrop``, but in one batched draw: a box that would not
    fit is shrunk to fit (torchvision redraws up to 10 times and then falls back to a centre crop).
    """

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 p: float = 1.0):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1 (fractions of the area), got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale, self.ratio, self.p = scale, ratio, p

    def boxes(self, n: int, g: torch.Generator) -> torch.Tensor:
        """``(n, 4)`` random boxes ``(top, left, height, width)`` as fractions of the image."""
        u = torch.rand(n, 4, generator=g)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[:, 1]
        aspect = torch.exp(log_r)  # width / height
        w = torch.sqrt(area * aspect).clamp(max=1.0)
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        return torch.stack([(1 - h) * u[:, 2], (1 - w) * u[:, 3], h, w], 1)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B = x.shape[0]
        boxes = self.boxes(B, g)
        apply = _chance(self.p, B, g, "cpu")
        if apply.all():
            return resized_crop(x, boxes)
        if not apply.any():
            return x
        out = x.clone()  # images not chosen stay exactly as they are
        out[apply.to(x.device)] = resized_crop(x[apply.to(x.device)], boxes[apply])
        return out


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply image ``i`` by ``factor[i]`` and clip to [0, 1] (as ``torchvision``'s ``adjust_brightness``)."""
    return (x * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend image ``i`` with its mean grey level: ``f x + (1 - f) mean``, clipped (as ``torchvision``'s ``adjust_contrast``).

    For one channel the grey level is the pixel itself; for three, torchvision's luma weights.
    """
    if x.shape[1] == 3:
        grey = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    elif x.shape[1] == 1:
        grey = x
    else:
        raise ValueError(f"adjust_contrast needs 1 or 3 channels, got {x.shape[1]}")
    mean = grey.mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0, 1)


class BrightnessContrast:
    """Colour jitter for grey-scale images: brightness and contrast factors uniform in ``[1 - s, 1 + s]``,
    applied in a random order per image, all with probability ``p`` (``RandomApply([ColorJitter(...)], p)``)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8):
        if brightness < 0 or contrast < 0:
            raise ValueError(f"brightness and contrast must be >= 0, got {brightness}, {contrast}")
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B = x.shape[0]
        u = torch.rand(B, 2, generator=g)
        b = (max(0.0, 1 - self.brightness) + (1 + self.brightness - max(0.0, 1 - self.brightness)) * u[:, 0]).to(x)
        c = (max(0.0, 1 - self.contrast) + (1 + self.contrast - max(0.0, 1 - self.contrast)) * u[:, 1]).to(x)
        brightness_first = _chance(0.5, B, g, x.device).view(-1, 1, 1, 1)
        apply = _chance(self.p, B, g, x.device).view(-1, 1, 1, 1)
        out = torch.where(brightness_first, adjust_contrast(adjust_brightness(x, b), c),
                          adjust_brightness(adjust_contrast(x, c), b))
        return torch.where(apply, out, x)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``(B,)`` standard deviations -> ``(B, kernel_size)`` normalised 1-D Gaussian kernels (torchvision's)."""
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, dtype=sigma.dtype, device=sigma.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Blur image ``i`` with a separable Gaussian of std ``sigma[i]``, reflecting at the borders
    (as ``torchvision.transforms.functional.gaussian_blur``). ``x`` ``(B, C, H, W)``, ``sigma`` ``(B,)``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    B, C, H, W = x.shape
    k = gaussian_kernels(sigma.to(x), kernel_size).repeat_interleave(C, 0)  # (B*C, k): one kernel per channel
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=B * C)  # along the rows (width)
    y = F.conv2d(y, k[:, None, :, None], groups=B * C)  # along the columns (height)
    return y.reshape(B, C, H, W)


class GaussianBlur:
    """Gaussian blur with std uniform in ``sigma`` per image, with probability ``p``."""

    def __init__(self, kernel_size: int = 3, sigma: tuple[float, float] = (1.0, 2.0), p: float = 0.2):
        if not 0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma must satisfy 0 < min <= max, got {sigma}")
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B = x.shape[0]
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * torch.rand(B, generator=g)
        apply = _chance(self.p, B, g, x.device)
        if not apply.any():
            return x
        out = x.clone()
        out[apply] = gaussian_blur(x[apply], sigma[apply.cpu()], self.kernel_size)
        return out


def byol_augment(crop_scale: tuple[float, float] = (0.08, 1.0), crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 jitter: float = 0.8, p_jitter: float = 0.3, p_flip: float = 0.5,
                 blur_sigma: tuple[float, float] = (1.0, 2.0), p_blur: float = 0.2) -> Compose:
    """The pipeline of the course's source report, for grey-scale images, in its order:
    jitter (p 0.3) -> flip (p 0.5) -> 3x3 Gaussian blur (p 0.2) -> random resized crop.

    The report's ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` keeps its brightness and contrast strength 0.8;
    its ``RandomGrayscale(p=0.2)`` has nothing to do on grey-scale images.
    """
    return Compose([BrightnessContrast(jitter, jitter, p=p_jitter), RandomHorizontalFlip(p_flip),
                    GaussianBlur(3, blur_sigma, p=p_blur), RandomResizedCrop(crop_scale, crop_ratio)])


class TwoViews:
    """Two independent augmentations of every image, stacked on the channel axis: ``(B, C, H, W) -> (B, 2C, H, W)``.

    ``augments`` is one augmentation used for both views, or two (BYOL's asymmetric pipelines).
    The output travels through ``TensorLoader`` like an ordinary batch and feeds ``BYOL.forward``.
    """

    def __init__(self, augments: Augment | Sequence[Augment]):
        self.augments = list(augments) if isinstance(augments, (list, tuple)) else [augments, augments]
        if len(self.augments) != 2:
            raise ValueError(f"give one augmentation or two (one per view), got {len(self.augments)}")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return torch.cat([self.augments[0](x, g), self.augments[1](x, g)], 1)
