"""BYOL's batched augmentations: shapes, value ranges, seeds, probability 0, and torchvision where comparable."""

import pytest
import torch
import torchvision.transforms.functional as TF

from course_utils.augment import (BrightnessContrast, GaussianBlur, RandomResizedCrop, TwoViews, adjust_brightness,
                                  adjust_contrast, byol_augment, gaussian_blur, resized_crop)
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
