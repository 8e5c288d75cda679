import copy

import pytest
import torch
from torch import nn

from course_utils.data import TensorLoader
from course_utils.interpret import (Field, ablate_filters, ablation_effect, cut_patch, gradient_field, layer_field,
                                    nonzero_box, receptive_field, receptive_field_of_stack, top_activating_patches)
from course_utils.models import resnet6n2


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second thread costs more than it gives (and the tests share the machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


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
    assert _no_hooks(model)


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
    assert _no_hooks(net)


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
    assert torch.equal(net(x), before) and _no_hooks(net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])


def test_ablation_hooks_go_away_when_the_block_raises():
    net = _convnet()
    with pytest.raises(RuntimeError, match="inside"):
        with ablate_filters(net, {"0": [0]}):
            raise RuntimeError("inside")
    assert _no_hooks(net)
    with pytest.raises(ValueError, match="4 filters"):
        with ablate_filters(net, {"0": [4]}):
            pass
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        with ablate_filters(net, {"2": [0], "conv9": [0]}):
            pass
    assert _no_hooks(net)


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


def test_agrees_with_the_hook_based_table_of_course_utils_receptive():
    from course_utils.models.small_vgg import SmallVGG
    from course_utils.receptive import receptive_field_table

    model = SmallVGG(widths=(2, 3, 4))
    table = receptive_field_table(model, (1, 1, 28, 28))
    for row in table.to_dict("records"):
        f = receptive_field(model, row["layer"])
        assert (f.size[0], f.jump[0]) == (row["receptive field"], row["jump"]), row["layer"]


def test_max_responses_are_the_spatial_maxima_of_each_channel():
    from course_utils.interpret import max_responses

    torch.manual_seed(0)
    net = _net().eval()
    x = torch.randn(7, 1, 24, 24)
    got = max_responses(net, ["1", "7"], x, batch_size=3)
    assert got["1"].shape == (7, 3) and got["7"].shape == (7, 2)
    with torch.no_grad():
        torch.testing.assert_close(got["1"], net[:2](x).amax((2, 3)))
        torch.testing.assert_close(got["7"], net(x).amax((2, 3)))
    assert _no_hooks(net)


def test_class_selectivity_counts_the_most_common_class_among_the_top_images():
    from course_utils.interpret import class_selectivity

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    responses = torch.tensor([[9.0, 9.0], [8.0, 1.0], [1.0, 8.0], [2.0, 2.0], [3.0, 7.0], [0.0, 3.0]])
    # filter 0: top 3 images 0, 1, 4 -> classes 0, 0, 2; filter 1: images 0, 2, 4 -> classes 0, 1, 2
    torch.testing.assert_close(class_selectivity(responses, labels, top=3), torch.tensor([2 / 3, 1 / 3]))
    with pytest.raises(ValueError, match="top"):
        class_selectivity(responses, labels, top=7)
