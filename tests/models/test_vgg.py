import itertools
from functools import partial

import pytest
import torch
from torch import nn

from course_utils.models.vgg import SimpleCNN, VGGResNet, build_from_config
from course_utils.layers.blocks import BasicBlock
from course_utils.layers.norms import GroupNorm
from course_utils.models.vgg import TransformerStage


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def vggresnet_params(a, b, stages=2, in_ch=1, classes=10, norm=True):
    """Hand count: 3x3 convs (bias only without a norm), 2 norm parameters per channel, a linear head."""
    def conv(cin, cout):
        return 9 * cin * cout + (0 if norm else cout) + (2 * cout if norm else 0)
    total = conv(in_ch, b)
    cin = b
    for i in range(stages):
        w = b * 2 ** i
        total += conv(cin, w) + conv(w, w) + (a - 1) * 2 * conv(w, w)
        cin = w
    return total + cin * classes + classes


@pytest.mark.parametrize("downsample, skip, norm, act, feature_block", [
    *itertools.product(["maxpool", "stride"], [True, False], ["bn", "none"], ["relu", "gelu", "none"], ["conv"]),
    ("maxpool", True, "bn", "relu", "transformer"), ("stride", True, "bn", "relu", "transformer"),
])
def test_every_variant_gives_logits_and_features(downsample, skip, norm, act, feature_block):
    model = VGGResNet(2, 8, downsample, skip, norm, act, feature_block)
    x = torch.randn(3, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (3, 16, 7, 7)  # two stages: 28 -> 14 -> 7, channels 8 -> 16
    assert model.forward_head(feats, pre_logits=True).shape == (3, 16)
    out = model(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_three_stages_and_other_inputs():
    model = VGGResNet(1, 4, "stride", stages=3, in_channels=3, num_classes=7, input_size=32)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 16, 4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    pooled = VGGResNet(1, 4, "maxpool", stages=3)  # a 2x2 max-pool floors 7 to 3, a stride-2 conv gives 4
    assert pooled.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 16, 3, 3)


def test_parameter_counts_by_hand():
    # VGG-ResNet(1, 4): stem 9*4 + 8 = 44; stage1 (4->4) 144 + 144 + 16 = 304;
    # stage2 (4->8) 288 + 576 + 32 = 896; head 8*10 + 10 = 90
    assert n_params(VGGResNet(1, 4)) == 44 + 304 + 896 + 90 == 1334
    assert n_params(VGGResNet(2, 32)) == vggresnet_params(2, 32) == 167658
    for a, b in [(1, 32), (4, 32), (2, 16), (2, 64)]:
        assert n_params(VGGResNet(a, b, "stride")) == vggresnet_params(a, b)
    assert n_params(VGGResNet(2, 32, norm="none")) == vggresnet_params(2, 32, norm=False)
    assert n_params(VGGResNet(2, 16, stages=3)) == vggresnet_params(2, 16, stages=3)


def test_ablations_keep_the_parameter_budget():
    base = n_params(VGGResNet(2, 32))
    for kwargs in [dict(downsample="stride"), dict(skip=False), dict(act="gelu"), dict(act="none"),
                   dict(downsample="stride", skip=False)]:
        assert n_params(VGGResNet(2, 32, **kwargs)) == base, kwargs


def test_transformer_parameter_count_by_hand():
    D, tokens = 64, 7 * 7
    layer = 4 * D * D + 4 * D + 2 * 4 * D * D + 4 * D + D + 4 * D  # attention (q,k,v,out), MLP 4x, two LayerNorms
    assert layer == 12 * D * D + 13 * D
    stage = (32 * D + D) + tokens * D + 2 * layer + 2 * D  # 1x1 embedding, positions, 2 layers, final LayerNorm
    expected = (9 * 32 + 64) + 2 * (2 * 9 * 32 * 32 + 4 * 32) + stage + D * 10 + 10
    model = VGGResNet(2, 32, feature_block="transformer")
    assert isinstance(model.stages[-1], TransformerStage)
    assert n_params(model) == expected == 143466
    strided = VGGResNet(2, 32, "stride", feature_block="transformer")  # 3x3 stride-2 embedding instead
    assert n_params(strided) == expected - (32 * D + D) + (9 * 32 * D + D)


def test_transformer_stage_uses_position_embeddings():
    torch.manual_seed(0)
    stage = TransformerStage(4, 8, depth=1, grid=3, downsample="maxpool", heads=2).eval()
    x = torch.randn(1, 4, 6, 6)
    before = stage(x)
    with torch.no_grad():
        stage.pos.zero_()
    # without position embeddings, attention is permutation-equivariant: swapping two tokens swaps the outputs
    swapped = x.clone()
    swapped[..., 0:2, 0:2], swapped[..., 4:6, 4:6] = x[..., 4:6, 4:6], x[..., 0:2, 0:2]
    out, out_swapped = stage(x), stage(swapped)
    torch.testing.assert_close(out_swapped[..., 0, 0], out[..., 2, 2])
    assert not torch.allclose(before, out)
    with pytest.raises(ValueError, match="input_size"):
        stage(torch.randn(1, 4, 8, 8))


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_skip_false_has_no_residual_path(downsample):
    torch.manual_seed(0)
    with_skip = VGGResNet(2, 4, downsample, skip=True).eval()
    no_skip = VGGResNet(2, 4, downsample, skip=False).eval()
    no_skip.load_state_dict(with_skip.state_dict())  # same weights: the shortcut has none
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(with_skip(x), no_skip(x))
    for model in (with_skip, no_skip):
        for block in model.modules():
            if isinstance(block, BasicBlock):
                nn.init.zeros_(block.conv2.weight)  # the residual branch F(x) is now 0
    # with skips each block passes relu(shortcut(x)) on; without, it outputs relu(0) = 0 for every input
    block_in = torch.randn(2, 4, 14, 14)
    torch.testing.assert_close(with_skip.stages[0][-1](block_in), torch.relu(block_in))
    assert torch.equal(no_skip.stages[0][-1](block_in), torch.zeros_like(block_in))
    y1, y2 = no_skip(x), no_skip(torch.randn(2, 1, 28, 28))
    torch.testing.assert_close(y1, y2)  # the input no longer reaches the output
    assert not torch.allclose(with_skip(x), with_skip(torch.randn(2, 1, 28, 28)))
    assert all(b.shortcut is None for b in no_skip.modules() if isinstance(b, BasicBlock))


def _linear_probe(model):
    """Eval mode, where a BN layer is y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta: linear in x
    when running_mean = 0 and beta = 0. Gamma and running_var get random values (so the check is not trivial);
    the head's bias is zeroed, so a linear network must have f(0) = 0."""
    model.eval()
    with torch.no_grad():
        model.fc.bias.zero_()
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.running_mean.zero_()
                m.bias.zero_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model


def test_act_none_with_stride_is_a_linear_map():
    torch.manual_seed(0)
    f = _linear_probe(VGGResNet(2, 8, "stride", act="none", norm="torch_bn"))
    x, y = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(f(2.5 * x - 0.7 * y), 2.5 * f(x) - 0.7 * f(y), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(f(-x), -f(x))
    relu = _linear_probe(VGGResNet(2, 8, "stride", act="relu", norm="torch_bn"))
    assert not torch.allclose(relu(-x), -relu(x), atol=1e-3)


def test_act_none_with_maxpool_is_only_positively_homogeneous():
    torch.manual_seed(0)
    f = _linear_probe(VGGResNet(2, 8, "maxpool", act="none", norm="bn"))
    x, y = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(f(3.0 * x), 3.0 * f(x), atol=1e-5, rtol=1e-4)  # max(a x) = a max(x) for a > 0
    assert not torch.allclose(f(-x), -f(x), atol=1e-3)  # ... but max(-x) = -min(x): max-pool is not linear
    assert not torch.allclose(f(x + y), f(x) + f(y), atol=1e-3)


def test_vggresnet_bad_arguments():
    with pytest.raises(ValueError, match="blocks"):
        VGGResNet(0, 32)
    with pytest.raises(ValueError, match="width"):
        VGGResNet(2, 0)
    with pytest.raises(ValueError, match="downsample"):
        VGGResNet(2, 32, downsample="avgpool")
    with pytest.raises(ValueError, match="Unknown activation 'tanh'"):
        VGGResNet(2, 32, act="tanh")
    with pytest.raises(ValueError, match="Unknown norm"):
        VGGResNet(2, 32, norm="batch")
    with pytest.raises(ValueError, match="feature_block"):
        VGGResNet(2, 32, feature_block="attention")
    with pytest.raises(ValueError, match="divisible by heads"):
        VGGResNet(2, 5, feature_block="transformer")
    with pytest.raises(ValueError, match="too small"):
        VGGResNet(1, 4, stages=6)
    assert isinstance(VGGResNet(1, 4, act=nn.SiLU).stem[2], nn.SiLU)  # a callable works too


def test_simple_cnn_shapes_and_parameters_by_hand():
    model = SimpleCNN([8, 16], [32])
    # conv 1->8: 72 + 8; pool 28->14; conv 8->16: 1152 + 16; pool 14->7; fc 784->32; out 32->10
    assert n_params(model) == 80 + 1168 + (16 * 49 * 32 + 32) + (32 * 10 + 10) == 26698
    x = torch.randn(5, 1, 28, 28)
    assert model.forward_features(x).shape == (5, 16, 7, 7) and model.feature_shape == (16, 7, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (5, 32)
    assert model(x).shape == (5, 10)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 2
    # seed 004's boilerplate shape: 5x5 kernels and three fc layers
    big = SimpleCNN([64, 128, 256], [256, 128], kernel_size=5)
    assert big.feature_shape == (256, 3, 3)
    assert n_params(big) == (25 * 64 + 64) + (25 * 64 * 128 + 128) + (25 * 128 * 256 + 256) + \
        (256 * 9 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)


@pytest.mark.parametrize("convs, pool_every, stride, shape", [
    (1, 1, 1, (8, 14, 14)), (5, 1, 1, (8, 1, 1)),  # the fifth pool would shrink a 1x1 map: left out
    (4, 2, 1, (8, 7, 7)), (5, 2, 1, (8, 7, 7)), (3, 0, 2, (8, 4, 4)), (3, 0, 3, (8, 2, 2)), (2, 1, 2, (8, 2, 2)),
])
def test_simple_cnn_pooling_and_stride(convs, pool_every, stride, shape):
    model = SimpleCNN([8] * convs, [16], pool_every=pool_every, conv_stride=stride)
    assert model.feature_shape == shape
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, *shape)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert pools == {(1, 1): 1, (5, 1): 4, (4, 2): 2, (5, 2): 2, (3, 0): 0, (2, 1): 2}[(convs, pool_every)]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_simple_cnn_bad_arguments():
    with pytest.raises(ValueError, match="conv_channels"):
        SimpleCNN([], [32])
    with pytest.raises(ValueError, match="fc_features"):
        SimpleCNN([8], [0])
    with pytest.raises(ValueError, match="odd"):
        SimpleCNN([8], [32], kernel_size=4)
    with pytest.raises(ValueError, match="pool_every"):
        SimpleCNN([8], [32], pool_every=-1)
    with pytest.raises(ValueError, match="conv_stride"):
        SimpleCNN([8], [32], conv_stride=0)
    assert n_params(SimpleCNN([8], [])) == 80 + 8 * 14 * 14 * 10 + 10  # no hidden fc: a linear classifier


@pytest.mark.parametrize("norm", ["none", nn.Identity, partial(GroupNorm, num_groups=4), nn.BatchNorm2d])
@pytest.mark.parametrize("skip", [True, False])
def test_norm_as_name_class_or_partial(norm, skip):
    model = VGGResNet(1, 8, "stride", skip=skip, norm=norm)
    identity = norm == "none" or norm is nn.Identity
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == identity for c in convs)  # a bias only where no norm follows
    wanted = GroupNorm if isinstance(norm, partial) else nn.BatchNorm2d
    assert sum(isinstance(m, wanted) for m in model.modules()) == (0 if identity else len(convs))
    assert n_params(model) == vggresnet_params(1, 8, norm=not identity)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_simple_cnn_head_pool_matches_torch_global_average_pooling():
    torch.manual_seed(0)
    model = SimpleCNN([8, 16], [32], head_pool=1)
    # the first fc layer sees the 16 channel means, whatever the map's size: 16*32+32 instead of 784*32+32
    assert n_params(model) == 80 + 1168 + (16 * 32 + 32) + (32 * 10 + 10)
    x = torch.randn(3, 1, 28, 28)
    fmap = model.forward_features(x)
    by_hand = model.classifier[2:](torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1))
    torch.testing.assert_close(model(x), by_hand)
    torch.testing.assert_close(model.classifier[:2](fmap), fmap.mean((2, 3)))  # global pooling = the mean
    three = SimpleCNN([8], [], head_pool=3)  # a 14x14 map pooled to 3x3 (PyTorch's adaptive windows)
    assert three.classifier[-1].in_features == 8 * 3 * 3
    fmap = three.forward_features(x)
    pooled = torch.nn.functional.adaptive_avg_pool2d(fmap, 3).flatten(1)
    torch.testing.assert_close(three(x), three.classifier[-1](pooled))
    # a map already smaller than head_pool is flattened as it is (no replicated inputs)
    small = SimpleCNN([8] * 4, [], head_pool=3)
    assert small.feature_shape == (8, 1, 1) and small.classifier[-1].in_features == 8
    assert n_params(SimpleCNN([8, 16], [32], head_pool=7)) == n_params(SimpleCNN([8, 16], [32]))  # 7x7 kept
    # one conv no longer means the largest fc layer: parameters grow with the number of convs
    sizes = [n_params(SimpleCNN([16, 32, 64, 128, 128][:n], [128, 64], head_pool=p))
             for p in (1, 3) for n in range(1, 6)]
    assert sizes[:5] == sorted(sizes[:5]) and sizes[5:] == sorted(sizes[5:])
    with pytest.raises(ValueError, match="head_pool"):
        SimpleCNN([8], [32], head_pool=0)


