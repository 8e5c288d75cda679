"""Segmentation models: output shapes, hand-counted parameters, what the skip switches change, bad arguments."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.models.segmentation import FCN32s, DeepLabV3, Hourglass, UNet
from course_utils.layers.norms import GroupNorm
from course_utils.models.segmentation import bilinear_kernel
from course_utils.summary import count_parameters


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


@pytest.mark.parametrize("make", [
    lambda: Hourglass(2, 8),
    lambda: Hourglass(1, 4, intra_skip=False, inter_skip=False, norm="none", act="none", dropout=0.0),
    lambda: UNet(8, 3),
    lambda: FCN32s(8),
    lambda: FCN32s(4, pools=5),
    lambda: DeepLabV3(4),
])
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape_is_per_pixel_logits(make, size):
    model = make()
    x = torch.randn(2, 1, size, size)
    out = model(x)
    assert out.shape == (2, 11, size, size)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


def test_channels_and_classes_are_arguments():
    x = torch.randn(2, 3, 32, 32)
    for model in (Hourglass(1, 4, num_classes=5, in_channels=3), UNet(4, 2, num_classes=5, in_channels=3),
                  FCN32s(4, num_classes=5, in_channels=3), DeepLabV3(4, num_classes=5, in_channels=3)):
        assert model(x).shape == (2, 5, 32, 32)


def test_hourglass_parameter_count_by_hand():
    # Hourglass(1 stack, width 4, depth 1, 3 classes) with BN (2 parameters per channel) on 1 input channel:
    stem = 1 * 4 * 9 + 2 * 4  # 3x3 conv without bias (a norm follows), BN(4)
    down = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8)  # block 4 -> 8: two conv + BN
    up = (8 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4)  # block 8 -> 4
    shortcuts = (4 * 8 + 2 * 8) + (8 * 4 + 2 * 4)  # 1x1 conv + BN where the width changes (intra skips)
    head = (4 * 4 * 9 + 2 * 4) + (4 * 3 + 3)  # 3x3 conv + BN, then 1x1 conv with bias to 3 classes
    assert count_parameters(Hourglass(1, 4, depth=1, num_classes=3)) == stem + down + up + shortcuts + head == 1643
    assert count_parameters(Hourglass(1, 4, depth=1, num_classes=3, intra_skip=False)) == 1643 - shortcuts
    # the inter skips are sums: no parameters
    assert count_parameters(Hourglass(1, 4, depth=1, num_classes=3, inter_skip=False)) == 1643
    # every further stack repeats the module
    assert count_parameters(Hourglass(3, 4, depth=1, num_classes=3)) == 1643 + 2 * (down + up + shortcuts)
    # without norm, every conv gets a bias instead of the norm's 2 parameters per channel
    no_norm = (4 + 9 * 4) + (4 * 8 * 9 + 8 + 8 * 8 * 9 + 8) + (8 * 4 * 9 + 4 + 4 * 4 * 9 + 4) \
        + (4 * 8 + 8 + 8 * 4 + 4) + (4 * 4 * 9 + 4 + 4 * 3 + 3)
    assert count_parameters(Hourglass(1, 4, depth=1, num_classes=3, norm="none")) == no_norm


def test_unet_parameter_count_by_hand_and_concatenation():
    enc0 = (1 * 2 * 9 + 2 * 2) + (2 * 2 * 9 + 2 * 2)  # in 1 -> 2, two 3x3 convs + BN
    enc1 = (2 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4)  # 2 -> 4
    upconv = 4 * 2 * 2 * 2 + 2  # 2x2 transposed conv 4 -> 2 with bias
    dec = (4 * 2 * 9 + 2 * 2) + (2 * 2 * 9 + 2 * 2)  # 2 + 2 concatenated channels -> 2
    head = 2 * 3 + 3
    assert count_parameters(UNet(2, 1, num_classes=3)) == enc0 + enc1 + upconv + dec + head == 453
    assert UNet(4, 2).dec[0].conv1.in_channels == 8  # concatenation doubles the decoder's input


def test_skip_switches_change_the_graph_and_the_function():
    torch.manual_seed(0)
    full = Hourglass(1, 4, depth=2)
    no_intra = Hourglass(1, 4, depth=2, intra_skip=False)
    no_inter = Hourglass(1, 4, depth=2, inter_skip=False)
    assert all(isinstance(b.shortcut, nn.Sequential) for b in full.stacks[0].down)
    assert all(b.shortcut is None for b in no_intra.stacks[0].down + no_intra.stacks[0].up)
    # same weights, inter skips off: a different function of the input
    no_inter.load_state_dict(full.state_dict())
    full.eval(), no_inter.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert (full(x) - no_inter(x)).abs().max() > 1e-3
    # Without inter skips everything passes through the max-pooled bottleneck. Make the stem copy the
    # input (a centred delta kernel): a second, smaller bright pixel in the same 2x2 pooling window
    # then cannot reach the output without inter skips, and does with them.
    one = Hourglass(1, 2, depth=1, norm="none", dropout=0.0).eval()
    one_no_inter = Hourglass(1, 2, depth=1, norm="none", dropout=0.0, inter_skip=False).eval()
    with torch.no_grad():
        stem = one.stem[0]
        stem.weight.zero_()
        stem.weight[:, 0, 1, 1] = 1.0
        stem.bias.zero_()
        one_no_inter.load_state_dict(one.state_dict())
        x = torch.zeros(1, 1, 8, 8)
        x[..., 2, 2] = 1.0
        bumped = x.clone()
        bumped[..., 2, 3] = 0.5  # same pooling window as (2, 2), smaller than its maximum
        window_max = lambda t: one.stem(t)[:, :, 2:4, 2:4].amax((2, 3))  # noqa: E731
        torch.testing.assert_close(window_max(bumped), window_max(x))
        assert torch.equal(one_no_inter(x), one_no_inter(bumped))
        assert (one(x) - one(bumped)).abs().max() > 1e-4


def test_hourglass_ablation_switches_remove_norm_and_activation():
    plain = Hourglass(1, 4, norm="none", act="none")
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.ReLU) for m in Hourglass(1, 4, depth=2).modules()) == 1 + 4 * 2 + 1
    gelu = Hourglass(1, 4, act="gelu")
    assert any(isinstance(m, nn.GELU) for m in gelu.modules())
    assert Hourglass(1, 4, dropout=0.3).dropout.p == 0.3


def test_fcn_upsampling_starts_as_bilinear_interpolation():
    model = FCN32s(4, pools=3, num_classes=2)
    assert model.stride == 8 and model.upsample.stride == (8, 8)
    scores = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        ours = model.upsample(scores)
    ref = F.interpolate(scores, scale_factor=8, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape == (2, 2, 32, 32)
    torch.testing.assert_close(ours[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8])  # away from the zero padding
    assert bilinear_kernel(3, 2)[0, 1].abs().sum() == 0  # channels do not mix


def test_deeplab_uses_atrous_convs_and_torchvision_aspp():
    from torchvision.models.segmentation.deeplabv3 import ASPP

    model = DeepLabV3(4, rates=(1, 2, 3))
    assert isinstance(model.aspp, ASPP)
    assert model.layers[-1].conv1.dilation == (2, 2) and model.layers[-1].conv1.stride == (1, 1)
    assert model.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 32, 4, 4)  # output stride 8
    assert sorted(m.dilation[0] for m in model.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)) \
        == [1, 2, 3]


@pytest.mark.parametrize("make, match", [
    (lambda: Hourglass(0, 32), "stacks must be"),
    (lambda: Hourglass(2, 0), "width must be"),
    (lambda: Hourglass(2, 8, dropout=1.0), "dropout must be"),
    (lambda: Hourglass(2, 8, act="tanh"), "Unknown activation"),
    (lambda: Hourglass(2, 8, norm="batch"), "Unknown norm"),
    (lambda: UNet(8, 0), "depth must be"),
    (lambda: FCN32s(8, pools=0), "pools must be"),
    (lambda: DeepLabV3(8, rates=()), "rates must be"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_input_size_must_fit_the_down_sampling():
    with pytest.raises(ValueError, match="divisible by 8"):
        Hourglass(1, 4)(torch.randn(1, 1, 60, 60))
    with pytest.raises(ValueError, match="divisible by 16"):
        FCN32s(4)(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        UNet(4, 2)(torch.randn(1, 32, 32))


@pytest.mark.parametrize("norm", ["none", nn.Identity, partial(GroupNorm, num_groups=2), "torch_bn"])
@pytest.mark.parametrize("make", [lambda norm: Hourglass(1, 4, depth=2, norm=norm, num_classes=3),
                                  lambda norm: UNet(4, 2, norm=norm, num_classes=3),
                                  lambda norm: FCN32s(4, pools=2, norm=norm, num_classes=3),
                                  lambda norm: DeepLabV3(4, norm=norm, num_classes=3)])
def test_norm_is_honoured_everywhere(make, norm):
    """Every conv of our own (not torchvision's ASPP) has a bias exactly when no norm follows it; the norms built
    are the ones asked for, the DeepLab classifier's included; gradients reach every parameter."""
    from torchvision.models.segmentation.deeplabv3 import ASPP

    model = make(norm)
    identity = norm == "none" or norm is nn.Identity
    aspp = {id(m) for a in model.modules() if isinstance(a, ASPP) for m in a.modules()}
    heads = {id(m) for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 3}  # score layers
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in aspp | heads]
    assert convs and all((c.bias is not None) == identity for c in convs)
    wanted = GroupNorm if isinstance(norm, partial) else nn.BatchNorm2d
    ours = [m for m in model.modules() if isinstance(m, wanted) and id(m) not in aspp]
    assert len(ours) == (0 if identity else len(convs))
    if isinstance(model, DeepLabV3):
        assert isinstance(model.classifier[1], nn.Identity if identity else wanted)
    model(torch.randn(2, 1, 16, 16)).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_num_features_are_the_channels_the_head_reads():
    x = torch.randn(1, 1, 32, 32)
    for model, channels in ((Hourglass(1, 4), 4), (UNet(4, 2), 4), (FCN32s(4, pools=3), 32), (DeepLabV3(4), 32)):
        assert model.num_features == channels == model.forward_features(x).shape[1]


