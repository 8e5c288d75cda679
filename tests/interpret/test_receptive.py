"""Receptive fields: computed by the recurrence (for a stack, through the traced graph, as a table in
forward order) and checked against the input pixels that get a gradient."""

import pytest
import torch
from torch import nn

from tests.conftest import no_hooks
from course_utils.hooks import capture_output
from course_utils.interpret.receptive import (Field, gradient_field, layer_field, nonzero_box, receptive_field,
                                              receptive_field_of_stack, receptive_field_table)
from course_utils.models.resnet import resnet6n2
from course_utils.models.vgg import VGGResNet


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


# ------------------------------------------------------------------------------- receptive fields
def test_stacks_computed_by_hand():
    conv = lambda **kw: nn.Conv2d(1, 1, **kw)  # noqa: E731
    # seed 004's network: two valid 3x3 convs and a 3x3/2 max-pool, three times
    net = [conv(kernel_size=3), conv(kernel_size=3), nn.MaxPool2d(3, 2)] * 3
    sizes = [receptive_field_of_stack(net[:n]).size[0] for n in range(1, 9)]
    assert sizes == [3, 5, 7, 11, 15, 19, 27, 35]
    assert receptive_field_of_stack(net[:8]).jump == (4, 4)
    # ResNet-50's stem: 7x7/2 conv (padding 3) then 3x3/2 max-pool (padding 1): 11 pixels, jump 4
    assert receptive_field_of_stack([conv(kernel_size=7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]) \
        == Field((11, 11), (4, 4), (-5, -5))
    # dilation 2 spreads a 3x3 kernel over 5 pixels; "same" padding keeps the field centred
    assert layer_field(conv(kernel_size=3, dilation=2, padding="same")) == Field((5, 5), (1, 1), (-2, -2))
    assert layer_field(nn.Conv2d(1, 1, (1, 5), stride=(1, 2), padding=(0, 2))) == Field((1, 5), (1, 2), (0, -2))
    with pytest.raises(TypeError, match="Linear"):
        receptive_field_of_stack([conv(kernel_size=3), nn.Linear(3, 3)])


def test_box_of_a_unit():
    f = Field((10, 10), (2, 2), (-4, -4))
    assert f.box(0, 0) == (-4, -4, 6, 6) and f.box(3, 1) == (2, -2, 12, 8)
    assert str(f) == "10x10 (jump 2, start -4)"


def _net():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 5, stride=2, dilation=1),
                         nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, dilation=2, padding=2), nn.BatchNorm2d(4), nn.GELU(),
                         nn.Conv2d(4, 2, 3, stride=2))


def test_traced_field_equals_the_stack_of_layers():
    net = _net()
    for n in range(1, len(net) + 1):
        assert receptive_field(net, str(n - 1)) == receptive_field_of_stack(list(net[:n]))


