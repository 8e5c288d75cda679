"""Triplet losses against PyTorch and brute-force loops; the triplet sampler's constraints and determinism."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.losses import (batch_hard_triplet_loss, pairwise_distances, sample_triplets, soft_target_cross_entropy,
                                 triplet_loss)


def _leaves(*tensors):
    return [t.clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1e-3, 0.2, 1.0, 5.0])
def test_triplet_loss_matches_torch_forward_and_gradients(p, margin):
    a, pos, neg = torch.randn(3, 16, 8, dtype=torch.float64)
    ours_in, torch_in = _leaves(a, pos, neg), _leaves(a, pos, neg)
    ours = triplet_loss(*ours_in, margin=margin, p=p)
    theirs = nn.TripletMarginLoss(margin=margin, p=p)(*torch_in)
    assert 0 < theirs.item()  # some triplets are violated, so gradients are not all zero
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    for x, y in zip(ours_in, torch_in):
        torch.testing.assert_close(x.grad, y.grad)


def test_triplet_loss_is_zero_for_easy_triplets_and_checks_arguments():
    a = torch.zeros(4, 3)
    assert triplet_loss(a, a, a + 10.0, margin=1.0).item() == 0.0
    with pytest.raises(ValueError, match="must both be"):
        triplet_loss(a, a[:3], a)
    with pytest.raises(ValueError, match="margin must be > 0"):  # as nn.TripletMarginLoss
        triplet_loss(a, a, a, margin=0.0)
    with pytest.raises(ValueError, match="margin must be > 0"):
        batch_hard_triplet_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), margin=0.0)


@pytest.mark.parametrize("shape", [(1, 3), (7, 5), (40, 16)])
def test_pairwise_distances_matches_cdist(shape):
    x = torch.randn(shape, dtype=torch.float64)
    expected = (x[:, None, :] - x[None, :, :]).norm(dim=-1)  # direct differences, no round-off at 0
    got = pairwise_distances(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, torch.cdist(x, x), rtol=1e-7, atol=1e-6)  # cdist's own diagonal is ~1e-7
    torch.testing.assert_close(pairwise_distances(x, squared=True), expected**2)
    assert (got.diagonal() == 0).all()
    torch.testing.assert_close(got, got.T)


def test_pairwise_distances_gradient_finite_when_embeddings_coincide():
    x = torch.randint(-3, 4, (5, 4)).double()  # integers: the coincident distance is exactly 0, not round-off
    x[3] = x[1]
    x1, x2 = _leaves(x, x)
    d = pairwise_distances(x1)
    assert d[1, 3].item() == 0.0 and d[3, 1].item() == 0.0
    weights = torch.rand(5, 5, dtype=torch.float64)
    (d * weights).sum().backward()
    assert torch.isfinite(x1.grad).all()
    ((x2[:, None] - x2[None]).norm(dim=-1) * weights).sum().backward()  # reference: subgradient 0 at 0
    torch.testing.assert_close(x1.grad, x2.grad)


def _batch_hard_loop(emb, labels, margin, soft):
    """Brute force: every anchor, every positive and negative, in Python."""
    losses = []
    for i in range(len(emb)):
        pos = [torch.dist(emb[i], emb[j]) for j in range(len(emb)) if j != i and labels[j] == labels[i]]
        neg = [torch.dist(emb[i], emb[j]) for j in range(len(emb)) if labels[j] != labels[i]]
        if pos and neg:
            gap = max(pos) - min(neg)
            losses.append(F.softplus(gap) if soft else torch.clamp(gap + margin, min=0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("margin", [1e-3, 0.3, 2.0])
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 2, 3],  # P x K-like
                                    [0, 1, 1, 2, 3, 3, 3, 3],  # singletons 0 and 2 are no anchors
                                    [5, 5, 5, 5, 9, 9, 9, 9]])
def test_batch_hard_matches_brute_force(labels, margin, soft):
    emb = torch.randn(len(labels), 6, dtype=torch.float64)
    labels = torch.tensor(labels)
    ours = batch_hard_triplet_loss(emb, labels, margin=margin, soft=soft)
    torch.testing.assert_close(ours, _batch_hard_loop(emb, labels, margin, soft))


def test_batch_hard_gradients_match_brute_force_and_are_finite_when_embeddings_coincide():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    emb = torch.randn(6, 3, dtype=torch.float64)
    emb[1] = emb[0]  # identical positive pair
    emb[4] = emb[2]  # identical anchor-negative pair: its hardest negative is at distance 0
    ours_in = _leaves(emb)
    loss = batch_hard_triplet_loss(ours_in[0], labels, margin=0.5)
    loss.backward()
    torch.testing.assert_close(loss, _batch_hard_loop(emb, labels, 0.5, soft=False))
    assert loss.item() > 0
    assert torch.isfinite(ours_in[0].grad).all() and ours_in[0].grad.abs().sum() > 0
    emb2 = torch.randn(6, 3, dtype=torch.float64)  # generic position: autograd of the loop is comparable
    ours_in, loop_in = _leaves(emb2), _leaves(emb2)
    batch_hard_triplet_loss(ours_in[0], labels, margin=0.5).backward()
    _batch_hard_loop(loop_in[0], labels, 0.5, soft=False).backward()
    torch.testing.assert_close(ours_in[0].grad, loop_in[0].grad)


@pytest.mark.parametrize("labels", [[3, 3, 3], [0, 1, 2, 3], []])
def test_batch_hard_raises_without_valid_anchor(labels):
    with pytest.raises(ValueError, match="two classes and two examples of one class"):
        batch_hard_triplet_loss(torch.randn(len(labels), 4), torch.tensor(labels, dtype=torch.long))


def test_sample_triplets_constraints_hold_for_every_row():
    labels = torch.tensor([4, 1, 4, 2, 2, 1, 4, 7, 7, 4, 1])
    t = sample_triplets(labels, 2000, seed=3)
    assert t.shape == (2000, 3) and t.dtype == torch.long
    a, p, n = t.T
    assert ((0 <= t) & (t < len(labels))).all()
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[n] != labels[a]).all()
    # every example is drawn as anchor, positive and negative: nothing is systematically left out
    for column in (a, p, n):
        assert set(column.tolist()) == set(range(len(labels)))


def test_sample_triplets_deterministic_per_seed():
    labels = [0, 0, 1, 1, 1, 2, 2]
    assert torch.equal(sample_triplets(labels, 100, seed=7), sample_triplets(labels, 100, seed=7))
    assert not torch.equal(sample_triplets(labels, 100, seed=7), sample_triplets(labels, 100, seed=8))
    assert sample_triplets(labels, 0, seed=0).shape == (0, 3)


@pytest.mark.parametrize("labels, match", [([1, 1, 1], "two classes"),
                                           ([0, 0, 1, 2, 2], "class 1 has 1"),
                                           ([], "two classes")])
def test_sample_triplets_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        sample_triplets(torch.tensor(labels, dtype=torch.long), 10, seed=0)


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
