"""Distorted images and the transformation-pair data set: deterministic, balanced, and geometrically right."""

import math

import pytest
import torch

from course_utils.augment import affine_theta, warp
from course_utils.datasets.pairs import (PAIR_CHANGES, PAIR_LABELS, Distortion, PairChanges, crop_zoom, distort,
                                         distortion_params, make_pairs, pair_theta)
from course_utils.layers.deform import affine_scale_angle


def fake_images(n=120, size=28, seed=0):
    """Blobs of random brightness on a black background, like Fashion-MNIST items."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * 10 + 9
    radius = torch.rand(n, generator=g) * 4 + 4
    d = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2).sqrt()
    img = (d < radius[:, None, None]).float() * (torch.rand(n, 1, 1, generator=g) * 155 + 100)
    return img.round().to(torch.uint8)[:, None]


def test_make_pairs_is_deterministic_balanced_and_shaped():
    x = fake_images()
    pairs, labels = make_pairs(x, 10, seed=3)
    again = make_pairs(x, 10, seed=3)
    other = make_pairs(x, 10, seed=4)
    assert torch.equal(pairs, again[0]) and torch.equal(labels, again[1])
    assert not torch.equal(pairs, other[0])
    assert pairs.shape == (70, 2, 28, 28) and pairs.dtype == torch.uint8
    assert labels.dtype == torch.int64 and torch.bincount(labels, minlength=7).tolist() == [10] * 7
    assert len(PAIR_LABELS) == len(PAIR_CHANGES) == 7 and sorted(set(PAIR_CHANGES)) == [0, 1, 2]
    assert not torch.equal(labels, labels.sort().values)  # shuffled, not in label order


def test_unchanged_pairs_are_identical_and_changed_ones_differ():
    pairs, labels = make_pairs(fake_images(), 10, seed=0)
    same = (pairs[:, 0] == pairs[:, 1]).flatten(1).all(1)
    assert same[labels == 0].all()
    assert not same[labels != 0].any()


def test_sources_are_distinct_images_when_there_are_enough():
    x = torch.arange(100, dtype=torch.uint8)[:, None, None, None].expand(100, 1, 8, 8).contiguous()
    pairs, _ = make_pairs(x, 14, seed=0)  # 98 pairs from 100 constant images
    assert len(pairs[:, 0, 0, 0].unique()) == 98


def test_rotation_crop_leaves_no_empty_corners():
    ones = torch.full((60, 1, 28, 28), 255, dtype=torch.uint8)
    pairs, labels = make_pairs(ones, 60 // 7 + 1, seed=0)
    for k in (2, 3, 6):  # rotation, scaling, rotation+scaling read only inside the original image
        changed = pairs[labels == k, 1]
        assert changed.min() == 255, f"{PAIR_LABELS[k]} has pixels from outside the image"
    # without the crop, a rotation by 15-30 degrees would leave black corners
    angle = torch.full((1,), math.radians(20.0), dtype=torch.float64)
    theta = affine_theta(angle, torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)).float()
    no_crop = warp(ones[:1], theta)
    assert no_crop[0, 0, 0, 0] == 0 and no_crop[0, 0, 0, -1] == 0


def test_crop_zoom_is_the_inscribed_square():
    angle = torch.tensor([0.0, math.pi / 12, math.pi / 6, math.pi / 4])
    expected = torch.tensor([1.0, math.cos(math.pi / 12) + math.sin(math.pi / 12), (math.sqrt(3) + 1) / 2, math.sqrt(2)])
    torch.testing.assert_close(crop_zoom(angle), expected)
    torch.testing.assert_close(crop_zoom(-angle), expected)


def test_pair_theta_encodes_each_change():
    labels = torch.arange(7).repeat(50)
    theta = pair_theta(labels, 28, torch.Generator().manual_seed(0)).double()
    M, t = theta[:, :, :2], theta[:, :, 2]
    det = torch.linalg.det(M)  # 1 / zoom^2
    angle = torch.atan2(M[:, 1, 0], M[:, 0, 0]).rad2deg().abs()
    shift = -torch.linalg.solve(M, t)  # output pixel p reads M (p - shift): shift in normalised units
    shift_px = shift.norm(dim=1) * 28 / 2
    for k, name in enumerate(PAIR_LABELS):
        sel = labels == k
        rotated, scaled, displaced = "rotation" in name, "scaling" in name, "displacement" in name
        if rotated:
            assert ((angle[sel] >= 15 - 1e-4) & (angle[sel] <= 30 + 1e-4)).all()
        else:
            assert angle[sel].max() < 1e-6
        zoom = det[sel].rsqrt()
        rot_zoom = crop_zoom(angle[sel].deg2rad())
        extra = zoom / rot_zoom
        if scaled:
            assert ((extra >= 1.15 - 1e-4) & (extra <= 1.4 + 1e-4)).all()
        else:
            torch.testing.assert_close(extra, torch.ones_like(extra))
        if displaced:
            assert ((shift_px[sel] >= 2 - 1e-4) & (shift_px[sel] <= 4 + 1e-4)).all()
        else:
            assert shift_px[sel].max() < 1e-5


def test_displacement_moves_the_image_by_whole_pixels_when_asked():
    x = fake_images(40)
    pairs, labels = make_pairs(x, 5, seed=0, changes=PairChanges(shift_pixels=(3.0, 3.0)))
    moved = pairs[labels == 1].float()  # displacement only, by exactly 3 pixels in a random direction
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")

    def centroid(img):  # (n, 28, 28) -> (n, 2)
        m = img.sum((1, 2))
        return torch.stack([(img * yy).sum((1, 2)) / m, (img * xx).sum((1, 2)) / m], 1)

    step = (centroid(moved[:, 1]) - centroid(moved[:, 0])).norm(dim=1)  # bilinear shifts move the centroid exactly
    torch.testing.assert_close(step, torch.full_like(step, 3.0), atol=0.05, rtol=0)  # (up to uint8 rounding)


def test_distort_is_seeded_keeps_dtype_and_range_and_grows_with_strength():
    x = fake_images(64)
    a, b = distort(x, 1.0, seed=0), distort(x, 1.0, seed=0)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, distort(x, 1.0, seed=1))
    assert torch.equal(distort(x, 0.0, seed=0), x)
    assert torch.equal(distort(x, 1.0, seed=0, batch_size=7), a)  # batching does not change the result
    change = [(distort(x, s, seed=0).float() - x.float()).abs().mean().item() for s in (0.25, 1.0, 2.0)]
    assert change[0] < change[1] < change[2]
    xf = x.float() / 255
    out = Distortion(1.0)(xf, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1 + 1e-6


def test_distortion_parameters_stay_in_their_ranges():
    theta = Distortion(2.0).theta(2000, torch.Generator().manual_seed(0)).double()
    M = theta[:, :, :2]
    angle = torch.atan2(M[:, 1, 0], M[:, 0, 0]).rad2deg()
    zoom = torch.linalg.det(M).rsqrt()
    assert angle.abs().max() <= 50 + 1e-3 and angle.abs().max() > 45
    assert zoom.log2().abs().max() <= 0.5 + 1e-4
    with pytest.raises(ValueError, match="strength must be >= 0"):
        Distortion(-1.0)


def test_distortion_params_recompute_what_distort_applied():
    x = fake_images(50)
    p = distortion_params(50, 1.0, seed=4)
    assert p["angle"].shape == (50,) and p["zoom"].shape == (50,) and p["shift"].shape == (50, 2)
    assert torch.equal(warp(x, affine_theta(**p).float()), distort(x, 1.0, seed=4))
    assert p["angle"].abs().max() <= math.radians(25) and p["zoom"].log2().abs().max() <= 0.25
    with pytest.raises(ValueError, match="strength must be > 0"):
        distortion_params(5, 0.0, seed=0)


def test_distortion_turns_and_magnifies_image_offsets_by_its_angle_and_zoom():
    # Three blobs 10 pixels apart: after distort, the (row, column) vectors between their centres are the
    # originals carried by a map whose scale and angle (affine_scale_angle) are the image's zoom and angle:
    # the map a deformable kernel's grid would have to follow to read the undistorted object.
    S, n = 64, 6
    yy, xx = torch.meshgrid(torch.arange(S).double(), torch.arange(S).double(), indexing="ij")
    blobs = torch.stack([torch.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 4.5) for r, c in ((32, 32), (22, 32), (32, 22))])
    out = distort(blobs[None].expand(n, 3, S, S).float(), 1.0, seed=5).double()
    w = out / out.sum((2, 3), keepdim=True)
    centres = torch.stack([(w * yy).sum((2, 3)), (w * xx).sum((2, 3))], -1)  # (n, 3, 2)
    moved = torch.stack([centres[:, 1] - centres[:, 0], centres[:, 2] - centres[:, 0]], -1)  # columns: images of
    A = moved @ torch.linalg.inv(torch.tensor([[-10.0, 0.0], [0.0, -10.0]], dtype=torch.float64))  # (-10,0), (0,-10)
    scale, angle = affine_scale_angle(A)
    p = distortion_params(n, 1.0, seed=5)
    torch.testing.assert_close(scale, p["zoom"], atol=5e-3, rtol=0)
    torch.testing.assert_close(angle, p["angle"], atol=math.radians(0.3), rtol=0)


def test_make_pairs_rejects_bad_input():
    x = fake_images(3)
    with pytest.raises(ValueError, match="grey-scale"):
        make_pairs(x.expand(3, 3, 28, 28), 1, seed=0)
    with pytest.raises(ValueError, match="per_label must be"):
        make_pairs(x, 0, seed=0)
