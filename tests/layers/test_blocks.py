"""The one residual block and its shortcut options, the conv-norm bias rule, the one Kaiming initialisation."""

from functools import partial

import pytest
import torch
from torch import nn

from course_utils.layers.blocks import BasicBlock, ShortcutA, conv_norm, kaiming_init, make_shortcut
from course_utils.layers.deform import DeformConv2d
from course_utils.layers.norms import GroupNorm


@pytest.mark.parametrize("norm, bias", [("bn", False), ("torch_bn", False), ("none", True), (nn.Identity, True),
                                        (partial(GroupNorm, num_groups=2), False), (nn.BatchNorm2d, False)])
def test_conv_has_a_bias_only_before_an_identity_norm(norm, bias):
    conv, norm_layer = conv_norm(4, 6, 3, norm=norm)
    assert (conv.bias is not None) == bias == isinstance(norm_layer, nn.Identity)
    assert conv.padding == (1, 1) and conv.kernel_size == (3, 3)
    assert conv_norm(4, 6, 3, dilation=2, norm=norm)[0].padding == (2, 2)  # atrous: the size is kept
    assert conv_norm(4, 6, 1, stride=2, norm=norm)[0].padding == (0, 0)


def test_conv_norm_builds_deformable_convs_too():
    conv, norm_layer = conv_norm(2, 3, 3, norm="none", conv=partial(DeformConv2d, backend="reference"))
    assert isinstance(conv, DeformConv2d) and conv.bias is not None and conv.backend == "reference"
    assert conv(torch.randn(1, 2, 5, 5)).shape == (1, 3, 5, 5)


@pytest.mark.parametrize("kind, stride, cout, expected", [
    ("zeropad", 1, 4, nn.Identity), ("projection", 1, 4, nn.Identity), ("identity", 1, 4, nn.Identity),
    ("zeropad", 2, 8, ShortcutA), ("projection", 2, 8, nn.Sequential), ("projection", 1, 8, nn.Sequential),
    ("none", 2, 8, type(None)), ("none", 1, 4, type(None)),
])
def test_make_shortcut_matches_the_shape_only_where_it_changes(kind, stride, cout, expected):
    sc = make_shortcut(kind, 4, cout, stride)
    assert isinstance(sc, expected)
    if sc is not None:
        assert sc(torch.randn(2, 4, 6, 6)).shape == (2, cout, 6 // stride, 6 // stride)


def test_zeropad_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 3, 6, 6)
    out = ShortcutA(3, 5, 2)(x)
    assert torch.equal(out[:, :3], x[:, :, ::2, ::2]) and out[:, 3:].abs().max() == 0
    assert sum(p.numel() for p in ShortcutA(3, 5, 2).parameters()) == 0


def test_bad_shortcuts_are_explained():
    with pytest.raises(ValueError, match="shortcut must be one of"):
        make_shortcut("option_b", 4, 8, 2)
    with pytest.raises(ValueError, match="identity shortcut cannot"):
        make_shortcut("identity", 4, 8, 2)
    with pytest.raises(ValueError, match="cannot reduce"):
        make_shortcut("zeropad", 8, 4, 1)


@pytest.mark.parametrize("shortcut", ["projection", "zeropad", "none"])
def test_block_matches_its_formula(shortcut):
    torch.manual_seed(0)
    block = BasicBlock(3, 5, stride=2, shortcut=shortcut).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        inner = block.norm2(block.conv2(torch.relu(block.norm1(block.conv1(x)))))
        skip = 0 if block.shortcut is None else block.shortcut(x)
        torch.testing.assert_close(block(x), torch.relu(inner + skip))
    assert block(x).shape == (2, 5, 4, 4)
    assert [n for n, _ in block.named_children()] == ["conv1", "norm1", "act1", "conv2", "norm2", "act2"] + \
        ([] if shortcut == "none" else ["shortcut"])


def test_block_parameter_counts_by_hand():
    conv_bn = lambda cin, cout, k=3: k * k * cin * cout + 2 * cout  # noqa: E731
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(BasicBlock(4, 8, 2, "projection")) == conv_bn(4, 8) + conv_bn(8, 8) + conv_bn(4, 8, 1) == 944
    assert n(BasicBlock(4, 8, 2, "zeropad")) == n(BasicBlock(4, 8, 2, "none")) == conv_bn(4, 8) + conv_bn(8, 8)
    assert n(BasicBlock(4, 8, 2, "projection", norm="none")) == (9 * 32 + 8) + (9 * 64 + 8) + (32 + 8)


def test_block_takes_norm_act_and_dilation_as_layers():
    block = BasicBlock(4, 4, norm=partial(GroupNorm, num_groups=2), act=nn.SiLU, dilation=2)
    assert isinstance(block.norm1, GroupNorm) and block.norm1.num_groups == 2
    assert isinstance(block.act1, nn.SiLU) and isinstance(block.act2, nn.SiLU)
    assert block.conv1.dilation == (2, 2) and block.conv1.bias is None
    block(torch.randn(2, 4, 9, 9)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_zeroed_residual_branch_passes_the_shortcut_through():
    block = BasicBlock(4, 4, shortcut="identity")
    nn.init.zeros_(block.norm2.weight)  # F(x) = 0: the block is relu(x)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_kaiming_init_draws_fan_out_normal_weights_and_zero_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 64, 3), nn.Linear(3, 3), nn.Conv2d(64, 32, 1))
    linear_before = model[1].weight.clone()
    kaiming_init(model)
    for conv in (model[0], model[2]):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1
        assert conv.bias.abs().max() == 0
    assert torch.equal(model[1].weight, linear_before)  # only convolutions
