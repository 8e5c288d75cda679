"""PyTorch's own triplet-loss tests and the empty-batch conventions, run against ``course_utils.losses``.

Adapted from pytorch/pytorch ``test/test_nn.py`` (``test_triplet_margin_loss``: random ``(5, 10)`` anchors,
positives and negatives with gradients, compared with ``F.triplet_margin_loss``; ``test_pairwise_distance``'s
``eps``), ``torch/testing/_internal/common_modules.py`` (``module_inputs_torch_nn_TripletMarginLoss``: margins and
norms ``p``; the unbatched ``(D,)`` input is not supported here and raises) and ``gradcheck`` in double precision.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from course_utils.losses import dice_loss, poly1_cross_entropy, triplet_loss, weighted_cross_entropy


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_triplet_margin_loss(margin, p):
    torch.manual_seed(0)
    inputs = [torch.randn(5, 10, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    ours = triplet_loss(*inputs, margin=margin, p=p)
    theirs = F.triplet_margin_loss(*inputs, margin=margin, p=p)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs)):
        torch.testing.assert_close(a, b)
    assert gradcheck(lambda a, b, c: triplet_loss(a, b, c, margin=margin, p=p), inputs, fast_mode=True)


def test_triplet_loss_on_an_empty_batch_is_nan_as_in_pytorch():
    a = torch.randn(0, 4)
    assert torch.isnan(triplet_loss(a, a, a)) and torch.isnan(F.triplet_margin_loss(a, a, a))


def test_unbatched_input_raises_instead_of_guessing():
    a = torch.randn(10)
    with pytest.raises(ValueError, match=r"must both be \(B, D\)"):
        triplet_loss(a, a, a)


def test_segmentation_losses_on_an_empty_batch():
    """F.cross_entropy's convention for an empty batch with mean reduction is nan (0 / 0); the course's
    cross-entropies follow it. Dice has no such convention: its 'loss 0' would only be smooth / smooth, so
    dice_loss raises."""
    logits, target = torch.randn(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long)
    assert torch.isnan(F.cross_entropy(logits, target))
    assert torch.isnan(weighted_cross_entropy(logits, target)) and torch.isnan(poly1_cross_entropy(logits, target))
    with pytest.raises(ValueError, match="dice_loss of an empty batch"):
        dice_loss(logits, target)


@pytest.mark.parametrize("loss", [dice_loss, weighted_cross_entropy, poly1_cross_entropy])
def test_one_hot_and_float_targets_raise(loss):
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(3, (2, 4, 4))
    with pytest.raises(ValueError, match=r"looks one-hot .* target.argmax\(1\)"):
        loss(logits, F.one_hot(target, 3).movedim(-1, 1))
    with pytest.raises(TypeError, match=r"integer class indices, got torch.float32; use target.long\(\)"):
        loss(logits, target.float())
    with pytest.raises(ValueError, match=r"target labels must be in 0..2, got -1..2"):
        loss(logits, target.masked_fill(target == 0, -1))
