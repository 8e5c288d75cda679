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


def test_pad_value_pads_the_input_once_and_keeps_the_weights():
    torch.manual_seed(0)
    model = SmallVGG((4, 4, 8), norm="torch_bn").eval()
    x = torch.randn(2, 1, 12, 12)
    reference = model(x)
    model.pad_value = 0.0  # zero padding done by hand: the same network
    torch.testing.assert_close(model(x), reference)
    model.pad_value = -0.8
    conv1 = model.features.conv1
    assert conv1.padding == (0, 0)
    by_hand = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), value=-0.8), conv1.weight)
    with torch.no_grad():
        first = []
        handle = conv1.register_forward_hook(lambda m, i, o: first.append(o))
        model(x)
        handle.remove()
        torch.testing.assert_close(first[0], by_hand + conv1.bias.view(1, -1, 1, 1) if conv1.bias is not None
                                   else by_hand)  # the first conv saw the input padded once, with -0.8
        assert not torch.allclose(model(x), reference)
    assert str(receptive_field(model, "features.conv6")) == str(receptive_field(SmallVGG((4, 4, 8)), "features.conv6"))
    model.pad_value = None
    assert conv1.padding == (1, 1)
    torch.testing.assert_close(model(x), reference)
    other = SmallVGG((4, 4, 8), norm="torch_bn", pad_value=-0.8)
    other.load_state_dict(model.state_dict())  # the same parameters whatever the padding
    with pytest.raises(TypeError, match="pad_value"):
        SmallVGG((4,), pad_value="zeros")
