"""The Chapter 3 models: shapes, hand-counted parameters, shortcuts, norms passed as layers, gradients everywhere."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from functools import partial

from course_utils.layers.deform import DeformConv2d
from course_utils.layers.norms import GroupNorm
from course_utils.models.deform_nets import PairClassifier, TwoBlockCNN, grid_affines


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


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


@pytest.mark.parametrize("make, in_channels", [
    (lambda d: TwoBlockCNN(deformable=d, backend="reference"), 1),
    (lambda d: PairClassifier(widths=(8, 16, 32), deformable_last_stage=d, backend="reference"), 2),
])
def test_one_seed_gives_the_regular_and_deformable_models_the_same_shared_weights(make, in_channels):
    # No copying: built under the same seed, every shared tensor is equal, so runs paired by seed are paired
    # in their initial weights too (the offset convs draw no random numbers).
    torch.manual_seed(7)
    regular = make(False)
    torch.manual_seed(7)
    deform = make(True)
    shared, extra = regular.state_dict(), deform.state_dict()
    assert set(shared) < set(extra) and all("offset_conv" in k for k in set(extra) - set(shared))
    for k, v in shared.items():
        torch.testing.assert_close(extra[k], v, rtol=0, atol=0, msg=lambda m: f"{k}: {m}")
    x = torch.randn(2, in_channels, 28, 28)
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
    for p in list(block.conv1.parameters()) + list(block.conv2.parameters()) + list(block.norm2.parameters()):
        nn.init.zeros_(p)
    x = torch.rand(2, 64, 14, 14)
    torch.testing.assert_close(block(x), F.relu(x))
    with pytest.raises(ValueError, match="widths must be three"):
        PairClassifier(widths=(8, 16))


def test_models_train_one_step():
    """One SGD step: the loss falls on the batch, every parameter (offset convs included) gets a non-zero gradient."""
    torch.manual_seed(0)
    for model, x, y in ((TwoBlockCNN(deformable=True, modulated=True), torch.randn(4, 1, 28, 28), torch.arange(4)),
                        (PairClassifier(deformable_last_stage=True), torch.randn(4, 2, 28, 28), torch.arange(4))):
        model.train()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        with torch.no_grad():
            for p in model.parameters():
                p -= 1e-3 * p.grad
        assert F.cross_entropy(model(x), y) < loss
        model.eval()  # eval: running statistics instead of the batch's, so the output no longer depends on the batch
        with torch.no_grad():
            torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(model.train()(x[:2])[:1], model.train()(x)[:1], atol=1e-4)


@pytest.mark.parametrize("norm", ["none", "bn", partial(GroupNorm, num_groups=4), nn.BatchNorm2d])
def test_norm_is_passed_as_a_layer(norm):
    """A name, a class or a partial: every norm is the one asked for; convs before an identity norm get a bias."""
    identity = norm == "none"
    for model, x in ((TwoBlockCNN(deformable=True, norm=norm), torch.randn(2, 1, 28, 28)),
                     (PairClassifier(widths=(8, 16, 16), deformable_last_stage=True, norm=norm),
                      torch.randn(2, 2, 28, 28))):
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, DeformConv2d))
                 and not (isinstance(m, nn.Conv2d) and m.out_channels in (18, 27))]  # not the offset predictors
        assert convs and all((c.bias is not None) == identity for c in convs)
        norms = [m for m in model.modules() if isinstance(m, (GroupNorm, nn.BatchNorm2d))
                 or type(m).__name__ == "BatchNorm2d"]
        assert len(norms) == (0 if identity else len(convs))
        if norm is not nn.BatchNorm2d and not identity and not isinstance(norm, str):
            assert all(isinstance(m, GroupNorm) and m.num_groups == 4 for m in norms)
        model(x).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_num_features_is_the_width_the_head_reads():
    cnn, pair = TwoBlockCNN(widths=(4, 8), image_size=12), PairClassifier(widths=(4, 8, 16))
    assert cnn.num_features == 8 * 3 * 3 == cnn.fc.in_features
    assert pair.num_features == 16 == pair.fc.in_features
    x = torch.randn(2, 2, 12, 12)
    assert pair.forward_head(pair.forward_features(x), pre_logits=True).shape == (2, pair.num_features)
    assert cnn.forward_head(cnn.forward_features(x[:, :1]), pre_logits=True).shape == (2, cnn.num_features)


def test_pair_classifier_parameter_count_by_hand():
    w = (4, 8, 16)
    stem = 2 * 4 * 9 + 2 * 4
    block = lambda cin, cout: 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout  # noqa: E731
    shortcut = lambda cin, cout: cin * cout + 2 * cout  # noqa: E731  (1x1 conv + BN)
    total = stem + block(4, 4) + block(4, 8) + shortcut(4, 8) + block(8, 16) + shortcut(8, 16) + 16 * 7 + 7
    assert n_params(PairClassifier(widths=w)) == total == 5127


def test_grid_affines_identity_at_initialisation_and_a_set_map_after():
    torch.manual_seed(0)
    model = TwoBlockCNN(deformable=True, backend="reference").train()
    x = torch.randn(5, 1, 28, 28)
    on = torch.zeros(5, 28, 28)
    on[:, 8:20, 6:22] = 1
    fits = grid_affines(model, x, on, batch_size=2)
    assert model.training  # the caller's mode is restored
    assert set(fits) == {"block1", "block2"} and fits["block2"].shape == (5, 2, 2)
    eye = torch.eye(2, dtype=torch.float64).expand(5, 2, 2)
    torch.testing.assert_close(fits["block1"], eye)
    torch.testing.assert_close(fits["block2"], eye)
    # offsets (A - I) g_k from the offset conv's bias: every position reads the grid carried by A
    A = torch.tensor([[1.5, -0.3], [0.3, 1.5]])
    ij = torch.arange(3.0) - 1
    g = torch.stack(torch.meshgrid(ij, ij, indexing="ij"), -1).reshape(9, 2)
    with torch.no_grad():
        model.block2[0].offset_conv.bias.copy_((g @ (A - torch.eye(2)).T).reshape(18))
    fits = grid_affines(model, x, on)
    torch.testing.assert_close(fits["block2"], A.double().expand(5, 2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(fits["block1"], eye)


def test_grid_affines_rejects_a_regular_model_and_bad_weights():
    with pytest.raises(ValueError, match="deformable=True"):
        grid_affines(TwoBlockCNN(), torch.zeros(1, 1, 28, 28), torch.ones(1, 28, 28))
    with pytest.raises(ValueError, match="on_object must be"):
        grid_affines(TwoBlockCNN(deformable=True), torch.zeros(2, 1, 28, 28), torch.ones(2, 14, 14))
