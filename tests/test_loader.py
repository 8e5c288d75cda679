"""TensorLoader (batches, seeds per epoch, normalisation) and MixupLoader (mixed batches, resumable)."""

import pytest
import torch

from course_utils.augment import Compose, RandomCrop, RandomHorizontalFlip
from course_utils.loader import MixupLoader, TensorLoader


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


def test_mixup_loader_is_deterministic_per_epoch():
    images, labels = torch.rand(20, 1, 4, 4), torch.arange(20) % 5
    make = lambda: MixupLoader(TensorLoader(images, labels, 8, shuffle=True, seed=1), 5, alpha=0.4, seed=1)  # noqa: E731
    a, b = make(), make()
    first = [t for t in a]
    assert len(first) == len(a) == 3
    assert first[0][1].shape == (8, 5) and torch.allclose(first[0][1].sum(1), torch.ones(8))  # soft targets
    for (xa, ta), (xb, tb) in zip(first, b):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
    second = list(a)  # the next epoch draws new pairs and weights
    assert not torch.equal(first[0][0], second[0][0])
    b.set_epoch(1)
    assert torch.equal(next(iter(b))[1], second[0][1])
