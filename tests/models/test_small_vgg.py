from functools import partial

import pytest
import torch
from torch import nn

from course_utils.interpret.maps import cam
from course_utils.interpret.receptive import receptive_field
from course_utils.layers.norms import GroupNorm
from course_utils.models.small_vgg import SmallVGG


def test_shapes_and_parameter_count():
    model = SmallVGG()
    # convs: 3*3*cin*cout + cout each; fc: 128*10 + 10
    convs = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    assert sum(p.numel() for p in model.parameters()) == sum(9 * a * b + b for a, b in convs) + 1290 == 287722
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, 128, 7, 7)
    assert model(x).shape == (2, 10)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    assert model.forward_features(torch.randn(1, 1, 56, 56)).shape == (1, 128, 14, 14)  # any input size
    assert model.conv_names == [f"features.conv{i}" for i in range(1, 7)]


def test_receptive_fields_of_the_named_layers():
    model = SmallVGG()
    sizes = {name: receptive_field(model, f"features.{name}").size[0] for name in
             ["conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5", "conv6"]}
    assert sizes == {"conv1": 3, "conv2": 5, "pool1": 6, "conv3": 10, "conv4": 14, "pool2": 16, "conv5": 24, "conv6": 32}


def test_norm_variant_and_cam():
    model = SmallVGG(widths=(4, 8), num_classes=3, in_channels=3, norm="torch_bn")
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert "pool2" not in dict(model.features.named_children())  # no pool after the last stage
    assert cam(model, torch.randn(2, 3, 12, 12), 1).shape == (2, 6, 6)
    with pytest.raises(ValueError, match="widths"):
        SmallVGG(widths=())


@pytest.mark.parametrize("norm", ["none", nn.Identity, partial(GroupNorm, num_groups=2), "bn"])
def test_norm_as_name_class_or_partial(norm):
    model = SmallVGG(widths=(4, 8), norm=norm)
    identity = norm == "none" or norm is nn.Identity
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == identity for c in convs)
    names = dict(model.features.named_children())
    assert ("norm1" in names) != identity  # an identity norm adds no layer: the layer names stay conv/relu/pool
    n = sum(p.numel() for p in model.parameters())
    assert n == (9 * 4 + 9 * 16 + 9 * 32 + 9 * 64) + (1 if identity else 2) * (4 + 4 + 8 + 8) + 8 * 10 + 10
    assert model.num_features == 8 == model.fc.in_features
