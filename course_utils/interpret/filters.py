"""Filters of a CNN: which input patches excite a filter most, and what happens when it is turned off.

**Top-activating patches** (as in seed 004, sec. 2.2.1): run the images through the network, take the
``k`` largest entries ``(n, i, j)`` of one channel of one layer over all images and positions, and cut
from image ``n`` the receptive field of unit ``(i, j)`` (``course_utils.interpret.receptive``).

**Filter ablation.** ``ablate_filters`` turns filters off with forward hooks that zero their output
channels, rather than by zeroing weights: the weights are never touched (so nothing needs restoring),
and a channel stays off even where a normalisation follows the conv (zeroed weights would still leave
the normalisation's shift). For a conv with bias and nothing after it, both are the same.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.features import predict
from course_utils.hooks import eval_mode
from course_utils.interpret.receptive import Field, _on_model, _run_to, receptive_field


@dataclass(frozen=True)
class TopPatches:
    """The ``k`` strongest responses of one filter: ``patches`` ``(k, C, size, size)`` cut from the input
    with the receptive field (outside the image: ``fill``), ``values`` ``(k,)``, ``image_idx`` ``(k,)``,
    ``positions`` ``(k, 2)`` unit (row, col) in the layer's map, ``boxes`` ``(k, 4)`` (top, left, bottom,
    right) in image pixels, and the layer's ``field``."""

    patches: torch.Tensor
    values: torch.Tensor
    image_idx: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    field: Field


def cut_patch(image: torch.Tensor, box: tuple[int, int, int, int], fill: float = 0.0) -> torch.Tensor:
    """The pixels of ``image`` ``(C, H, W)`` inside ``box``, with ``fill`` where the box leaves the image."""
    top, left, bottom, right = box
    H, W = image.shape[-2:]
    pad = (max(0, -left), max(0, right - W), max(0, -top), max(0, bottom - H))
    padded = F.pad(image, pad, value=fill)
    return padded[:, top + pad[2]:bottom + pad[2], left + pad[0]:right + pad[0]]


def _filter_responses(model: nn.Module, layer_name: str, filter_idx: int, images: torch.Tensor, batch_size: int):
    """Yield ``(start, response)`` per batch: channel ``filter_idx`` of ``layer_name`` as ``(b, h, w)`` on the CPU,
    in eval mode without gradients; a clear error when the layer has no such channel."""
    layer = model.get_submodule(layer_name)
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(images), batch_size):
            out = _run_to(model, layer, images[s:s + batch_size])
            if not 0 <= filter_idx < out.shape[1]:
                raise ValueError(f"{layer_name} has {out.shape[1]} channels; filter_idx={filter_idx} is out of range")
            yield s, out[:, filter_idx].float().cpu()


