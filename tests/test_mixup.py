import pytest
import torch
import torch.nn.functional as F

from course_utils.loader import TensorLoader
from course_utils.mixup import MixupLoader, mixup_batch, soft_target_cross_entropy


def test_soft_target_cross_entropy_matches_pytorch():
    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.softmax(torch.randn(6, 4), 1)
    ours = soft_target_cross_entropy(logits, target)
    theirs = F.cross_entropy(logits, target)  # PyTorch accepts class probabilities as the target
    torch.testing.assert_close(ours, theirs)
    g_ours, = torch.autograd.grad(ours, logits)
    g_theirs, = torch.autograd.grad(F.cross_entropy(logits, target), logits)
    torch.testing.assert_close(g_ours, g_theirs)
    labels = torch.tensor([0, 3, 1, 2, 2, 0])
    torch.testing.assert_close(soft_target_cross_entropy(logits, F.one_hot(labels, 4).float()),
                               F.cross_entropy(logits, labels))  # one-hot targets: the ordinary loss
    with pytest.raises(ValueError, match="one_hot"):
        soft_target_cross_entropy(logits, labels)


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


def test_mixup_loader_is_deterministic_per_epoch():
    images, labels = torch.rand(20, 1, 4, 4), torch.arange(20) % 5
    make = lambda: MixupLoader(TensorLoader(images, labels, 8, shuffle=True, seed=1), 5, alpha=0.4, seed=1)  # noqa: E731
    a, b = make(), make()
    first = [t for t in a]
    assert len(first) == len(a) == 3
    for (xa, ta), (xb, tb) in zip(first, b):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
    second = list(a)  # the next epoch draws new pairs and weights
    assert not torch.equal(first[0][0], second[0][0])
    b.set_epoch(1)
    assert torch.equal(next(iter(b))[1], second[0][1])
