"""Segmentation losses against PyTorch, scikit-learn and hand computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from sklearn.utils.class_weight import compute_class_weight

from course_utils.losses import class_weights_from_frequencies, dice_loss, poly1_cross_entropy, weighted_cross_entropy


def _batch(seed=0, B=2, K=5, H=6, W=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, K, H, W, generator=g, dtype=torch.float64), torch.randint(0, K, (B, H, W), generator=g)


def test_class_weights_are_median_frequency_balanced():
    counts = torch.tensor([900, 50, 10, 0, 40])
    w = class_weights_from_frequencies(counts)
    freq = counts.double() / counts.sum()
    median = freq[[0, 1, 2, 4]].median()  # torch: lower middle of 4 values = 40 / 1000
    torch.testing.assert_close(w.double(), torch.where(counts > 0, median / freq, 0.0), rtol=1e-6, atol=0)
    assert w[4].item() == pytest.approx(1.0) and w[3] == 0 and w[0] < w[1] < w[4] < w[2]  # rarer class, larger weight
    # inverse frequency: proportional to scikit-learn's "balanced" class weights n / (K n_c)
    labels = torch.repeat_interleave(torch.arange(5), counts).numpy()
    balanced = torch.from_numpy(compute_class_weight("balanced", classes=np.array([0, 1, 2, 4]), y=labels))
    ratio = w[[0, 1, 2, 4]].double() / balanced
    torch.testing.assert_close(ratio, ratio[0].expand(4))
    torch.testing.assert_close(class_weights_from_frequencies(counts, power=0.5), w.sqrt())
    with pytest.raises(ValueError, match="non-negative counts"):
        class_weights_from_frequencies([0, 0, 0])
    with pytest.raises(ValueError, match="power"):
        class_weights_from_frequencies([1, 2], power=-1)


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_cross_entropy_equals_torch(weighted):
    logits, target = _batch()
    weight = torch.tensor([0.1, 2.0, 1.0, 5.0, 0.5], dtype=torch.float64) if weighted else None
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, theirs = weighted_cross_entropy(a, target, weight), F.cross_entropy(b, target, weight=weight)
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("weighted", [False, True])
def test_poly1_with_epsilon_zero_is_cross_entropy(weighted):
    logits, target = _batch(1)
    weight = torch.tensor([0.3, 1.0, 4.0, 1.0, 2.0], dtype=torch.float64) if weighted else None
    torch.testing.assert_close(poly1_cross_entropy(logits, target, 0.0, weight),
                               F.cross_entropy(logits, target, weight=weight))


@pytest.mark.parametrize("epsilon", [-0.5, 1.0, 3.0])
def test_poly1_is_cross_entropy_plus_epsilon_one_minus_pt(epsilon):
    logits, target = _batch(2)
    x = logits.clone().requires_grad_()
    loss = poly1_cross_entropy(x, target, epsilon)
    pt = F.softmax(logits, 1).gather(1, target[:, None])[:, 0]  # (B, H, W): probability of the true class
    by_hand = F.cross_entropy(logits, target) + epsilon * (1 - pt).mean()
    torch.testing.assert_close(loss, by_hand)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    w = weight[target]
    per_pixel = F.cross_entropy(logits, target, reduction="none") + epsilon * (1 - pt)
    torch.testing.assert_close(poly1_cross_entropy(logits, target, epsilon, weight), (w * per_pixel).sum() / w.sum())
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_poly1_on_fixed_logits():
    logits = torch.tensor([[[[2.0]], [[0.0]]]])  # one pixel, two classes: p = (0.8808, 0.1192)
    target = torch.tensor([[[0]]])
    p0 = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(poly1_cross_entropy(logits, target, 1.0), -p0.log() + (1 - p0))


def test_dice_of_perfect_prediction_is_zero_and_of_wrong_one_is_one():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 16, 16), generator=g)
    perfect = 30.0 * F.one_hot(target, 4).movedim(-1, 1).float()
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 30.0 * F.one_hot((target + 1) % 4, 4).movedim(-1, 1).float()  # every pixel in another class
    assert dice_loss(wrong, target).item() == pytest.approx(1.0, abs=1e-2)
    # a class absent from target and prediction counts as solved (Dice (0 + s) / (0 + s) = 1)
    only_0_1 = target % 2
    perfect_01 = 30.0 * F.one_hot(only_0_1, 4).movedim(-1, 1).float()
    assert dice_loss(perfect_01, only_0_1).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_of_hard_predictions_is_one_minus_macro_f1():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (2, 10, 10), generator=g)
    pred = torch.where(torch.rand(2, 10, 10, generator=g) < 0.6, target, torch.randint(0, 5, (2, 10, 10), generator=g))
    logits = 50.0 * F.one_hot(pred, 5).movedim(-1, 1).double()
    f1 = f1_score(target.flatten().numpy(), pred.flatten().numpy(), average="macro")
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(1 - f1, abs=1e-9)


def test_dice_gradient_is_finite_and_lowers_the_loss():
    logits, target = _batch(3)
    x = logits.clone().requires_grad_()
    loss = dice_loss(x, target)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert dice_loss(logits - 0.5 * x.grad / x.grad.norm(), target) < loss  # a small step down the gradient


def test_segmentation_losses_check_their_inputs():
    logits, target = _batch()
    with pytest.raises(ValueError, match="logits must be"):
        weighted_cross_entropy(logits, target[:, :5])
    with pytest.raises(ValueError, match=r"labels must be in 0..4"):
        dice_loss(logits, target + 1)
    with pytest.raises(TypeError, match="integer class indices"):
        poly1_cross_entropy(logits, target.double())
    with pytest.raises(ValueError, match=r"\(5,\) vector"):
        weighted_cross_entropy(logits, target, torch.ones(4))
