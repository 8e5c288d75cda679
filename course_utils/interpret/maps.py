"""Looking inside a trained network: Grad-CAM through the ``grad-cam`` package.

Grad-CAM (Selvaraju et al. 2020, eq. 1-2): for class ``c`` and a layer with activations ``A^k``,
weight each channel by its spatially averaged gradient ``alpha_k = mean_ij d y^c / d A^k_ij`` and
take ``L = ReLU(sum_k alpha_k A^k)``, upsampled to the input size. With several layers, the package
averages their maps. Hooks are resources: they live only inside a ``with`` block.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn


def _resolve(model: nn.Module, layers: Sequence[nn.Module | str] | nn.Module | str) -> list[nn.Module]:
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    return [model.get_submodule(l) if isinstance(l, str) else l for l in layers]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore the caller's train/eval flags afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def gradcam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
            layers: Sequence[nn.Module | str] | nn.Module | str) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1], one per image, for the class in ``targets``.

    Args:
        model: a classifier returning logits ``(B, K)``; its train/eval mode is left as it was.
        images: ``(B, C, H, W)`` input batch (as the model expects it, e.g. normalised).
        targets: the class index whose score is explained, per image (e.g. the true class).
        layers: modules or their names (``"stage3"`` or ``"stage3.1"``); with several layers the
            maps are averaged, as the package does.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target_layers = _resolve(model, layers)
    targets = [ClassifierOutputTarget(int(t)) for t in torch.as_tensor(targets).tolist()]
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    with _eval_mode(model), GradCAM(model=model, target_layers=target_layers) as cam:
        maps = cam(input_tensor=images, targets=targets)
    return maps


def gradcam_reference(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                      layer: nn.Module | str) -> torch.Tensor:
    """Grad-CAM from scratch for one layer, at the layer's resolution ``(B, h, w)``, min-max scaled per image.

    Written out to show the equation (and to test the package wrapper against): hooks record the
    activations, ``torch.autograd.grad`` gives their gradients, and the hook is removed on exit.
    """
    (layer,) = _resolve(model, layer)
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    try:
        with _eval_mode(model):
            logits = model(images)
            score = logits.gather(1, torch.as_tensor(targets).long().view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, store["A"])
    finally:
        handle.remove()
    A = store["A"].detach()
    alpha = grads.mean((2, 3), keepdim=True)  # (B, K, 1, 1): global-average-pooled gradients
    cam = torch.relu((alpha * A).sum(1))  # (B, h, w)
    cam = cam - cam.amin((1, 2), keepdim=True)
    return cam / (cam.amax((1, 2), keepdim=True) + 1e-7)
