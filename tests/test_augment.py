"""Batched augmentations: the one warp, crop/flip/affine, BYOL's views (shapes, ranges, seeds, probability 0,
torchvision where comparable) and mixup."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from course_utils.augment import (BrightnessContrast, GaussianBlur, RandomAffine, RandomCrop, RandomHorizontalFlip,
                                  RandomResizedCrop, TwoViews, adjust_brightness, adjust_contrast, affine_theta,
                                  byol_augment, gaussian_blur, mixup_batch, resized_crop, warp)
from course_utils.loader import TensorLoader


def images(n=16, c=1, size=28, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


AUGMENTS = [RandomResizedCrop(), BrightnessContrast(0.8, 0.8, p=1.0), GaussianBlur(3, (1.0, 2.0), p=1.0), byol_augment(),
            byol_augment(crop_scale=(0.2, 1.0), p_jitter=1.0, p_blur=1.0)]


@pytest.mark.parametrize("aug", AUGMENTS, ids=lambda a: type(a).__name__)
def test_shape_dtype_range_and_determinism(aug):
    x = images()
    out = aug(x, gen(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, aug(x, gen(3)))  # same seed, same result
    assert not torch.equal(out, aug(x, gen(4)))  # another seed, another result
    assert torch.equal(x, images())  # the input is not modified in place


def disk(n=4, size=32, radius=8.0):
    """A soft disk centred on the image, ``(n, 1, size, size)`` in [0, 1]: rotation leaves it unchanged."""
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    d = (yy**2 + xx**2).sqrt()
    return (radius + 0.5 - d).clamp(0, 1).expand(n, 1, size, size).clone()


def test_warp_identity_dtypes_and_errors():
    x = (images(3) * 255).round().to(torch.uint8)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3)
    assert torch.equal(warp(x, eye), x)  # uint8 in, uint8 out
    torch.testing.assert_close(warp(x.float(), eye), x.float(), atol=1e-3, rtol=0)  # float in, float out
    with pytest.raises(ValueError, match="theta must be"):
        warp(x, eye[:2])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        warp(x[0], eye[:1])


def test_warp_pads_with_fill_or_border():
    x = images(2)
    half = torch.tensor([[0.5, 0, 0], [0, 0.5, 0]]).expand(2, 2, 3)  # reads the centre: nothing from outside
    torch.testing.assert_close(warp(x, half, fill=0.3), warp(x, half), atol=1e-6, rtol=0)
    out = torch.tensor([[1.0, 0, 3.0], [0, 1.0, 0]]).expand(2, 2, 3)  # reads 1.5 image widths to the right: all outside
    assert (warp(x, out) == 0).all()
    torch.testing.assert_close(warp(x, out, fill=0.3), torch.full_like(x, 0.3))
    border = warp(x, out, padding_mode="border")  # every row repeats the image's last column
    torch.testing.assert_close(border, x[..., -1:].expand_as(x))


def test_affine_theta_moves_by_whole_pixels_when_asked():
    x = (images(4) * 255).round().to(torch.uint8)
    theta = affine_theta(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                         torch.tensor([[3 * 2 / 28, 0.0]] * 4, dtype=torch.float64)).float()
    moved = warp(x, theta)  # 3 pixels to the right
    assert torch.equal(moved[:, :, :, 3:], x[:, :, :, :-3]) and moved[:, :, :, :3].max() == 0


def test_affine_theta_rotates_a_quarter_turn_exactly():
    x = images(2)
    quarter = affine_theta(torch.full((2,), math.pi / 2), torch.ones(2), torch.zeros(2, 2))
    torch.testing.assert_close(warp(x, quarter), x.rot90(1, (2, 3)), atol=1e-5, rtol=0)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float).reshape(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = RandomCrop(2)(x, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    for i in range(2):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])
    assert torch.equal(RandomCrop(0)(x, g), x)
    with pytest.raises(ValueError):
        RandomCrop(-1)


def test_flip_and_affine():
    x = torch.rand(4, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x, g), x.flip(3))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x, g), x)
    torch.testing.assert_close(RandomAffine()(x, g), x, atol=1e-5, rtol=0)
    rotated = RandomAffine(degrees=30, translate=0.1, scale=(0.9, 1.1))(x, g)
    assert rotated.shape == x.shape and not torch.allclose(rotated, x)
    # rotation keeps a centred disk; a 2x magnification quadruples its area; outside the image reads `fill`
    d = disk()
    torch.testing.assert_close(RandomAffine(degrees=180)(d, g), d, atol=0.35, rtol=0)
    assert (RandomAffine(degrees=180)(d, g) - d).abs().mean() < 0.01
    area = RandomAffine(scale=(2.0, 2.0))(d, g).sum((1, 2, 3))
    torch.testing.assert_close(area, 4 * d.sum((1, 2, 3)), rtol=0.03, atol=0)
    shrunk = RandomAffine(scale=(0.5, 0.5), fill=0.7)(d, g)
    assert torch.allclose(shrunk[..., :4, :4], torch.tensor(0.7))  # the corners come from outside the image


def test_probability_zero_is_the_identity():
    x = images()
    assert torch.equal(RandomResizedCrop(p=0.0)(x, gen()), x)
    assert torch.equal(BrightnessContrast(0.8, 0.8, p=0.0)(x, gen()), x)
    assert torch.equal(GaussianBlur(p=0.0)(x, gen()), x)
    identity = byol_augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), p_jitter=0.0, p_flip=0.0, p_blur=0.0)
    out = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, gen())  # the whole image, resized to itself
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)  # up to the round-off of the sampling grid
    torch.testing.assert_close(identity(x, gen()), x, rtol=0, atol=1e-5)


def test_probability_one_half_changes_about_half_the_images():
    x = images(400)
    changed = (BrightnessContrast(0.8, 0.8, p=0.5)(x, gen()) != x).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6
    blurred = (GaussianBlur(p=0.2)(x, gen()) != x).flatten(1).any(1).float().mean()
    assert 0.12 < blurred < 0.28


def test_resized_crop_matches_torchvision_inside_the_box():
    x = images(2)
    top, left, h, w = 4, 6, 14, 14  # pixels; a 2x zoom
    boxes = torch.tensor([[top / 28, left / 28, h / 28, w / 28]] * 2)
    ours = resized_crop(x, boxes)
    theirs = TF.resized_crop(x, top, left, h, w, [28, 28], antialias=False)
    # torchvision clamps at the box's edge, grid_sample reads the pixel beyond it: compare the interior
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1])


def test_random_boxes_respect_scale_ratio_and_stay_inside_the_image():
    crop = RandomResizedCrop(scale=(0.2, 0.6), ratio=(0.75, 4 / 3))
    boxes = crop.boxes(5000, gen())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 1 + 1e-6).all() and (left + w <= 1 + 1e-6).all()
    inside = (h < 1) & (w < 1)  # boxes not shrunk to fit
    area = (h * w)[inside]
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.6 + 1e-5
    ratio = (w / h)[inside]
    assert ratio.min() >= 0.75 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(scale=(0.0, 1.0))


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_and_contrast_match_torchvision(channels):
    x = images(5, channels)
    factors = torch.tensor([0.2, 0.7, 1.0, 1.3, 1.8])
    ours_b, ours_c = adjust_brightness(x, factors), adjust_contrast(x, factors)
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(ours_b[i], TF.adjust_brightness(x[i], f))
        torch.testing.assert_close(ours_c[i], TF.adjust_contrast(x[i], f))


def test_gaussian_blur_matches_torchvision():
    x = images(4, size=12)
    sigma = torch.tensor([0.5, 1.0, 1.5, 2.0])
    for k in (3, 5):
        ours = gaussian_blur(x, sigma, k)
        for i, s in enumerate(sigma.tolist()):
            torch.testing.assert_close(ours[i], TF.gaussian_blur(x[i], [k, k], [s, s]))
    x3 = images(2, 3)
    torch.testing.assert_close(gaussian_blur(x3, torch.tensor([1.2, 1.2]))[1], TF.gaussian_blur(x3[1], [3, 3], [1.2, 1.2]))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, sigma, 4)


def test_two_views_are_stacked_on_channels_and_differ():
    x = images(8)
    views = TwoViews(byol_augment())(x, gen())
    assert views.shape == (8, 2, 28, 28)
    assert not torch.equal(views[:, :1], views[:, 1:])
    ident = byol_augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), p_jitter=0.0, p_flip=0.0, p_blur=0.0)
    pair = TwoViews([ident, byol_augment()])(x, gen())
    torch.testing.assert_close(pair[:, :1], x, rtol=0, atol=1e-5)  # asymmetric pipelines: one per view
    with pytest.raises(ValueError, match="one per view"):
        TwoViews([ident, ident, ident])


def test_two_views_run_through_the_tensor_loader_deterministically():
    x = (images(20) * 255).to(torch.uint8)
    make = lambda: TensorLoader(x, torch.zeros(20), 8, shuffle=True, augment=TwoViews(byol_augment()), seed=1)  # noqa: E731
    a, b = list(make()), list(make())
    assert a[0][0].shape == (8, 2, 28, 28)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))


def test_mixup_batch_mixes_images_and_labels_alike():
    B = 8
    x = torch.arange(B, dtype=torch.float32)[:, None, None, None].expand(B, 1, 2, 2).clone()  # image i is all i
    y = torch.arange(B)  # label i
    mixed, target, lam = mixup_batch(x, y, B, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert 0 <= lam <= 1 and target.shape == (B, B)
    torch.testing.assert_close(target.sum(1), torch.ones(B))
    # the image value is lam * i + (1 - lam) * j, and the target puts the same weights on classes i and j
    expected_value = target @ torch.arange(B, dtype=torch.float32)
    torch.testing.assert_close(mixed[:, 0, 0, 0], expected_value)
    assert torch.all(target[torch.arange(B), y] >= min(lam, 1 - lam) - 1e-6)


def test_lambda_follows_beta():
    g = torch.Generator().manual_seed(0)
    x, y = torch.zeros(4, 1, 2, 2), torch.arange(4)
    small = torch.tensor([mixup_batch(x, y, 4, 0.2, g)[2] for _ in range(2000)])
    large = torch.tensor([mixup_batch(x, y, 4, 4.0, g)[2] for _ in range(2000)])
    assert abs(small.mean() - 0.5) < 0.05 and abs(large.mean() - 0.5) < 0.03
    inner = lambda lam: ((lam > 0.1) & (lam < 0.9)).float().mean()  # noqa: E731
    assert inner(small) < 0.5 < inner(large)  # Beta(0.2, 0.2) is U-shaped, Beta(4, 4) peaked at 1/2
    with pytest.raises(ValueError, match="alpha"):
        mixup_batch(x, y, 4, 0.0, g)
