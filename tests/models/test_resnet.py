from functools import partial

import pytest
import torch
from torch import nn

from course_utils.models.resnet import count_weighted_layers, reference_resnet, resnet6n2
from course_utils.layers.norms import NORMS, GroupNorm


@pytest.mark.parametrize("n, layers", [(1, 8), (2, 14), (3, 20)])
def test_resnet_has_6n_plus_2_weighted_layers(n, layers):
    model = resnet6n2(n, 10)
    assert count_weighted_layers(model) == layers == 6 * n + 2
    assert sum(len(s) for s in (model.stage1, model.stage2, model.stage3)) == 3 * n  # 3n blocks of 2 convs


def test_shapes_and_feature_head_split():
    model = resnet6n2(2, 7, in_channels=3).eval()
    x = torch.randn(2, 3, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 7, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.stage1(model.stem(x)).shape == (2, 16, 28, 28)
    assert model.stage2(model.stage1(model.stem(x))).shape == (2, 32, 14, 14)


def test_residual_connections_skip_stem_and_output():
    model = resnet6n2(1, 10)
    for block in (model.stage1[0], model.stage2[0], model.stage3[0]):
        for p in block.parameters():
            nn.init.zeros_(p)  # F(x) = 0, so each block is relu(shortcut(x))
    x = torch.rand(1, 16, 28, 28)
    out = model.stage3(model.stage2(model.stage1(x)))
    assert torch.equal(out[:, :16], x[:, :, ::4, ::4]) and out[:, 16:].abs().max() == 0


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_every_norm_builds_and_trains_a_step(norm):
    torch.manual_seed(0)
    model = resnet6n2(1, 10, norm=norm)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.named_parameters():  # the gradient reaches every parameter
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == (norm == "none") for c in convs)
    # ResNet-8 by hand: 7 convs (3x3) + their norms (2 per channel; BIN adds rho) + the linear layer
    convs_w = 9 * (1 * 16 + 2 * 16 * 16 + 16 * 32 + 32 * 32 + 32 * 64 + 64 * 64)
    channels = 16 + 2 * 16 + 2 * 32 + 2 * 64
    per_channel = {"none": 1, "bin": 3}.get(norm, 2)  # conv bias / gamma, beta / gamma, beta, rho
    assert _n_params(model) == convs_w + per_channel * channels + 64 * 10 + 10
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad
        assert nn.functional.cross_entropy(model(x), y) < loss  # one SGD step lowers the batch's loss
    model.eval()  # in eval mode an image's output does not depend on the rest of the batch
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", [nn.Identity, partial(GroupNorm, num_groups=4), nn.BatchNorm2d])
def test_norm_given_as_a_class_or_partial(norm):
    model = resnet6n2(1, 10, norm=norm)
    identity = norm is nn.Identity
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == identity for c in convs)  # a bias only where no norm follows
    assert _n_params(model) == _n_params(resnet6n2(1, 10, norm="none" if identity else "bn"))
    built = type(norm()) if identity else (norm.func if isinstance(norm, partial) else norm)
    assert type(model.stage2[0].norm1) is built and type(model.stem[1]) is built


def test_num_features_and_zeropad_shortcuts():
    model = resnet6n2(1, 10, widths=(8, 16, 24))
    assert model.num_features == 24 == model.fc.in_features
    assert isinstance(model.stage1[0].shortcut, nn.Identity)
    assert [type(model.stage2[0].shortcut).__name__, type(model.stage3[0].shortcut).__name__] == ["ShortcutA"] * 2
    assert model.forward_head(model.forward_features(torch.randn(2, 1, 28, 28)), pre_logits=True).shape == (2, 24)


def test_norm_as_callable_and_errors():
    model = resnet6n2(1, 10, norm=partial(GroupNorm, num_groups=4))
    assert model.stage1[0].norm1.num_groups == 4
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        resnet6n2(0, 10)
    with pytest.raises(ValueError, match="Unknown norm 'batch'"):
        resnet6n2(1, 10, norm="batch")


def test_reference_resnet_parameter_count():
    assert sum(p.numel() for p in reference_resnet().parameters()) == 172218