def top_activating_patches(model: nn.Module, layer_name: str, filter_idx: int, images: torch.Tensor, k: int = 5,
                           batch_size: int = 256, fill: float = 0.0) -> TopPatches:
    """The ``k`` largest values of channel ``filter_idx`` of ``layer_name`` over all images and positions,
    with the input patch each one sees (seed 004, sec. 2.2.1: one response is one entry ``(i, j)``).

    Args:
        images: ``(N, C, H, W)``, as the model expects them (e.g. normalised); patches are cut from them.
        fill: the value of pixels outside the image (0 = the zero padding the convs saw, for normalised inputs).
    """
    field = receptive_field(model, layer_name)
    best_v, best_i = torch.empty(0), torch.empty(0, dtype=torch.long)
    for s, resp in _filter_responses(model, layer_name, filter_idx, images, batch_size):
        h, w = resp.shape[1:]
        v, i = resp.flatten().topk(min(k, resp.numel()))
        v, i = torch.cat([best_v, v]), torch.cat([best_i, i + s * h * w])  # flat index over (N, h, w)
        order = v.sort(descending=True, stable=True).indices[:k]
        best_v, best_i = v[order], i[order]
    n, rest = best_i // (h * w), best_i % (h * w)
    positions = torch.stack([rest // w, rest % w], 1)
    boxes = torch.tensor([field.box(int(r), int(c)) for r, c in positions]).reshape(-1, 4)
    patches = torch.stack([cut_patch(images[int(m)].cpu(), tuple(b.tolist()), fill) for m, b in zip(n, boxes)])
    return TopPatches(patches, best_v, n, positions, boxes, field)


def max_responses(model: nn.Module, layer_names: Sequence[str], images: torch.Tensor,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The strongest response of every filter of each layer to each image: ``{name: (N, channels)}``,
    the maximum over positions (one forward pass per batch, hooks removed on exit)."""
    layers = {name: model.get_submodule(name) for name in layer_names}
    out = {name: [] for name in layer_names}
    store = {}
    handles = [layer.register_forward_hook(lambda m, i, o, name=name: store.__setitem__(name, o))
               for name, layer in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            for s in range(0, len(images), batch_size):
                model(_on_model(model, images[s:s + batch_size]))
                for name in layer_names:
                    out[name].append(store[name].amax((2, 3)).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(v) for name, v in out.items()}


def class_selectivity(responses: torch.Tensor, labels: torch.Tensor, top: int = 50) -> torch.Tensor:
    """For each filter (column of ``responses`` ``(N, channels)``), the share of its ``top`` most exciting
    images that belong to their most common class: for a filter that fires on anything, such as an edge
    detector, the expected maximum of a class count drawn by chance, above 1/num_classes (about 0.17 with
    ``top=50`` and ten balanced classes); near 1 for a filter that fires on one kind of object part."""
    labels = torch.as_tensor(labels).cpu()
    if len(labels) != len(responses) or not 1 <= top <= len(labels):
        raise ValueError(f"need one label per image ({len(responses)}) and 1 <= top <= N, got {len(labels)} labels, "
                         f"top={top}")
    idx = responses.topk(top, dim=0).indices  # (top, channels)
    classes = labels[idx]  # (top, channels)
    counts = F.one_hot(classes, int(labels.max()) + 1).sum(0)  # (channels, num_classes)
    return counts.amax(1).float() / top


# ------------------------------------------------------------------------------------------- ablation
@contextmanager
def ablate_filters(model: nn.Module, filters: Mapping[str, Sequence[int]]) -> Iterator[nn.Module]:
    """Inside the ``with`` block, channels ``filters[name]`` of each layer ``name`` output zero.

    Forward hooks multiply the chosen channels by 0 (so gradients still flow through the others); they are
    removed on exit, also when the block raises. The weights are never changed.
    """
    handles = []
    try:
        for name, idx in filters.items():
            try:
                layer = model.get_submodule(name)
            except AttributeError:
                convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
                raise ValueError(f"{type(model).__name__} has no layer {name!r}; its conv layers are {convs}") from None
            idx = torch.as_tensor(list(idx), dtype=torch.long)
            width = getattr(layer, "out_channels", None)
            if len(idx) and (idx.min() < 0 or (width is not None and idx.max() >= width)):
                raise ValueError(f"{name} has {width} filters; indices {idx.tolist()} are out of range")

            def hook(module, inputs, output, idx=idx, name=name):
                if len(idx) and idx.max() >= output.shape[1]:
                    raise ValueError(f"{name} outputs {output.shape[1]} channels; "
                                     f"indices {idx.tolist()} are out of range")
                keep = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
                keep[idx.to(output.device)] = 0
                return output * keep.view(1, -1, *([1] * (output.ndim - 2)))

            handles.append(layer.register_forward_hook(hook))
        yield model
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class AblationEffect:
    """Accuracy before and after turning filters off; ``missed`` are the indices right before and wrong after."""

    accuracy: float
    new_accuracy: float
    missed: torch.Tensor

    @property
    def misses(self) -> int:
        return len(self.missed)


def ablation_effect(model: nn.Module, filters: Mapping[str, Sequence[int]], loader,
                    before: torch.Tensor | None = None) -> AblationEffect:
    """Compare the model's predictions over ``loader`` (in order) with and without ``filters``; pass the
    intact predictions as ``before`` to avoid recomputing them for every ablation."""
    if getattr(loader, "shuffle", False):
        raise ValueError("ablation_effect compares predictions image by image: give a loader with shuffle=False")
    targets = torch.cat([y for _, y in loader]).cpu()
    with eval_mode(model):
        before = predict(model, loader).argmax(1) if before is None else before
        with ablate_filters(model, filters):
            after = predict(model, loader).argmax(1)
    right, wrong_now = before == targets, after != targets
    return AblationEffect(right.float().mean().item(), (after == targets).float().mean().item(),
                          (right & wrong_now).nonzero().flatten())


def border_share(model: nn.Module, layer_name: str, filter_idx: int, images: torch.Tensor,
                 batch_size: int = 256) -> tuple[float, float]:
    """The share of one filter's total response (summed over images and positions) given by units whose
    receptive field reaches beyond the image, i.e. that see the padding. For a filter blind to the border,
    about the share of such units (the second value returned); much more, and the filter responds to what
    the padding puts next to the image.

    Returns ``(share of the response, share of the units)``.
    """
    field = receptive_field(model, layer_name)
    H, W = images.shape[-2:]
    total, border, mask = 0.0, 0.0, None
    for _, resp in _filter_responses(model, layer_name, filter_idx, images, batch_size):
        if mask is None:
            h, w = resp.shape[1:]
            boxes = torch.tensor([field.box(r, c) for r in range(h) for c in range(w)]).reshape(h, w, 4)
            mask = (boxes[..., 0] < 0) | (boxes[..., 1] < 0) | (boxes[..., 2] > H) | (boxes[..., 3] > W)
        total += float(resp.sum())
        border += float(resp[:, mask].sum())
    return (border / total if total > 0 else float("nan")), float(mask.float().mean())


__all__ = ["AblationEffect", "TopPatches", "ablate_filters", "ablation_effect", "border_share", "class_selectivity",
           "cut_patch", "max_responses", "top_activating_patches"]
