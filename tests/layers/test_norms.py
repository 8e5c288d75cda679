"""Each from-scratch normalization layer against its PyTorch counterpart: forward, gradients, running stats."""

import pytest
import torch
from torch import nn

from course_utils.layers.norms import (NORMS, BatchInstanceNorm2d, BatchNorm2d, GroupNorm, InstanceNorm2d,
                                       LayerNorm2d, make_norm)

SHAPES = [(4, 6, 5, 5), (2, 8, 7, 3), (16, 4, 1, 1)]


def _randomize_affine(*mods):
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(mods[0].weight.shape, generator=g), torch.randn(mods[0].bias.shape, generator=g)
    for m in mods:
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)


def _compare(ours, theirs, x):
    """Forward outputs and gradients w.r.t. input, weight and bias agree (in float64, so that tiny
    groups such as 2 values per group are compared without float32 round-off)."""
    ours.double(), theirs.double()
    x = x.double()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-4, atol=1e-5)
    ours.weight.grad = ours.bias.grad = theirs.weight.grad = theirs.bias.grad = None


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_train_eval_and_running_stats(shape):
    C = shape[1]
    ours, theirs = BatchNorm2d(C, momentum=0.2), nn.BatchNorm2d(C, momentum=0.2)
    _randomize_affine(ours, theirs)
    for step in range(4):  # several training steps update the running estimates identically
        x = torch.randn(shape) * (step + 1) + step
        _compare(ours, theirs, x)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.float(), theirs.float()
    x = torch.randn(shape)  # float32 as well
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert ours.num_batches_tracked == theirs.num_batches_tracked == 5
    ours.eval(), theirs.eval()
    _compare(ours, theirs, torch.randn(shape) * 3)
    # same state_dict keys: weights load across the two
    assert ours.state_dict().keys() == theirs.state_dict().keys()


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_instancenorm(shape):
    ours, theirs = InstanceNorm2d(shape[1]), nn.InstanceNorm2d(shape[1], affine=True)
    _randomize_affine(ours, theirs)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        _compare(ours, theirs, torch.randn(shape) * 2 + 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", [1, 2])
def test_groupnorm(shape, groups):
    ours, theirs = GroupNorm(shape[1], num_groups=groups), nn.GroupNorm(groups, shape[1])
    _randomize_affine(ours, theirs)
    _compare(ours, theirs, torch.randn(shape) * 2 - 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_is_groupnorm_with_one_group(shape):
    ours, theirs = LayerNorm2d(shape[1]), nn.GroupNorm(1, shape[1])
    _randomize_affine(ours, theirs)
    _compare(ours, theirs, torch.randn(shape) + 3)


def test_batch_instance_norm_limits():
    x = torch.randn(4, 6, 5, 5) * 2 + 1
    bin_, bn, inn = BatchInstanceNorm2d(6), BatchNorm2d(6), InstanceNorm2d(6)
    _randomize_affine(bin_, bn, inn)
    torch.testing.assert_close(bin_(x), bn(x))  # rho = 1: batch norm
    with torch.no_grad():
        bin_.rho.zero_()
    torch.testing.assert_close(bin_(x), inn(x))  # rho = 0: instance norm
    with torch.no_grad():
        bin_.rho.fill_(0.3)
    bn2 = BatchNorm2d(6)
    _randomize_affine(bn2)
    x_bn = (bn2(x) - bn2.bias[None, :, None, None]) / bn2.weight[None, :, None, None]
    x_in = (inn(x) - inn.bias[None, :, None, None]) / inn.weight[None, :, None, None]
    expected = (0.3 * x_bn + 0.7 * x_in) * bin_.weight[None, :, None, None] + bin_.bias[None, :, None, None]
    torch.testing.assert_close(bin_(x), expected, rtol=1e-4, atol=1e-5)


def test_batch_instance_gate_is_clipped_and_learns():
    layer = BatchInstanceNorm2d(3)
    with torch.no_grad():
        layer.rho.copy_(torch.tensor([1.7, -0.4, 0.5]))
    layer(torch.randn(2, 3, 4, 4))
    assert layer.rho.tolist() == [1.0, 0.0, 0.5]
    x = torch.randn(2, 3, 4, 4)
    (layer(x) * torch.randn(2, 3, 4, 4)).sum().backward()
    assert layer.rho.grad is not None and layer.rho.grad.abs().sum() > 0
    y = layer(x) + layer(x)  # two forwards before one backward must not break the graph
    y.sum().backward()


def test_reset_parameters_and_errors():
    layer = GroupNorm(8, num_groups=4)
    with torch.no_grad():
        layer.weight.mul_(3)
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(8))
    with pytest.raises(ValueError, match="must divide num_channels=6"):
        GroupNorm(6, num_groups=4)
    with pytest.raises(ValueError, match=r"expects \(N, 4, H, W\)"):
        BatchNorm2d(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="Unknown norm"):
        make_norm("batchnorm", 4)
    assert set(NORMS) == {"bn", "in", "bin", "ln", "gn", "none", "torch_bn"}
    assert isinstance(make_norm("none", 4), nn.Identity)


def test_repr_shows_channels_and_eps():
    ours, theirs = BatchNorm2d(6, eps=1e-3), nn.BatchNorm2d(6, eps=1e-3)
    assert repr(ours) == "BatchNorm2d(6, eps=0.001, affine=True)"
    assert repr(theirs).startswith("BatchNorm2d(6, eps=0.001, ")  # PyTorch's also lists momentum and tracking
    for cls in (InstanceNorm2d, LayerNorm2d, BatchInstanceNorm2d):
        assert repr(cls(6)) == f"{cls.__name__}(6, eps=1e-05, affine=True)"
    assert repr(GroupNorm(8, num_groups=4)) == "GroupNorm(8, num_groups=4, eps=1e-05, affine=True)"


def test_activations_by_name_or_callable():
    from course_utils.layers.norms import ACTIVATIONS, is_identity, make_act

    assert sorted(ACTIVATIONS) == ["gelu", "none", "relu"]
    assert isinstance(make_act("gelu"), nn.GELU) and isinstance(make_act(nn.SiLU), nn.SiLU)
    assert is_identity(make_act("none")) and not is_identity(make_act("relu"))
    assert make_act(lambda: nn.LeakyReLU(0.2)).negative_slope == 0.2
    with pytest.raises(ValueError, match="Unknown activation 'tanh'"):
        make_act("tanh")
    with pytest.raises(TypeError, match="act must be a name or a callable"):
        make_act(3)
