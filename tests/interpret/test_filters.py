"""Filters: top-activating patches (cut with the receptive field), maximal responses, class selectivity,
and filter ablation by hooks."""

import copy
import math

import pytest
import torch
from torch import nn

from tests.conftest import no_hooks
from course_utils.interpret.filters import (ablate_filters, ablation_effect, border_share, class_selectivity, cut_patch,
                                            max_responses, top_activating_patches)
from course_utils.interpret.receptive import Field
from course_utils.loader import TensorLoader


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


# ---------------------------------------------------------------------------------- top patches
def test_top_patches_are_the_largest_responses_and_reproduce_them():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.Flatten(),
                        nn.LazyLinear(2))
    images = torch.randn(11, 1, 14, 14)
    net(images)
    top = top_activating_patches(net, "3", 2, images, k=5, batch_size=4)
    with torch.no_grad():
        resp = net[:4](images)[:, 2]  # (N, 3, 3)
    torch.testing.assert_close(top.values, resp.flatten().topk(5).values)
    assert top.field == Field((8, 8), (2, 2), (0, 0)) and top.patches.shape == (5, 1, 8, 8)
    for v, n, (i, j), patch in zip(top.values, top.image_idx, top.positions, top.patches):
        assert resp[n, i, j] == v
        t, l = 2 * i, 2 * j
        assert torch.equal(patch, images[n, :, t:t + 8, l:l + 8])
        with torch.no_grad():  # the unit sees exactly its patch: the layer on the patch alone gives the value
            torch.testing.assert_close(net[:4](patch[None])[0, 2, 0, 0], v)
    assert no_hooks(net)


def test_patches_reaching_into_the_padding_are_filled():
    img = torch.arange(16.0).reshape(1, 4, 4)
    p = cut_patch(img, (-1, 2, 2, 5), fill=-9.0)
    assert p.tolist() == [[[-9, -9, -9], [2, 3, -9], [6, 7, -9]]]


# --------------------------------------------------------------------------------------- ablation
def _convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


def test_ablation_equals_zeroed_weights_and_bias_and_restores_exactly():
    net = _convnet()
    x = torch.randn(6, 1, 8, 8)
    before = net(x).detach()
    state = copy.deepcopy(net.state_dict())
    zeroed = copy.deepcopy(net)
    with torch.no_grad():
        for layer, idx in ((zeroed[0], [1]), (zeroed[2], [0, 3])):
            layer.weight[idx] = 0
            layer.bias[idx] = 0
    with ablate_filters(net, {"0": [1], "2": [0, 3]}) as same:
        assert same is net
        torch.testing.assert_close(net(x), zeroed(x))
        assert not torch.equal(net(x), before)
    assert torch.equal(net(x), before) and no_hooks(net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])


def test_ablation_hooks_go_away_when_the_block_raises():
    net = _convnet()
    with pytest.raises(RuntimeError, match="inside"):
        with ablate_filters(net, {"0": [0]}):
            raise RuntimeError("inside")
    assert no_hooks(net)
    with pytest.raises(ValueError, match="4 filters"):
        with ablate_filters(net, {"0": [4]}):
            pass
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        with ablate_filters(net, {"2": [0], "conv9": [0]}):
            pass
    assert no_hooks(net)


def test_ablation_effect_counts_misses():
    net = _convnet()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    loader = TensorLoader(x, y, 16)
    with torch.no_grad():
        before = net(x).argmax(1)
        with ablate_filters(net, {"2": [0, 1, 2]}):
            after = net(x).argmax(1)
    eff = ablation_effect(net, {"2": [0, 1, 2]}, loader)
    assert eff.accuracy == pytest.approx((before == y).float().mean().item())
    assert eff.new_accuracy == pytest.approx((after == y).float().mean().item())
    assert eff.missed.tolist() == ((before == y) & (after != y)).nonzero().flatten().tolist()
    assert eff.misses == len(eff.missed)
    with pytest.raises(ValueError, match="shuffle=False"):
        ablation_effect(net, {"2": [0]}, TensorLoader(x, y, 16, shuffle=True))


def _net():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 5, stride=2, dilation=1),
                         nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, dilation=2, padding=2), nn.BatchNorm2d(4), nn.GELU(),
                         nn.Conv2d(4, 2, 3, stride=2))


def test_max_responses_are_the_spatial_maxima_of_each_channel():
    torch.manual_seed(0)
    net = _net().eval()
    x = torch.randn(7, 1, 24, 24)
    got = max_responses(net, ["1", "7"], x, batch_size=3)
    assert got["1"].shape == (7, 3) and got["7"].shape == (7, 2)
    with torch.no_grad():
        torch.testing.assert_close(got["1"], net[:2](x).amax((2, 3)))
        torch.testing.assert_close(got["7"], net(x).amax((2, 3)))
    assert no_hooks(net)


def test_class_selectivity_counts_the_most_common_class_among_the_top_images():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    responses = torch.tensor([[9.0, 9.0], [8.0, 1.0], [1.0, 8.0], [2.0, 2.0], [3.0, 7.0], [0.0, 3.0]])
    # filter 0: top 3 images 0, 1, 4 -> classes 0, 0, 2; filter 1: images 0, 2, 4 -> classes 0, 1, 2
    torch.testing.assert_close(class_selectivity(responses, labels, top=3), torch.tensor([2 / 3, 1 / 3]))
    with pytest.raises(ValueError, match="top"):
        class_selectivity(responses, labels, top=7)


# ---------------------------------------------------------------------------------- border share
def test_border_share_of_a_constant_filter_is_the_share_of_border_units():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 0.0]))
    net = nn.Sequential(conv)
    share, units = border_share(net, "0", 0, torch.randn(3, 1, 10, 10), batch_size=2)
    assert units == pytest.approx((100 - 64) / 100)  # the ring of units whose 3x3 field crosses the border
    assert share == pytest.approx(units)  # a response blind to the border
    assert math.isnan(border_share(net, "0", 1, torch.randn(2, 1, 10, 10))[0])  # no response at all


def test_border_share_of_a_filter_that_sees_the_padding():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU())
    bright = torch.ones(2, 1, 8, 8)
    with torch.no_grad():
        conv.weight.fill_(-1.0)
        conv.bias.fill_(8.5)  # fires only where some of its 3x3 field is zero padding: -9 + 8.5 < 0 inside
    share, units = border_share(net, "1", 0, bright)
    assert share == pytest.approx(1.0) and units == pytest.approx(28 / 64)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-8.5)  # fires only where all nine pixels are image
    assert border_share(net, "1", 0, bright)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="out of range"):
        border_share(net, "1", 3, bright)
