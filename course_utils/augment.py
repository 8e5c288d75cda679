"""Batched augmentations as tensor operations, with one affine warp.

An augmentation is any callable ``aug(x, generator) -> x`` on a float batch ``(B, C, H, W)`` (in [0, 1]
as ``TensorLoader`` makes it): every random number of a batch is drawn at once from the generator, so a
seed fixes the result and no Python loop runs over images (as in Keller Jordan's cifar10-airbench).

Geometry. Every geometric change is affine, so it is one ``affine_grid`` + ``grid_sample`` call with one
2x3 matrix per image: ``warp``. ``affine_grid`` maps each *output* position ``p`` (normalised to [-1, 1],
``align_corners=False``) to the input position it reads. ``RandomAffine``, ``RandomResizedCrop`` and the
distortions of ``course_utils.datasets.pairs`` all warp through it.

Photometric. BYOL (Grill et al. 2020, appendix B) takes SimCLR's augmentations: random resized crop,
horizontal flip, colour jitter, grey-scale conversion, Gaussian blur (and solarisation). On one-channel
images colour jitter reduces to brightness and contrast (saturation and hue do not exist) and grey-scale
conversion does nothing, so they are left out; ``byol_augment`` is the pipeline. Every output stays in [0, 1].

Mixing and views. ``mixup_batch`` (Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018)
mixes a batch with a shuffled copy of itself; ``TwoViews`` stacks two augmentations of every image for BYOL.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Augment", "coin_flips", "warp", "affine_theta", "RandomCrop", "RandomHorizontalFlip", "RandomAffine",
           "Compose", "crop_boxes_to_theta", "resized_crop", "RandomResizedCrop", "adjust_brightness", "adjust_contrast",
           "BrightnessContrast", "gaussian_kernels", "gaussian_blur", "GaussianBlur", "byol_augment", "TwoViews",
           "mixup_batch"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def coin_flips(p: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    """``(n,)`` booleans, each True with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], got {p}")
    return (torch.rand(n, generator=g) < p).to(device)


def warp(images: torch.Tensor, theta: torch.Tensor, padding_mode: str = "zeros", fill: float = 0.0) -> torch.Tensor:
    """Warp ``(N, C, H, W)`` images with ``(N, 2, 3)`` ``affine_grid`` matrices, bilinearly; uint8 stays uint8.

    Outside the image reads ``fill`` (``padding_mode="zeros"``) or the nearest border pixel (``"border"``).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if theta.shape != (len(images), 2, 3):
        raise ValueError(f"theta must be ({len(images)}, 2, 3), one matrix per image; got {tuple(theta.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (N, H, W, 2)
    if fill:  # grid_sample pads with 0: shift the values so that the padding reads `fill`
        out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False) + fill
    else:
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if images.dtype == torch.uint8:
        return (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _rotate_zoom(angle: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` matrices ``R(angle) / zoom``: the grid reads the input rotated and magnified by ``zoom``."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def affine_theta(angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` matrices for ``warp``: rotate by ``angle`` (radians), magnify by ``zoom``, then move by
    ``shift`` ``(N, 2)`` = (dx, dy) in normalised units (2 = the image's width).

    Output pixel ``p`` reads input pixel ``M (p - shift)`` with ``M = R(angle) / zoom``.
    """
    M = _rotate_zoom(angle, zoom)  # (N, 2, 2)
    return torch.cat([M, -(M @ shift[:, :, None])], 2)


class RandomCrop:
    """Pad each side by ``padding`` pixels, then crop back to the original size at a random offset per image."""

    def __init__(self, padding: int = 2, fill: float = 0.0):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding, self.fill = padding, fill

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.padding == 0:
            return x
        B, C, H, W = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p), value=self.fill)  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * p + 1, (B,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=g)
        rows = (dy[:, None] + torch.arange(H)).to(x.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(W)).to(x.device)  # (B, W)
        b = torch.arange(B, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], generator=g) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class RandomAffine:
    """Random rotation (degrees), translation (fraction of size) and scale per image."""

    def __init__(self, degrees: float = 0.0, translate: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
                 fill: float = 0.0):
        self.degrees, self.translate, self.scale, self.fill = degrees, translate, scale, fill

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        u = torch.rand(x.shape[0], 4, generator=g)
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        shift = (2 * u[:, 1:3] - 1) * 2 * self.translate  # affine_grid coordinates span [-1, 1]
        zoom = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 3]
        theta = torch.cat([_rotate_zoom(angle, zoom), shift[:, :, None]], 2)  # output p reads M p + shift
        return warp(x, theta, fill=self.fill)


class Compose:
    """Apply augmentations in order."""

    def __init__(self, augments: Sequence[Augment]):
        self.augments = list(augments)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for aug in self.augments:
            x = aug(x, g)
        return x


def crop_boxes_to_theta(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``(B, 4)`` as fractions ``(top, left, height, width)`` of the image -> ``warp`` matrices ``(B, 2, 3)``.

    A box of width ``w`` (fraction) starting at ``left`` covers ``[2 left - 1, 2 (left + w) - 1]`` in
    ``affine_grid`` coordinates: a scale ``w`` around its centre.
    """
    top, left, h, w = boxes.unbind(1)
    zero = torch.zeros_like(w)
    cx, cy = 2 * left + w - 1, 2 * top + h - 1
    return torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop box ``boxes[i]`` (fractions ``top, left, height, width``) of image ``i`` and resize it to ``(H, W)``, bilinearly."""
    return warp(x, crop_boxes_to_theta(boxes.to(x)), padding_mode="border")


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
        apply = coin_flips(self.p, B, g, "cpu")
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
        brightness_first = coin_flips(0.5, B, g, x.device).view(-1, 1, 1, 1)
        apply = coin_flips(self.p, B, g, x.device).view(-1, 1, 1, 1)
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
        apply = coin_flips(self.p, B, g, x.device)
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


def mixup_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a shuffled copy of itself: ``(x (B, C, H, W), labels (B,))`` -> ``(x~, soft targets (B, K), lam)``.

    ``x~ = lam x_i + (1 - lam) x_j`` and ``y~ = lam y_i + (1 - lam) y_j`` with one ``lam ~ Beta(alpha, alpha)``
    per batch and ``j`` another image of the batch (timm's default batch mode). Train on ``y~`` with
    ``course_utils.losses.soft_target_cross_entropy``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (the Beta distribution's parameter), got {alpha}")
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    target = F.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm], lam
