"""Attribution maps: which pixels of an image does a classifier's decision rest on?

* **CAM** (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", sec. 2): in a
  network whose head is global average pooling then a linear layer, the logit of class ``c`` is
  ``y_c = sum_k w_ck mean_ij A_k(i, j) + b_c``; the map ``M_c(i, j) = sum_k w_ck A_k(i, j)`` spreads that
  score over the positions, so ``mean_ij M_c = y_c - b_c``. No gradient and no hook are needed.
* **Grad-CAM** (Selvaraju et al. 2020, eq. 1-2), through the ``grad-cam`` package, with a from-scratch
  version to check it: for class ``c`` and a layer with activations ``A^k``, weight each channel by its
  spatially averaged gradient ``alpha_k = mean_ij d y^c / d A^k_ij`` and take
  ``L = ReLU(sum_k alpha_k A^k)``, upsampled to the input size. With several layers, the package
  averages their maps. For a GAP + linear head and the last layer, ``alpha_k = w_ck / (h w)``: Grad-CAM
  is CAM up to a scale and a ReLU.
* **Occlusion sensitivity** (Zeiler & Fergus 2014, sec. 4.2): slide a grey square over the image and
  record the confidence of the originally predicted class; a dip marks a region the decision needs.
* **Sanity check** (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", sec. 3.1): re-initialise the
  weights layer by layer from the top down (cascading randomisation) and compare each map with the trained
  model's by rank correlation. A map that stays the same when the weights it should explain are gone
  shows the input, not the model.

Every function moves its inputs to the model's device, so callers need not.

Hooks are resources: they live only inside a ``with`` block, and the caller's model comes back in the
train/eval mode it had.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.hooks import eval_mode
from course_utils.interpret.receptive import _on_model


def _resolve(model: nn.Module, layers: Sequence[nn.Module | str] | nn.Module | str) -> list[nn.Module]:
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    return [model.get_submodule(l) if isinstance(l, str) else l for l in layers]


def gradcam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor | None,
            layers: Sequence[nn.Module | str] | nn.Module | str) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1], one per image, for the class in ``targets``.

    Args:
        model: a classifier returning logits ``(B, K)``; its train/eval mode is left as it was.
        images: ``(B, C, H, W)`` input batch (as the model expects it, e.g. normalised).
        targets: the class index whose score is explained, per image (e.g. the true class), or ``None``
            for each image's predicted class. A class outside ``0..K-1`` raises ``IndexError``.
        layers: modules or their names (``"stage3"`` or ``"stage3.1"``); with several layers the
            maps are averaged, as the package does.
    """
    from pytorch_grad_cam import GradCAM

    images = _on_model(model, images)
    target_layers = _resolve(model, layers)
    if targets is not None:
        classes = torch.as_tensor(targets)
        if classes.ndim != 1 or classes.is_floating_point():
            raise ValueError(f"targets must be one class index per image (a list or a 1-D integer tensor) or None, "
                             f"got {classes.dtype} of shape {tuple(classes.shape)}")
        targets = [_ClassTarget(c) for c in classes.tolist()]
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
    # Not the package's ``with GradCAM(...)``: its __exit__ swallows an IndexError (an out-of-range class);
    # releasing the hooks in ``finally`` lets every exception through.
    with eval_mode(model):  # entered first: GradCAM(...) puts the model in eval mode, eval_mode restores it
        cam = GradCAM(model=model, target_layers=target_layers)
        try:
            return cam(input_tensor=images, targets=targets)
        finally:
            cam.activations_and_grads.release()


class _ClassTarget:
    """The package's ``ClassifierOutputTarget``: the score of one class, from logits ``(K,)`` or ``(B, K)``;
    a class outside ``0..K-1`` raises (a negative index would silently pick a class from the end)."""

    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        K = model_output.shape[-1]
        if not 0 <= self.category < K:
            raise IndexError(f"target class {self.category} is out of range for a model with {K} classes "
                             f"(0..{K - 1})")
        return model_output[self.category] if model_output.ndim == 1 else model_output[:, self.category]


