"""Attribution maps: CAM and Grad-CAM against their equations, occlusion against a loop over windows, and
the caller's model left as it was (mode, weights, no hooks)."""

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.interpret.maps import (_rank_correlation, cam, cascading_randomization, explain, gradcam,
                                         gradcam_reference, input_gradient, normalize_maps,
                                         occlusion_object_share, occlusion_sensitivity)
from course_utils.models.resnet import resnet6n2


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def _resnet():
    torch.manual_seed(0)
    model = resnet6n2(1, 5, norm="torch_bn", widths=(4, 8, 8))
    model.train()
    model(torch.randn(8, 1, 16, 16))  # non-trivial running statistics
    return model


def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_cam_is_the_weighted_sum_of_feature_maps_and_averages_to_the_logit():
    model = _resnet()
    x = torch.randn(3, 1, 16, 16)
    maps = cam(model, x, [0, 2, 4])
    assert maps.shape == (3, 4, 4)
    assert model.training and _no_hooks(model)  # the caller's mode is back; nothing was hooked
    model.eval()
    with torch.no_grad():
        A = model.forward_features(x)
        logits = model(x)
    W, b = model.fc.weight, model.fc.bias
    expected = torch.stack([sum(W[c, k] * A[i, k] for k in range(A.shape[1])) for i, c in enumerate([0, 2, 4])])
    torch.testing.assert_close(maps, expected)
    # spatial mean of M_c = y_c - b_c (the head is a global mean pool and a linear layer)
    torch.testing.assert_close(maps.mean((1, 2)), logits[[0, 1, 2], [0, 2, 4]] - b[[0, 2, 4]])
    # default class: the predicted one; one class for all images
    torch.testing.assert_close(cam(model, x)[0], cam(model, x[:1], int(logits[0].argmax()))[0])
    assert cam(model, x, 1).shape == (3, 4, 4)


def test_gradcam_on_the_last_layer_of_a_gap_model_is_the_rectified_cam():
    model = _resnet().eval()
    x = torch.randn(2, 1, 16, 16)
    classes = [1, 3]
    # alpha_k = w_ck / (h w): Grad-CAM = ReLU(CAM) up to scale
    torch.testing.assert_close(gradcam_reference(model, x, classes, "stage3"),
                               normalize_maps(torch.relu(cam(model, x, classes))), atol=1e-5, rtol=1e-5)


def test_cam_explains_bad_models():
    with pytest.raises(TypeError, match="forward_features"):
        cam(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="one per image"):
        cam(_resnet(), torch.zeros(2, 1, 16, 16), [0, 1, 2])


def test_normalize_maps_scales_each_map_and_resizes():
    m = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalize_maps(m)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert (out[1] == 0).all()  # a constant map stays finite
    assert normalize_maps(m, (8, 8)).shape == (2, 8, 8)


def _occlusion_naive(model, image, window, stride, fill):
    C, H, W = image.shape
    with torch.no_grad():
        pred = int(model(image[None]).argmax())
        rows = range(0, H - window + 1, stride)
        cols = range(0, W - window + 1, stride)
        out = torch.zeros(len(rows), len(cols))
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                x = image.clone()
                x[:, r:r + window, c:c + window] = torch.as_tensor(fill).reshape(-1, 1, 1)
                p = model(x[None]).softmax(1)[0]
                out[a, b] = p[pred] if int(p.argmax()) == pred else 0.0
    return out


@pytest.mark.parametrize("C, H, window, stride, fill", [(1, 12, 5, 1, 0.0), (3, 13, 4, 3, [0.8, -1.0, 2.0])])
def test_occlusion_matches_a_loop_over_windows(C, H, window, stride, fill):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(C, 6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, C, H, H))  # materialise the lazy layer before comparing
    image = torch.randn(C, H, H) * 2
    ours = occlusion_sensitivity(model, image, window=window, stride=stride, fill=fill, batch_size=7)
    n = (H - window) // stride + 1
    assert ours.shape == (n, n)
    ref = _occlusion_naive(model, image, window, stride, fill)
    torch.testing.assert_close(ours, ref)
    assert (ref > 0).any()


def test_occlusion_zeroes_positions_where_the_class_changes():
    # a classifier that says "class 1" iff the top-left 3x3 corner is bright: covering it changes the class
    class Corner(nn.Module):
        def forward(self, x):
            s = x[:, :, :3, :3].mean((1, 2, 3))
            return torch.stack([torch.zeros_like(s), s - 0.9], 1)

    image = torch.zeros(1, 8, 8)
    image[:, :3, :3] = 1.0
    m = occlusion_sensitivity(Corner(), image, window=2, stride=1, fill=0.0)
    assert m.shape == (7, 7)
    assert (m[:3, :3] == 0).all()  # the window covers part of the corner: its mean drops below 0.9
    rest = torch.ones(7, 7, dtype=torch.bool)
    rest[:3, :3] = False
    torch.testing.assert_close(m[rest], torch.sigmoid(torch.tensor(0.1)).expand(40))


def test_occlusion_rejects_a_batch_and_oversized_windows():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="one \\(C, H, W\\) image"):
        occlusion_sensitivity(model, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="window"):
        occlusion_sensitivity(model, torch.zeros(1, 4, 4), window=5)


def test_object_share_of_the_occlusion_drop():
    conf = torch.ones(4, 4)
    conf[1, 2] = 0.2  # one window, centred at pixel (1 + 1, 2 + 1) = (2, 3) with window 3, stride 1
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:4, 2:4] = True  # window centres (2..5, 2..5): (2, 3) is on the object, 4 of 16 centres are
    share, chance = occlusion_object_share(conf, mask, window=3)
    assert share == pytest.approx(1.0) and chance == pytest.approx(4 / 16)
    mask[2, 3] = False
    assert occlusion_object_share(conf, mask, window=3)[0] == 0.0
    with pytest.raises(ValueError, match="does not fit"):
        occlusion_object_share(conf, mask[:4, :4], window=3)


