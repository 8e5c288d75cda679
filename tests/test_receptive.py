import pytest
import torch
from torch import nn

from course_utils.models import VGGResNet
from course_utils.receptive import gradient_support, receptive_field, receptive_field_table


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
def test_formula_matches_the_gradient_support(layers, expected):
    model = positive(nn.Sequential(*layers))
    assert receptive_field(model, (1, 1, 64, 64)) == expected
    assert gradient_support(model, (1, 1, 64, 64)) == expected


def test_vggresnet_receptive_fields():
    # stride: stem 3, stride-2 conv 5 (jump 2), 3 convs 17, stride-2 conv 21 (jump 4), 3 convs 45
    strided = positive(VGGResNet(2, 4, "stride", act="none", norm="none"))
    assert receptive_field(strided, (1, 1, 28, 28)) == 45
    assert gradient_support(strided.forward_features, (1, 1, 128, 128)) == 45  # the skips see less; the conv path decides
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
    assert gradient_support(model, (1, 1, 32, 32)) == 11
    assert model.training and not model[0]._forward_hooks
    with pytest.raises(ValueError, match="not square"):
        receptive_field_table(nn.Sequential(nn.Conv2d(1, 1, (3, 5))), (1, 1, 16, 16))
    with pytest.raises(ValueError, match="no Conv2d"):
        receptive_field(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 1, 2, 2))