def gradcam_reference(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                      layer: nn.Module | str) -> torch.Tensor:
    """Grad-CAM from scratch for one layer, at the layer's resolution ``(B, h, w)``, min-max scaled per image.

    Written out to show the equation (and to test the package wrapper against): hooks record the
    activations, ``torch.autograd.grad`` gives their gradients, and the hook is removed on exit.
    """
    (layer,) = _resolve(model, layer)
    images = _on_model(model, images)
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    try:
        with eval_mode(model):
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


def cam(model: nn.Module, images: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None,
        fc: str = "fc") -> torch.Tensor:
    """Class activation maps ``(B, h, w)`` at the resolution of ``model.forward_features`` (Zhou et al. 2016).

    ``M_c(i, j) = sum_k w_ck A_k(i, j)`` in the units of the logit: its spatial mean is ``y_c - b_c``.
    Scale with ``normalize_maps`` for display.

    Args:
        model: a classifier with ``forward_features`` (a map ``(B, K, h, w)``) whose ``forward_head`` is a
            global mean pool followed by the linear layer named ``fc`` (the course's ResNet, ``SmallVGG``).
        images: ``(B, C, H, W)`` input batch, as the model expects it.
        class_idx: the class explained, one for all images or one per image; ``None`` takes each image's
            predicted class.
    """
    if not hasattr(model, "forward_features"):
        raise TypeError(f"cam needs a model with forward_features (a conv feature map) and a global-average-pool + "
                        f"linear head; {type(model).__name__} has no forward_features")
    linear = model.get_submodule(fc)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"model.{fc} must be the nn.Linear after global pooling, got {type(linear).__name__}; "
                        f"pass its name as fc=...")
    with eval_mode(model), torch.no_grad():
        A = model.forward_features(_on_model(model, images))  # (B, K, h, w)
        if A.ndim != 4 or A.shape[1] != linear.in_features:
            raise ValueError(f"forward_features gives {tuple(A.shape)}, but {fc} expects {linear.in_features} "
                             f"channels: cam needs a (B, K, h, w) map pooled straight into {fc}")
        if class_idx is None:
            class_idx = model.forward_head(A).argmax(1)
        c = torch.as_tensor(class_idx, device=A.device).long()
        if c.ndim > 1 or (c.ndim == 1 and len(c) != len(A)):
            raise ValueError(f"class_idx must be one class or one per image ({len(A)}), got shape {tuple(c.shape)}")
        c = c.expand(len(A))
        w = linear.weight[c]  # (B, K): each image's class weights
        return torch.einsum("bk,bkhw->bhw", w, A)


