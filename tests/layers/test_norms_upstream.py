"""PyTorch's own test cases for the norms, run against the from-scratch layers.

Adapted from pytorch/pytorch ``torch/testing/_internal/common_modules.py`` (``module_inputs_torch_nn_BatchNorm2d``,
``module_inputs_torch_nn_GroupNorm``, ``module_inputs_torch_nn_InstanceNormNd``: the same constructor arguments,
rewritten as keywords since the course's norms take ``num_channels`` first and everything else by keyword),
``test/test_nn.py`` (``test_batchnorm_raises_error_if_less_than_one_value_per_channel``,
``test_groupnorm_raises_error_if_less_than_one_value_per_channel``,
``test_instancenorm_raises_error_if_less_than_one_value_per_channel``, ``test_BatchNorm_empty``,
``test_GroupNorm_empty``, ``test_InstanceNorm2d_general``) and PyTorch's double-precision ``gradcheck`` of every
module input. Each case compares outputs, input/weight/bias gradients and running statistics with ``torch.nn``.
"""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from course_utils.layers.norms import BatchInstanceNorm2d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm2d

# common_modules.py, module_inputs_torch_nn_BatchNorm2d: (constructor args in PyTorch's order, input shape, desc)
BN_INPUTS = [
    (dict(), (2, 3, 6, 6), "default"),
    (dict(eps=1e-3, momentum=None), (2, 3, 6, 6), "2d_simple_average"),
    (dict(eps=1e-3, momentum=0.8), (2, 3, 6, 6), "momentum"),
    (dict(eps=1e-3, momentum=0.8, affine=False), (2, 3, 6, 6), "not_affine"),
    (dict(eps=1e-3, momentum=0.3, affine=False), (0, 3, 2, 2), "zero_batch"),
]
# module_inputs_torch_nn_GroupNorm, its 2-D cases: (num_groups, num_channels, eps[, affine]), input shape
GN_INPUTS = [
    ((3, 6, 1e-3), (4, 6, 2, 3), "2d_affine"),
    ((3, 3, 1e-3, False), (4, 3, 2, 3), "2d_no_affine_IN"),
    ((1, 3, 1e-3, False), (4, 3, 2, 3), "2d_no_affine_LN"),
    ((3, 6, 1e-3), (0, 6, 2, 3), "zero_batch (test_GroupNorm_empty)"),
]
# module_inputs_torch_nn_InstanceNormNd for N=2: eps=1e-3, affine; input (4, 3, 2, 3) and (0, 3, 2, 3)
IN_INPUTS = [((4, 3, 2, 3), "affine"), ((0, 3, 2, 3), "zero_batch")]


def _pair(ours, theirs, seed=0):
    """Give both the same random affine parameters (upstream draws them at random too)."""
    g = torch.Generator().manual_seed(seed)
    if getattr(theirs, "weight", None) is not None:
        w, b = torch.randn(theirs.weight.shape, generator=g), torch.randn(theirs.bias.shape, generator=g)
        with torch.no_grad():
            for m in (ours, theirs):
                m.weight.copy_(w)
                m.bias.copy_(b)
    return ours.double(), theirs.double()


