import numpy as np
import torch

from course_utils.interpret import gradcam, gradcam_reference
from course_utils.models import resnet6n2


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