def test_train_and_eval_differ_only_by_dropout_and_batch_statistics():
    torch.manual_seed(0)
    model = Hourglass(1, 4, depth=1, num_classes=3, dropout=0.5)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        a, b = model.train()(x), model.train()(x)
        assert not torch.allclose(a, b)  # channel dropout draws a new mask each time
        model.eval()
        torch.testing.assert_close(model(x), model(x))
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config, direct", [
    ({"model": "hourglass", "stacks": 1, "width": 4}, lambda: Hourglass(1, 4, norm="torch_bn", num_classes=3)),
    ({"model": "hourglass", "stacks": 1, "width": 4, "norm": "none"}, lambda: Hourglass(1, 4, norm="none", num_classes=3)),
    ({"model": "unet", "width": 4, "depth": 2}, lambda: UNet(4, 2, norm="torch_bn", num_classes=3)),
    ({"model": "fcn32s", "width": 4, "pools": 3}, lambda: FCN32s(4, pools=3, norm="torch_bn", num_classes=3)),
    ({"model": "deeplabv3", "width": 4}, lambda: DeepLabV3(4, norm="torch_bn", num_classes=3)),
])
def test_build_segmenter_equals_the_direct_constructor(config, direct):
    """The config's keys override the defaults; same seed, same class, same weights, same output."""
    from course_utils.models.segmentation import build_segmenter

    before = dict(config)
    torch.manual_seed(0)
    built = build_segmenter(config, num_classes=3, norm="torch_bn").eval()
    assert config == before  # the config is read, not changed
    torch.manual_seed(0)
    expected = direct().eval()
    assert type(built) is type(expected)
    assert built.state_dict().keys() == expected.state_dict().keys()
    for k, v in expected.state_dict().items():
        torch.testing.assert_close(built.state_dict()[k], v, rtol=0, atol=0)
    x = torch.randn(2, 1, 16, 16)
    assert built(x).shape == (2, 3, 16, 16)


def test_build_segmenter_rejects_an_unknown_model():
    from course_utils.models.segmentation import SEGMENTERS, build_segmenter

    assert set(SEGMENTERS) == {"hourglass", "unet", "fcn32s", "deeplabv3"}
    with pytest.raises(KeyError, match="choose one of"):
        build_segmenter({"model": "segformer"})