def test_num_features_is_what_the_head_reads():
    for model in (VGGResNet(1, 4), VGGResNet(1, 4, stages=3), VGGResNet(2, 8, feature_block="transformer")):
        assert model.num_features == model.fc.in_features
    cnn = SimpleCNN([8], [12])
    assert cnn.num_features == 12 == cnn.classifier[-1].in_features


def test_build_from_config_picks_the_family_and_ignores_training_keys():
    config = dict(family="vggresnet", blocks=1, width=8, downsample="stride", skip=False, lr=0.1, epochs=3, tag="x")
    torch.manual_seed(0)
    built = build_from_config(config)
    torch.manual_seed(0)
    direct = VGGResNet(1, 8, "stride", skip=False)
    assert type(built) is VGGResNet and built.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
    cnn = build_from_config(dict(family="simple", conv_channels=[4, 8], fc_features=[16], pool_every=2, batch_size=32))
    assert isinstance(cnn, SimpleCNN) and cnn.feature_shape == (8, 14, 14) and cnn.num_features == 16
    with pytest.raises(KeyError, match="'resnet'"):
        build_from_config(dict(family="resnet", blocks=1))
    with pytest.raises(KeyError, match="family"):
        build_from_config(dict(blocks=1, width=8))
    assert isinstance(build_from_config(dict(family="tiny", in_features=3, out_features=2),
                                        families={"tiny": nn.Linear}), nn.Linear)
