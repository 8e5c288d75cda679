import pytest
import torch
from torch import nn

from course_utils.models import count_weighted_layers, reference_resnet, resnet6n2
from course_utils.norms import NORMS


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


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_every_norm_builds_and_trains_a_step(norm):
    model = resnet6n2(1, 10, norm=norm)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == (norm == "none") for c in convs)


def test_norm_as_callable_and_errors():
    from functools import partial

    from course_utils.norms import GroupNorm
    model = resnet6n2(1, 10, norm=partial(GroupNorm, num_groups=4))
    assert model.stage1[0].norm1.num_groups == 4
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        resnet6n2(0, 10)
    with pytest.raises(ValueError, match="Unknown norm 'batch'"):
        resnet6n2(1, 10, norm="batch")


def test_reference_resnet_parameter_count():
    assert sum(p.numel() for p in reference_resnet().parameters()) == 172218
