"""DeformConv2d and the Chapter 3 models: shapes, parameter counts, start as regular convs, backends agree."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.models import DeformConv2d, PairClassifier, TwoBlockCNN


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_deform_conv_starts_as_a_regular_conv(modulated, stride, padding):
    layer = DeformConv2d(3, 5, 3, stride=stride, padding=padding, modulated=modulated)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.zero_()
        layer.bias.zero_()
    x = torch.randn(2, 3, 9, 9)
    offset, mask = layer.offsets(x)
    assert offset.abs().max() == 0  # zero-initialised offset predictor: the regular grid
    expected = conv(x)
    if modulated:
        torch.testing.assert_close(mask, torch.full_like(mask, 0.5))  # sigmoid(0), DCNv2's start
        expected = 0.5 * expected
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_initialisation_matches_nn_conv2d_statistics():
    torch.manual_seed(0)
    layer, conv = DeformConv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
    assert abs(layer.weight.std().item() / conv.weight.std().item() - 1) < 0.05
    assert layer.bias.abs().max() <= 1 / (64 * 9) ** 0.5


@pytest.mark.parametrize("modulated", [False, True])
def test_backends_agree_on_outputs_and_gradients(modulated):
    torch.manual_seed(1)
    a = DeformConv2d(4, 6, 3, stride=2, padding=1, modulated=modulated, backend="torchvision").double()
    nn.init.normal_(a.offset_conv.weight, std=0.5)  # move the points off the grid, some outside the image
    nn.init.normal_(a.offset_conv.bias, std=1.0)
    b = DeformConv2d(4, 6, 3, stride=2, padding=1, modulated=modulated, backend="reference").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4, 11, 10, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=lambda m: f"{name}: {m}")


def test_deform_conv_parameter_count_and_errors():
    layer = DeformConv2d(32, 64, 3, padding=1, bias=False)
    assert n_params(layer) == 32 * 64 * 9 + (32 * 18 * 9 + 18)
    assert n_params(DeformConv2d(32, 64, 3, padding=1, modulated=True)) == 32 * 64 * 9 + 64 + (32 * 27 * 9 + 27)
    with pytest.raises(ValueError, match="backend must be one of"):
        DeformConv2d(1, 1, 3, backend="cuda")
    with pytest.raises(ValueError, match="kernel_size and stride must be >= 1"):
        DeformConv2d(1, 1, 0)


@pytest.mark.parametrize("deformable", [False, True])
def test_two_block_cnn_shapes_and_counts(deformable):
    model = TwoBlockCNN(deformable=deformable).eval()
    x = torch.randn(4, 1, 28, 28)
    assert model.forward_features(x).shape == (4, 64, 7, 7)
    assert model(x).shape == (4, 10)
    regular = 1 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64 + 64 * 49 * 10 + 10
    offsets = (1 * 18 * 9 + 18) + (32 * 18 * 9 + 18)
    assert n_params(model) == regular + (offsets if deformable else 0)
    assert sum(isinstance(m, DeformConv2d) for m in model.modules()) == (2 if deformable else 0)


def test_deformable_cnn_equals_the_regular_one_at_initialisation():
    torch.manual_seed(0)
    regular, deform = TwoBlockCNN(), TwoBlockCNN(deformable=True)
    missing = deform.load_state_dict(regular.state_dict(), strict=False)  # the same names, plus offset_conv
    assert all("offset_conv" in k for k in missing.missing_keys) and not missing.unexpected_keys
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(deform.eval()(x), regular.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("deform_last", [False, True])
def test_pair_classifier_shapes_shortcuts_and_counts(deform_last):
    model = PairClassifier(deformable_last_stage=deform_last).eval()
    x = torch.randn(2, 2, 28, 28)
    assert model.forward_features(x).shape == (2, 128, 7, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    assert model(x).shape == (2, 7)
    assert isinstance(model.stage1[0].shortcut, nn.Identity)  # 32 -> 32 at stride 1: nothing to match
    for stage, (cin, cout) in ((model.stage2, (32, 64)), (model.stage3, (64, 128))):
        conv = stage[0].shortcut[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.padding == (0, 0)
        assert (conv.in_channels, conv.out_channels, conv.stride) == (cin, cout, (2, 2))
    deform = [m for m in model.modules() if isinstance(m, DeformConv2d)]
    assert len(deform) == (2 if deform_last else 0)
    assert all(d in list(model.stage3.modules()) for d in deform)
    base = PairClassifier()
    extra = (64 * 18 * 9 + 18) + (128 * 18 * 9 + 18)
    assert n_params(model) == n_params(base) + (extra if deform_last else 0)


def test_pair_classifier_residual_block_adds_the_shortcut():
    model = PairClassifier(blocks=2)
    block = model.stage2[1]  # 64 -> 64, identity shortcut
    for p in list(block.conv1.parameters()) + list(block.conv2.parameters()) + list(block.bn2.parameters()):
        nn.init.zeros_(p)
    x = torch.rand(2, 64, 14, 14)
    torch.testing.assert_close(block(x), F.relu(x))
    with pytest.raises(ValueError, match="widths must be three"):
        PairClassifier(widths=(8, 16))


def test_models_train_one_step():
    for model, x, y in ((TwoBlockCNN(deformable=True, modulated=True), torch.randn(4, 1, 28, 28), torch.arange(4)),
                        (PairClassifier(deformable_last_stage=True), torch.randn(4, 2, 28, 28), torch.arange(4))):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert torch.isfinite(loss)
        offset_grads = [m.offset_conv.weight.grad for m in model.modules() if isinstance(m, DeformConv2d)]
        assert offset_grads and all(g is not None and g.abs().sum() > 0 for g in offset_grads)


def test_sampling_points_are_the_grid_plus_the_offsets():
    layer = DeformConv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(1, 2, 8, 8)
    pts = layer.sampling_points(x)  # zero offsets: the regular grid
    assert pts.shape == (1, 9, 4, 4, 2)
    assert pts[0, 0, 0, 0].tolist() == [-1.0, -1.0] and pts[0, 8, 3, 3].tolist() == [7.0, 7.0]
    assert pts[0, 5, 1, 2].tolist() == [2 - 1 + 1, 4 - 1 + 2]  # kernel point (1, 2) of output (1, 2)
    nn.init.normal_(layer.offset_conv.bias)
    offset, _ = layer.offsets(x)
    moved = layer.sampling_points(x)
    torch.testing.assert_close(moved[0, 4, :, :, 0] - pts[0, 4, :, :, 0], offset[0, 8])  # dy of the centre point
    torch.testing.assert_close(moved[0, 4, :, :, 1] - pts[0, 4, :, :, 1], offset[0, 9])  # dx
