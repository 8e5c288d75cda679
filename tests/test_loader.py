import pytest
import torch

from course_utils.loader import Compose, RandomAffine, RandomCrop, RandomHorizontalFlip, TensorLoader


def _data(n=50):
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    return x, torch.arange(n)


def test_batches_cover_the_data_once_and_scale_to_unit_range():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=16, shuffle=True, seed=3)
    seen = torch.cat([b for _, b in loader])
    assert len(loader) == 4 and sorted(seen.tolist()) == list(range(50))
    xb, yb = next(iter(TensorLoader(x, y, 16)))
    torch.testing.assert_close(xb, x[:16].float() / 255)
    assert len(TensorLoader(x, y, 16, drop_last=True)) == 3


def test_determinism_per_seed_and_epoch():
    x, y = _data()
    aug = Compose([RandomCrop(2), RandomHorizontalFlip()])
    a = TensorLoader(x, y, 16, shuffle=True, augment=aug, seed=7)
    b = TensorLoader(x, y, 16, shuffle=True, augment=aug, seed=7)
    epoch0_a, epoch0_b = list(a), list(b)
    for (xa, ya), (xb, yb) in zip(epoch0_a, epoch0_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    epoch1 = list(a)
    assert not torch.equal(epoch0_a[0][1], epoch1[0][1])  # a new permutation each epoch
    b.set_epoch(1)  # resuming at epoch 1 reproduces it exactly
    assert all(torch.equal(p[0], q[0]) for p, q in zip(epoch1, list(b)))


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


def test_flip_and_identity_affine():
    x = torch.rand(4, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x, g), x.flip(3))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x, g), x)
    torch.testing.assert_close(RandomAffine()(x, g), x, atol=1e-5, rtol=0)
    rotated = RandomAffine(degrees=30, translate=0.1, scale=(0.9, 1.1))(x, g)
    assert rotated.shape == x.shape and not torch.allclose(rotated, x)


def test_normalisation_and_channels_last():
    x, y = _data()
    xb, _ = next(iter(TensorLoader(x, y, 8, mean=0.5, std=0.25, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xb, (x[:8].float() / 255 - 0.5) / 0.25)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="labels"):
        TensorLoader(x, y[:3], 4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):  # 3-D is neither images nor features
        TensorLoader(x[:, 0], y, 4)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(x, y, 0)
