"""BYOL (course_utils.models.byol, its loss in course_utils.losses): the loss against its formula, no gradient
into the target, exact EMA arithmetic, the tau schedule, the feature width read from the backbone."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.models.byol import BYOL
from course_utils.models.resnet import resnet6n2
from course_utils.losses import byol_loss, symmetric_byol_loss
from course_utils.models.byol import byol_tau, mlp_head


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def small_byol(predictor=True):
    return BYOL(resnet6n2(1, 10, norm="torch_bn", widths=(4, 8, 8)), projector_dim=6, hidden_dim=12,
                predictor=predictor)


def test_loss_equals_two_minus_two_cosine_and_the_normalised_squared_distance():
    p, z = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    expected = (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()
    torch.testing.assert_close(byol_loss(p, z), expected)
    distance = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(1).mean()  # BYOL eq. 2, left side
    torch.testing.assert_close(byol_loss(p, z), distance)
    assert byol_loss(p, p).abs() < 1e-12 and torch.isclose(byol_loss(p, -p), torch.tensor(4.0, dtype=torch.float64))
    assert torch.isclose(byol_loss(p, 3 * p), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)  # scale-free


def test_symmetric_loss_swaps_the_views():
    p1, p2, z1, z2 = torch.randn(4, 6, 3).unbind(0)
    manual = (2 - 2 * F.cosine_similarity(p1, z2)).mean() + (2 - 2 * F.cosine_similarity(p2, z1)).mean()
    torch.testing.assert_close(symmetric_byol_loss(p1, p2, z1, z2), manual)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        byol_loss(torch.randn(3, 4), torch.randn(3, 5))


def test_forward_gives_online_predictions_and_target_projections_of_both_views():
    torch.manual_seed(0)
    model = small_byol().train()
    views = torch.rand(6, 2, 28, 28)
    x = torch.cat([views[:, :1], views[:, 1:]])
    clone = copy.deepcopy(model)  # BN running stats change during forward; compute the reference on a copy
    p = clone.predictor(clone.projector(clone.backbone.forward_features(x).mean((2, 3))))
    z = clone.target_projector(clone.target_backbone.forward_features(x).mean((2, 3)))
    p1, p2, z1, z2 = model(views)
    for got, want in zip((p1, p2, z1, z2), (p[:6], p[6:], z[:6], z[6:])):
        torch.testing.assert_close(got, want)
    assert p1.requires_grad and not z1.requires_grad and not z2.requires_grad  # the stop-gradient on the target
    torch.testing.assert_close(symmetric_byol_loss(p1, p2, z1, z2), symmetric_byol_loss(p[:6], p[6:], z[:6], z[6:]))
    with pytest.raises(ValueError, match="two views"):
        model(torch.rand(2, 1, 28, 28))


def test_no_gradient_reaches_the_target_and_an_optimizer_step_leaves_it_unchanged():
    torch.manual_seed(0)
    model = small_byol().train()
    before = [t.clone() for t in model.target_parameters()]
    online_before = [t.clone() for t in model.online_parameters()]
    assert all(not p.requires_grad for p in model.target_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)  # all parameters, on purpose
    loss = symmetric_byol_loss(*model(torch.rand(8, 2, 28, 28)))
    loss.backward()
    assert all(p.grad is None for p in model.target_parameters())
    used = [p for name, p in model.named_parameters() if not name.startswith(("target_", "backbone.fc."))]
    assert all(p.grad is not None for p in used)  # the backbone's classifier `fc` is not part of BYOL
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.target_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(online_before, model.online_parameters()))


def test_target_starts_as_an_independent_copy_of_the_online_network():
    model = small_byol()
    online = list(model.backbone.parameters()) + list(model.projector.parameters())
    for o, t in zip(online, model.target_parameters()):
        assert torch.equal(o, t) and o.data_ptr() != t.data_ptr()
    n_online = sum(p.numel() for p in model.online_parameters())
    n_target = sum(p.numel() for p in model.target_parameters())
    n_pred = sum(p.numel() for p in model.predictor.parameters())
    assert n_online == n_target + n_pred


def test_update_target_is_exact_ema_arithmetic_on_a_toy_module():
    class Toy(nn.Module):  # the smallest module with forward_features
        num_features = 2

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward_features(self, x):
            return self.bn(self.conv(x))

    model = BYOL(Toy(), projector_dim=2, hidden_dim=3)
    with torch.no_grad():
        for p in model.target_parameters():
            p.fill_(1.0)
        for p in model.online_parameters():
            p.fill_(3.0)
        model.backbone.bn.running_mean.fill_(0.25)
    model.update_target(0.75)
    for p in model.target_parameters():  # 0.75 * 1 + 0.25 * 3 = 1.5, exactly representable
        assert torch.equal(p, torch.full_like(p, 1.5))
    assert torch.equal(model.target_backbone.bn.running_mean, torch.full((2,), 0.25))  # buffers are copied
    model.update_target(1.0)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in model.target_parameters())
    model.update_target(0.0)
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in model.target_parameters())
    with pytest.raises(ValueError, match="tau"):
        model.update_target(1.5)


def test_update_target_matches_the_formula_on_random_weights():
    torch.manual_seed(1)
    model = small_byol()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    online = [p.clone() for m in (model.backbone, model.projector) for p in m.parameters()]
    target = [p.clone() for p in model.target_parameters()]
    model.update_target(0.9)
    for o, t, new in zip(online, target, model.target_parameters()):
        torch.testing.assert_close(new, 0.9 * t + 0.1 * o)


def test_tau_schedule_runs_from_base_to_one_along_a_cosine():
    assert byol_tau(0, 100) == pytest.approx(0.99)
    assert byol_tau(100, 100) == pytest.approx(1.0)
    assert byol_tau(50, 100, base=0.996) == pytest.approx(0.998)  # half way: the mean of base and 1
    assert byol_tau(25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    taus = [byol_tau(s, 40) for s in range(41)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert byol_tau(500, 100) == pytest.approx(1.0)  # past the end: stays at 1
    with pytest.raises(ValueError, match="total"):
        byol_tau(0, 0)


def test_without_predictor_the_prediction_is_the_projection():
    model = small_byol(predictor=False)
    assert isinstance(model.predictor, nn.Identity)
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model.predictor(model.embed(x)), model.embed(x))


def test_feature_dim_and_bad_backbones_are_explained():
    assert mlp_head(4, 8, 2)(torch.randn(3, 4)).shape == (3, 2)
    with pytest.raises(TypeError, match="forward_features"):
        BYOL(nn.Linear(3, 3))

    class NoWidths(nn.Module):  # no num_features
        def forward_features(self, x):
            return x

    with pytest.raises(ValueError, match="feature_dim"):
        BYOL(NoWidths())
    assert BYOL(NoWidths(), feature_dim=1, projector_dim=2, hidden_dim=3).projector[0].in_features == 1
    backbone = NoWidths()
    backbone.num_features = 5  # timm's convention: the width of the pooled features
    assert BYOL(backbone, projector_dim=2, hidden_dim=3).projector[0].in_features == 5
    assert small_byol().projector[0].in_features == 8  # resnet6n2(..., widths=(4, 8, 8)): the last stage's width
