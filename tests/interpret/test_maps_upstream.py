"""pytorch-grad-cam's own run-all-models cases, run through the course's ``gradcam`` wrapper.

Adapted from jacobgil/pytorch-grad-cam ``tests/test_run_all_models.py`` (``test_all_cam_models_can_run``): the
same models and layers (torchvision ``resnet18`` at ``layer4[-1]`` and ``layer4[-2]``, random weights instead of
the downloaded ones; the course's ``SmallVGG`` stands in for ``vgg11``, whose 130M parameters would dominate the
suite), the same batch sizes and image sizes ``(2, 32, 32)`` and ``(1, 32, 40)``, and ``target_category`` in
``(None, 100)``. The method is Grad-CAM only (the course wraps no other), without ``aug_smooth`` or
``eigen_smooth``. Each case checks the maps equal the package's own ``GradCAM`` called directly.
"""

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from course_utils.interpret.maps import gradcam
from course_utils.models.small_vgg import SmallVGG

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"resnet18": torchvision.models.resnet18(weights=None).eval(),
            "small_vgg": SmallVGG((4, 8), num_classes=200, in_channels=3).eval()}


LAYERS = {"resnet18": lambda m: [m.layer4[-1], m.layer4[-2]], "small_vgg": lambda m: [list(m.features)[-1]]}


@pytest.mark.parametrize("name", ["resnet18", "small_vgg"])
@pytest.mark.parametrize("batch_size,width,height", [(2, 32, 32), (1, 32, 40)])
@pytest.mark.parametrize("target_category", [None, 100])
def test_all_cam_models_can_run(models, name, batch_size, width, height, target_category):
    model = models[name]
    layers = LAYERS[name](model)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).repeat(batch_size, 1, 1, 1)
    targets = None if target_category is None else [target_category] * batch_size
    ours = gradcam(model, x, targets, layers)
    assert ours.shape == (batch_size, height, width)
    with GradCAM(model=model, target_layers=layers) as cam:
        theirs = cam(input_tensor=x, targets=None if targets is None else [ClassifierOutputTarget(t) for t in targets])
    np.testing.assert_array_equal(ours, theirs)


def test_none_explains_the_predicted_class(models):
    model = models["resnet18"]
    x = torch.randn(2, 3, 32, 32)
    predicted = model(x).argmax(1).tolist()
    np.testing.assert_array_equal(gradcam(model, x, None, [model.layer4[-1]]),
                                  gradcam(model, x, predicted, [model.layer4[-1]]))


@pytest.mark.parametrize("bad,error,match", [
    ([1000, 3], IndexError, r"target class 1000 is out of range for a model with 1000 classes \(0..999\)"),
    ([-1, 3], IndexError, r"target class -1 is out of range"),
    ([1.0, 3.0], ValueError, r"targets must be one class index per image"),
    ([1], ValueError, r"2 images but 1 targets"),
])
def test_bad_targets_raise_and_leave_no_hooks(models, bad, error, match):
    """The package's ``with GradCAM(...)`` swallows an IndexError (and then fails with 'UnboundLocalError: maps')."""
    model = models["resnet18"]
    with pytest.raises(error, match=match):
        gradcam(model, torch.randn(2, 3, 32, 32), bad, [model.layer4[-1]])
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