def normalize_maps(maps: torch.Tensor | np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Min-max scale each map of ``(B, h, w)`` to [0, 1], optionally bilinearly resized to ``size`` first."""
    maps = torch.as_tensor(maps).float()
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = maps.amin((1, 2), keepdim=True), maps.amax((1, 2), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def occlusion_sensitivity(model: nn.Module, image: torch.Tensor, window: int = 11, stride: int = 1,
                          fill: float | Sequence[float] | torch.Tensor = 0.0, batch_size: int = 256) -> torch.Tensor:
    """Confidence of the originally predicted class with a ``window`` x ``window`` square greyed out, per position.

    The square starts at ``(r * stride, c * stride)`` and never leaves the image (no padding), so the map
    is ``((H - window) // stride + 1, (W - window) // stride + 1)``. Each entry is the softmax probability
    of the class predicted for the intact image, set to 0 where the occluded image is predicted as
    another class. The occluded copies are built and classified ``batch_size`` at a time.

    Args:
        image: one input ``(C, H, W)``, as the model expects it (e.g. normalised).
        fill: the grey of the square, in the same units as ``image`` (a scalar or one value per channel;
            with standardised inputs 0 is the training mean).
    """
    if image.ndim != 3:
        raise ValueError(f"image must be one (C, H, W) image, got shape {tuple(image.shape)}; loop over a batch")
    image = _on_model(model, image)
    C, H, W = image.shape
    if not 1 <= window <= min(H, W) or stride < 1:
        raise ValueError(f"need 1 <= window <= {min(H, W)} and stride >= 1, got window={window}, stride={stride}")
    fill = torch.as_tensor(fill, dtype=image.dtype, device=image.device).reshape(-1, 1, 1).expand(C, 1, 1)
    n_r, n_c = (H - window) // stride + 1, (W - window) // stride + 1
    tops = torch.arange(n_r, device=image.device).repeat_interleave(n_c) * stride  # row-major over positions
    lefts = torch.arange(n_c, device=image.device).repeat(n_r) * stride
    rows, cols = torch.arange(H, device=image.device), torch.arange(W, device=image.device)
    conf = torch.empty(n_r * n_c)
    with eval_mode(model), torch.no_grad():
        predicted = int(model(image[None]).argmax(1))
        for s in range(0, n_r * n_c, batch_size):
            t, l = tops[s:s + batch_size, None], lefts[s:s + batch_size, None]
            inside = (((rows >= t) & (rows < t + window))[:, :, None]
                      & ((cols >= l) & (cols < l + window))[:, None, :])  # (b, H, W): the square of each copy
            occluded = torch.where(inside[:, None], fill, image)  # (b, C, H, W)
            probs = model(occluded).softmax(1)
            p = probs[:, predicted]
            conf[s:s + batch_size] = torch.where(probs.argmax(1) == predicted, p, torch.zeros_like(p)).float().cpu()
    return conf.reshape(n_r, n_c)


def occlusion_object_share(confidence: torch.Tensor, mask: torch.Tensor, window: int,
                           stride: int = 1) -> tuple[float, float]:
    """Where does an occlusion map's confidence drop fall: on the object or on the background?

    Args:
        confidence: an ``occlusion_sensitivity`` map ``(n_r, n_c)``; its drop is ``max - confidence``.
        mask: ``(H, W)`` bool, True on the object's pixels (e.g. ``image > 0.1``).
        window, stride: those the map was made with; a window counts as "on the object" when its centre is.

    Returns ``(share of the total drop on object windows, share of windows on the object)``: a ratio of
    the two above 1 means the decision leans on the object more than its size alone would explain.
    """
    n_r, n_c = confidence.shape
    centres_r = torch.arange(n_r) * stride + window // 2
    centres_c = torch.arange(n_c) * stride + window // 2
    if centres_r[-1] >= mask.shape[0] or centres_c[-1] >= mask.shape[1]:
        raise ValueError(f"a {n_r}x{n_c} map with window {window}, stride {stride} does not fit a mask of "
                         f"shape {tuple(mask.shape)}")
    on = mask.bool().cpu()[centres_r][:, centres_c]  # (n_r, n_c)
    drop = confidence.max() - confidence
    total = float(drop.sum())
    share_drop = float(drop[on].sum()) / total if total > 0 else float("nan")
    return share_drop, float(on.float().mean())


def explain(model: nn.Module, image: torch.Tensor, layer: str, target: int | None = None, window: int = 7,
            stride: int = 1, fill: float = 0.0) -> dict[str, torch.Tensor]:
    """CAM, Grad-CAM and occlusion sensitivity of one image ``(C, H, W)`` side by side, each ``(H, W)`` in
    [0, 1] (occlusion as its normalised *drop*, so that for all three "hot" means "needed"). ``target`` is
    the class explained (the prediction by default); ``layer`` the one Grad-CAM hooks."""
    image = _on_model(model, image)
    with eval_mode(model), torch.no_grad():
        predicted = int(model(image[None]).argmax(1))
    target = predicted if target is None else int(target)
    H, W = image.shape[-2:]
    cam_map = normalize_maps(cam(model, image[None], target), size=(H, W))[0]
    grad_map = torch.as_tensor(gradcam(model, image[None], [target], layer))[0].float()
    conf = occlusion_sensitivity(model, image, window, stride, fill)
    drop = normalize_maps((conf.max() - conf)[None], size=None)[0]
    # each window's drop painted from its centre on (stride x stride pixels), zero where no window is centred
    occ = F.interpolate(drop[None, None], scale_factor=stride, mode="nearest")[0, 0]
    pad = window // 2
    occ = F.pad(occ, (pad, W - pad - occ.shape[1], pad, H - pad - occ.shape[0]))  # negative pads crop
    return {"CAM": cam_map, "Grad-CAM": grad_map, "occlusion": occ}


def input_gradient(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The plain gradient map ``(B, H, W)``: ``|d y_c / d x|`` summed over channels (Simonyan et al. 2014)."""
    x = _on_model(model, images).detach().requires_grad_(True)
    with eval_mode(model):
        logits = model(x)
        score = logits.gather(1, torch.as_tensor(targets, device=logits.device).long().view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().sum(1).detach().cpu()


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps ``(B, ...)``; 0 where a map is constant (its ranks
    carry nothing, e.g. a Grad-CAM cut to zero everywhere by its ReLU)."""
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy()):
        out.append(0.0 if x.std() == 0 or y.std() == 0 else float(spearmanr(x, y).statistic))
    return np.array(out)


def _reinitialize(module: nn.Module, g: torch.Generator) -> None:
    """Draw the weights and biases of every conv / linear layer in ``module`` afresh, uniform in
    ``±1/sqrt(fan_in)`` (PyTorch's default initialisation), from the generator ``g``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1 / math.sqrt(m.weight[0].numel())
            with torch.no_grad():
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.copy_((torch.rand(p.shape, generator=g) * 2 - 1).mul_(bound).to(p.device))


def cascading_randomization(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                            layers: Sequence[str], method: str = "gradient", gradcam_layer: str | None = None,
                            seed: int = 0, keep: int = 0) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Adebayo et al. (2018) sec. 3.1: re-initialise ``layers`` one after the other, top first, each time
    keeping the layers already randomised, and compare each image's map with the trained model's.

    Args:
        model: left untouched (a copy is randomised).
        layers: names of the layers in the order they are randomised, e.g. ``["fc", "features.conv6", ...]``;
            their conv / linear weights and biases are drawn afresh (normalisation layers are kept).
        method: ``"gradient"`` (``input_gradient``) or ``"gradcam"`` (at ``gradcam_layer``).
        keep: how many of the first images' maps to return, for display.

    Returns ``(rank correlations, maps)``: ``{layer: (B,) Spearman correlation of each image's map after
    randomising down to that layer with its map from the trained model}`` and ``{"trained" or layer:
    (keep, H, W) maps}``.
    """
    if method not in ("gradient", "gradcam"):
        raise ValueError(f"method must be 'gradient' or 'gradcam', got {method!r}")
    if method == "gradcam" and gradcam_layer is None:
        raise ValueError("method='gradcam' needs gradcam_layer, the layer Grad-CAM hooks (e.g. 'features.relu6')")
    work = copy.deepcopy(model)
    for name in layers:
        work.get_submodule(name)  # unknown names fail before any work

    def saliency(m):
        if method == "gradient":
            return input_gradient(m, images, targets)
        return torch.as_tensor(gradcam(m, images, targets, gradcam_layer)).float()

    g = torch.Generator().manual_seed(seed)
    trained = saliency(work)
    corr, shown = {}, {"trained": trained[:keep]}
    for name in layers:
        _reinitialize(work.get_submodule(name), g)
        maps = saliency(work)
        corr[name], shown[name] = _rank_correlation(trained, maps), maps[:keep]
    return corr, shown


__all__ = ["cam", "cascading_randomization", "explain", "gradcam", "gradcam_reference", "input_gradient",
           "normalize_maps", "occlusion_object_share", "occlusion_sensitivity"]