def test_explain_gives_three_maps_at_the_input_size_and_leaves_no_hooks():
    from course_utils.models.small_vgg import SmallVGG

    torch.manual_seed(0)
    model = SmallVGG((4, 4, 8)).train()
    image = torch.randn(1, 16, 16)
    for stride in (1, 2):
        maps = explain(model, image, "features.relu6", window=5, stride=stride)
        assert list(maps) == ["CAM", "Grad-CAM", "occlusion"]
        for m in maps.values():
            assert m.shape == (16, 16) and m.min() >= 0 and m.max() <= 1 + 1e-6
    conf = occlusion_sensitivity(model, image, 5, 1)
    drop = conf.max() - conf
    r, c = divmod(int(drop.argmax()), drop.shape[1])
    assert maps["occlusion"].shape == (16, 16)
    assert explain(model, image, "features.relu6", window=5)["occlusion"][r + 2, c + 2] == pytest.approx(1.0)
    assert model.training and _no_hooks(model)


# ------------------------------------------------------------------------ Grad-CAM through the package
def _model():
    torch.manual_seed(0)
    model = resnet6n2(2, 10, norm="torch_bn")
    model.train()
    for _ in range(2):  # give the batch norms non-trivial running statistics
        model(torch.randn(8, 1, 28, 28))
    return model


def test_gradcam_matches_the_equation_and_leaves_the_model_as_it_was():
    model = _model()
    x = torch.randn(3, 1, 28, 28)
    targets = [1, 4, 7]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = gradcam(model, x, targets, "stage1")  # stage1 keeps 28x28: no resizing involved
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    ref = gradcam_reference(model, x, targets, model.stage1)
    # both are min-max scaled; the package adds its 1e-7 to the denominator twice, so compare shapes of the maps
    ours = torch.from_numpy(maps)
    torch.testing.assert_close(ours / ours.amax((1, 2), keepdim=True), ref / ref.amax((1, 2), keepdim=True),
                               atol=1e-4, rtol=1e-4)
    # the caller's model: same mode, same weights and statistics, no hooks left behind
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks


def test_gradcam_last_stage_averages_layers_and_upsamples():
    model = _model().eval()
    x = torch.randn(2, 1, 28, 28)
    maps = gradcam(model, x, torch.tensor([0, 3]), list(model.stage3))
    assert maps.shape == (2, 28, 28) and not model.training
    single = gradcam(model, x, [0, 3], [model.stage3[0]])
    assert not np.allclose(maps, single)


# ------------------------------------------------------------------------- sanity check (Adebayo et al.)
def test_input_gradient_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    x = torch.randn(4, 2, 5, 5)
    g = input_gradient(model, x, [0, 1, 2, 1])
    w = model[1].weight.detach().reshape(3, 2, 5, 5)
    expected = w[torch.tensor([0, 1, 2, 1])].abs().sum(1)
    torch.testing.assert_close(g, expected)


def test_rank_correlation_is_one_for_monotone_maps_and_zero_for_constant_ones():
    a = torch.rand(3, 6, 6)
    rho = _rank_correlation(a, a ** 3 + 1)
    np.testing.assert_allclose(rho, 1.0)
    assert _rank_correlation(a, torch.zeros(3, 6, 6)).tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(_rank_correlation(a, -a), -1.0)


def test_cascading_randomization_leaves_the_model_and_destroys_the_maps():
    from course_utils.models.small_vgg import SmallVGG

    torch.manual_seed(0)
    model = SmallVGG((4, 4, 8), num_classes=3, norm="torch_bn").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(5, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    layers = ["fc", "features.conv6", "features.conv5", "features.conv4", "features.conv3", "features.conv2",
              "features.conv1"]
    corr, maps = cascading_randomization(model, x, y, layers, "gradient", seed=1, keep=2)
    assert list(corr) == layers and all(v.shape == (5,) for v in corr.values())
    torch.testing.assert_close(maps["trained"], input_gradient(model, x, y)[:2])  # the trained model's maps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was randomised
    assert all(-1 <= r <= 1 for v in corr.values() for r in v)
    assert corr["features.conv1"].mean() < 0.9  # nothing of the trained weights is left
    again, _ = cascading_randomization(model, x, y, layers, "gradient", seed=1)
    assert all(np.array_equal(corr[k], again[k]) for k in layers)  # seeded
    corr_cam, maps_cam = cascading_randomization(model, x, y, layers[:2], "gradcam", "features.relu6", keep=1)
    assert maps_cam["fc"].shape == (1, 16, 16) and list(corr_cam) == layers[:2]
    with pytest.raises(ValueError, match="gradcam_layer"):
        cascading_randomization(model, x, y, layers, "gradcam")
    with pytest.raises(ValueError, match="method"):
        cascading_randomization(model, x, y, layers, "lime")


def test_inputs_go_to_the_model_device():
    from course_utils.interpret.receptive import _on_model

    x = torch.randn(2, 3)
    assert _on_model(nn.Linear(3, 2).to("meta"), x).device.type == "meta"  # a device other than the input's
    assert _on_model(nn.BatchNorm1d(3, affine=False).to("meta"), x).device.type == "meta"  # buffers only
    assert _on_model(nn.ReLU(), x) is x  # nothing to follow: left as it is