def _same_step(ours, theirs, shape, seed):
    """One forward/backward through both in float64: outputs and every gradient agree."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 1
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2)
    g = torch.randn(y1.shape, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for name in ("weight", "bias"):
        a, b = getattr(ours, name), getattr(theirs, name)
        if b is not None:
            torch.testing.assert_close(a.grad, b.grad)
            assert torch.isfinite(a.grad).all()
            a.grad = b.grad = None


@pytest.mark.parametrize("kwargs,shape,desc", BN_INPUTS, ids=[c[2] for c in BN_INPUTS])
def test_batchnorm2d_module_inputs(kwargs, shape, desc):
    C = shape[1]
    ours, theirs = _pair(BatchNorm2d(C, **kwargs), nn.BatchNorm2d(C, **kwargs))
    for step in range(3):  # training: running statistics (exponential or cumulative average) stay equal
        _same_step(ours, theirs, shape, step)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
        assert ours.num_batches_tracked == theirs.num_batches_tracked
    ours.eval(), theirs.eval()
    _same_step(ours, theirs, shape, 7)


def test_batchnorm_empty_batch_leaves_running_stats_and_gives_zero_grads():
    """test_nn.py, test_BatchNorm_empty: an empty batch in training changes nothing but the batch count."""
    for cls in (BatchNorm2d, BatchInstanceNorm2d):
        ours, theirs = _pair(cls(5), nn.BatchNorm2d(5))
        _same_step(ours, theirs, (4, 5, 3, 3), 0)  # non-trivial running statistics first
        mean, var = ours.running_mean.clone(), ours.running_var.clone()
        x = torch.randn(0, 5, 3, 3, dtype=torch.float64, requires_grad=True)
        y = ours(x)
        y.sum().backward()
        assert y.shape == x.shape and torch.equal(ours.running_mean, mean) and torch.equal(ours.running_var, var)
        assert torch.equal(ours.weight.grad, torch.zeros(5, dtype=torch.float64))
        assert ours.num_batches_tracked == 2


@pytest.mark.parametrize("args,shape,desc", GN_INPUTS, ids=[c[2] for c in GN_INPUTS])
def test_groupnorm_module_inputs(args, shape, desc):
    groups, C, eps, *affine = args
    affine = affine[0] if affine else True
    ours, theirs = _pair(GroupNorm(C, num_groups=groups, eps=eps, affine=affine), nn.GroupNorm(*args))
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        _same_step(ours, theirs, shape, 0)


@pytest.mark.parametrize("shape,desc", IN_INPUTS, ids=[c[1] for c in IN_INPUTS])
def test_instancenorm2d_module_inputs(shape, desc):
    ours, theirs = _pair(InstanceNorm2d(3, eps=1e-3), nn.InstanceNorm2d(3, eps=1e-3, affine=True))
    if shape[0] == 0:  # nn.InstanceNorm2d itself fails here ("select(): index 0 out of range"); ours gives
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)  # an empty output, like nn.GroupNorm
        ours(x).sum().backward()
        assert torch.equal(ours.weight.grad, torch.zeros(3, dtype=torch.float64))
        return
    _same_step(ours, theirs, shape, 0)


def test_layernorm2d_empty_batch_is_groupnorm_with_one_group():
    ours, theirs = _pair(LayerNorm2d(4), nn.GroupNorm(1, 4))
    _same_step(ours, theirs, (0, 4, 3, 3), 0)


@pytest.mark.parametrize("make,shape,modes", [
    (lambda: BatchNorm2d(4), (1, 4, 1, 1), ("train",)),  # test_batchnorm_raises_error_if_less_than_one_value_per_channel
    (lambda: BatchInstanceNorm2d(4), (1, 4, 1, 1), ("train",)),
    (lambda: GroupNorm(4, num_groups=4), (1, 4, 1, 1), ("train", "eval")),  # test_groupnorm_raises_...
    (lambda: LayerNorm2d(1), (1, 1, 1, 1), ("train", "eval")),
    (lambda: InstanceNorm2d(4), (3, 4, 1, 1), ("train", "eval")),  # test_instancenorm_raises_...
], ids=["bn", "bin", "gn", "ln", "in"])
def test_one_value_per_channel_raises_like_pytorch(make, shape, modes):
    layer = make()
    for mode in modes:
        getattr(layer, mode)()
        with pytest.raises(ValueError, match="Expected more than 1"):
            layer(torch.randn(shape))
    if modes == ("train",):  # batch norm in evaluation uses its running statistics: one value is fine
        layer.eval()
        assert layer(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("make", [
    lambda: BatchNorm2d(3), lambda: BatchNorm2d(3, momentum=None), lambda: BatchInstanceNorm2d(3),
    lambda: InstanceNorm2d(3), lambda: LayerNorm2d(3), lambda: GroupNorm(6, num_groups=3)], ids=["bn", "bn_cma", "bin", "in", "ln", "gn"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck_in_double_precision(make, mode):
    """PyTorch's module tests run ``gradcheck`` on every module input in float64; the same here."""
    layer = make().double()
    getattr(layer, mode)()
    if isinstance(layer, BatchInstanceNorm2d):
        with torch.no_grad():
            layer.rho.fill_(0.4)  # mix both halves
    C = layer.num_channels
    x = torch.randn(2, C, 3, 2, dtype=torch.float64, requires_grad=True)
    names, params = zip(*layer.named_parameters())

    def fn(x, *ps):  # in training the running statistics change between calls, but the output does not use them
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert gradcheck(fn, (x, *[p.detach().clone().requires_grad_() for p in params]), fast_mode=True)


def test_pytorch_argument_order_and_unsupported_options_fail_loudly():
    with pytest.raises(TypeError, match="positional"):
        InstanceNorm2d(3, 1e-3, 0.3)  # PyTorch's order (C, eps, momentum) used to set affine=0.3 silently
    with pytest.raises(TypeError, match="positional"):
        GroupNorm(2, 8)  # nn.GroupNorm's order (num_groups, num_channels)
    with pytest.raises(ValueError, match="track_running_stats=False is not supported; use nn.BatchNorm2d"):
        BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="InstanceNorm2d keeps no running statistics"):
        InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(ValueError, match="InstanceNorm2d keeps no running statistics"):
        InstanceNorm2d(3, momentum=0.3)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] or None"):
        BatchNorm2d(3, momentum=1.5)
    with pytest.raises(TypeError, match="floating-point input"):
        LayerNorm2d(3)(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