def _linearised(model):
    """Make every ReLU pass its input (large positive BN shifts) so the gradient reaches the whole field."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(0.5)
            m.bias.data.fill_(20.0)
    return model.double().eval()


def _clip(box, H, W):
    top, left, bottom, right = box
    return max(top, 0), max(left, 0), min(bottom, H), min(right, W)


@pytest.mark.parametrize("unit", ["centre", "corner"])
def test_field_matches_the_gradient_of_one_unit(unit):
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Identity() if isinstance(m, (nn.ReLU, nn.GELU)) else m for m in _net()]).double().eval()
    x = torch.rand(1, 40, 40, dtype=torch.float64)
    for name in ["0", "2", "3", "4", "7"]:
        out = net[: int(name) + 1](x[None])
        pos = (0, 0) if unit == "corner" else (out.shape[2] // 2, out.shape[3] // 2)
        measured = nonzero_box(gradient_field(net, name, x, pos))
        assert measured == _clip(receptive_field(net, name).box(*pos), 40, 40), name


def test_resnet_field_is_the_longest_path_and_matches_the_gradient():
    torch.manual_seed(0)
    model = _linearised(resnet6n2(1, 3, norm="torch_bn", widths=(2, 4, 4)))
    # 3x3 stem, two 3x3 convs per block, stride 2 at the first conv of stages 2 and 3
    expected = {"stem": 3, "stage1": 7, "stage2.0.conv1": 9, "stage2": 13, "stage3": 25}
    x = torch.rand(1, 40, 40, dtype=torch.float64)
    for name, size in expected.items():
        f = receptive_field(model, name)
        assert f.size == (size, size), name
        for pos in [(0, 0), (5, 4)]:
            assert nonzero_box(gradient_field(model, name, x, pos)) == _clip(f.box(*pos), 40, 40), (name, pos)
    assert receptive_field(model, "stage3").jump == (4, 4)
    assert no_hooks(model)


def test_branches_with_a_projection_shortcut():
    class Block(nn.Module):  # torchvision-style down-sampling block: 1x1/2 conv shortcut
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, padding=1)
            self.down = nn.Conv2d(1, 2, 1, stride=2)

        def forward(self, x):
            return torch.cat([self.conv2(self.conv1(x)) + self.down(x), x[:, :, ::2, ::2]], 1)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), Block()).double()
    f = receptive_field(net, "1")
    assert f == Field((9, 9), (2, 2), (-4, -4))  # stem 3, main path 3 + 2 = 5 (then jump 2), 5 + 2 * 2 = 9
    x = torch.rand(1, 20, 20, dtype=torch.float64)
    assert nonzero_box(gradient_field(net, "1", x, (4, 5))) == f.box(4, 5)

    class Max(nn.Module):  # an element-wise max of two branches: the union of their fields
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5, padding=1)

        def forward(self, x):
            return torch.max(self.a(x), self.b(x))

    net = nn.Sequential(Max(), nn.AdaptiveMaxPool2d(1))
    assert receptive_field(net, "0") == Field((5, 5), (1, 1), (-1, -1))
    with pytest.raises(ValueError, match="mixes all positions"):
        receptive_field(net, "1")


def test_receptive_field_explains_what_it_cannot_do():
    model = resnet6n2(1, 3, norm="torch_bn", widths=(2, 4, 4))
    with pytest.raises(ValueError, match="no layer 'stage4'.*stage1.0.conv1"):
        receptive_field(model, "stage4")
    with pytest.raises(ValueError, match="mean over dims"):
        receptive_field(model, "fc")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(TypeError, match="receptive_field_of_stack"):
        receptive_field(Branchy(), "conv")


# -------------------------------------------------------------------- the table, in forward order
# With all-positive weights (so every ReLU is on) and no max-pooling (whose gradient reaches only the
# maximum), the field measured by gradients equals the computed one, as long as the input does not clip it.


def gradient_side(model, layer, size):
    """Rows of a ``size`` x ``size`` input of ones on which the centre unit of ``layer`` has a non-zero gradient."""
    x = torch.ones(1, size, size)
    with capture_output(model.get_submodule(layer)) as out, torch.no_grad():
        model(x[None])
    top, _, bottom, _ = nonzero_box(gradient_field(model, layer, x, (out[0].shape[2] // 2, out[0].shape[3] // 2)))
    return bottom - top


def positive(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.1)
    return model


@pytest.mark.parametrize("layers, expected", [
    ([nn.Conv2d(1, 2, 3, padding=1)], 3),
    ([nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)], 5),  # two 3x3 see as much as one 5x5
    ([nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, padding=1)], 3 + 2 * 2),
    ([nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, padding=1)], 3 + 1 + 2 * 2),
    ([nn.Conv2d(1, 2, 5, padding=2), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3)],
     5 + 1 + 2 * 2 + 2 * 4),
])
def test_table_matches_the_gradient_support(layers, expected):
    model = positive(nn.Sequential(*layers))
    assert receptive_field_table(model, (1, 1, 64, 64))["receptive field"].iloc[-1] == expected
    assert gradient_side(model, str(len(layers) - 1), 64) == expected


def test_vggresnet_receptive_fields():
    # stride: stem 3, stride-2 conv 5 (jump 2), 3 convs 17, stride-2 conv 21 (jump 4), 3 convs 45
    strided = positive(VGGResNet(2, 4, "stride", act="none", norm="none"))
    last = receptive_field_table(strided, (1, 1, 28, 28)).iloc[-1]
    assert last["receptive field"] == 45 and last["jump"] == 4
    assert gradient_side(strided, last["layer"], 128) == 45  # the skips see less; the conv path decides
    # max-pool: stem 3, pool 4 (jump 2), 4 convs 20, pool 22 (jump 4), 4 convs 54
    table = receptive_field_table(VGGResNet(2, 4, "maxpool"), (1, 1, 28, 28))
    assert table["receptive field"].tolist() == [3, 4, 8, 12, 16, 20, 22, 30, 38, 46, 54]
    assert table["receptive field"].iloc[-1] == 54 and table["jump"].iloc[-1] == 4
    assert table["output size"].tolist()[:2] == [28, 14] and table["output size"].iloc[-1] == 7
    assert table["type"].tolist().count("MaxPool2d") == 2


def test_errors_and_mode_restored():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=3)).train()
    table = receptive_field_table(model, (1, 1, 16, 16))  # dilated: spans 5 and 7, field 5 + 6 = 11
    assert table["kernel"].tolist() == [5, 7] and table["receptive field"].tolist() == [5, 11]
    assert model.training and no_hooks(model)
    assert gradient_side(positive(model), "1", 32) == 11
    assert model.training and no_hooks(model)
    with pytest.raises(ValueError, match="not square"):
        receptive_field_table(nn.Sequential(nn.Conv2d(1, 1, (3, 5))), (1, 1, 16, 16))
