"""Receptive fields: how much of the input image one unit of a layer sees.

A unit of a conv layer sees a square of the input. Going through a layer with kernel ``k``, dilation
``d``, stride ``s`` and padding ``p`` (a conv or a pooling), the field grows and its units spread out
(Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019,
eq. 1-2)::

    size_l  = size_{l-1} + (d_l (k_l - 1)) * jump_{l-1}
    jump_l  = jump_{l-1} * s_l                     (input pixels between neighbouring units)
    start_l = start_{l-1} - p_l * jump_{l-1}       (first input pixel seen by unit (0, 0); < 0 is padding)

Unit ``(i, j)`` then sees rows ``start + i * jump ... start + i * jump + size - 1`` (and the same for
columns). Point-wise layers (activations, normalisation, dropout) change nothing: by the usual
convention a normalisation counts as point-wise even when its statistics pool over the image.

``receptive_field_of_stack`` folds the recurrence over a list of layers; ``receptive_field_table`` lists it
layer by layer in the order a forward pass runs them. ``receptive_field`` finds the
path by tracing the model's ``forward`` with ``torch.fx``, so it also handles residual networks: where
branches meet (``a + b``, ``torch.cat``) the field is the union of the branches' fields, which is the
field of the longest path when the shortcut is an identity, a subsampling or a 1x1 conv. It is the
*theoretical* field: the gradient of a unit is non-zero only inside it (``gradient_field`` measures
that), and a trained network usually weighs its centre most (Luo et al. 2016, "effective receptive field").
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from typing import Iterator, Sequence

import pandas as pd
import torch
import torch.fx
from torch import nn

from course_utils.hooks import dry_run, eval_mode, forward_hooks
from course_utils.layers.norms import _AffineNorm

Pair = tuple[int, int]


@dataclass(frozen=True)
class Field:
    """Receptive field along (rows, cols): ``size`` pixels seen by one unit, ``jump`` pixels between
    neighbouring units, ``start`` the first pixel seen by unit (0, 0) (negative: it lies in the padding)."""

    size: Pair
    jump: Pair
    start: Pair

    def then(self, nxt: "Field") -> "Field":
        """The field after going through a layer whose own field (in units of this one) is ``nxt``."""
        return Field(tuple(r + (rn - 1) * j for r, rn, j in zip(self.size, nxt.size, self.jump)),
                     tuple(j * jn for j, jn in zip(self.jump, nxt.jump)),
                     tuple(s + sn * j for s, sn, j in zip(self.start, nxt.start, self.jump)))

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` input pixels seen by unit ``(i, j)``, bottom/right exclusive."""
        top, left = self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]
        return top, left, top + self.size[0], left + self.size[1]

    def __str__(self) -> str:
        return f"{self.size[0]}x{self.size[1]} (jump {self.jump[0]}, start {self.start[0]})"


IDENTITY = Field((1, 1), (1, 1), (0, 0))
POINTWISE_LAYERS = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout,
                    nn.Dropout2d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, _AffineNorm)
GLOBAL_LAYERS = (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _pair(v) -> Pair:
    return (v, v) if isinstance(v, int) else tuple(v)


def layer_field(layer: nn.Module) -> Field | None:
    """The field of one conv / pooling layer over its own input, ``IDENTITY`` for a point-wise layer,
    ``None`` for anything else."""
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(layer.kernel_size), _pair(layer.stride)
        d = _pair(getattr(layer, "dilation", 1))  # AvgPool2d has none
        span = tuple(di * (ki - 1) + 1 for di, ki in zip(d, k))
        p = layer.padding
        if isinstance(p, str):  # Conv2d(padding="same" | "valid"); "same" puts the odd pixel at the end
            p = tuple((sp - 1) // 2 for sp in span) if p == "same" else (0, 0)
        return Field(span, s, tuple(-pi for pi in _pair(p)))
    if isinstance(layer, POINTWISE_LAYERS):
        return IDENTITY
    return None


def receptive_field_of_stack(layers: Sequence[nn.Module]) -> Field:
    """The field of the last of ``layers`` applied one after the other (the recurrence in the module docstring)."""
    fields = []
    for layer in layers:
        f = layer_field(layer)
        if f is None:
            raise TypeError(f"receptive_field_of_stack knows conv, pooling and point-wise layers, not "
                            f"{type(layer).__name__}; leave it out if it does not change the spatial layout")
        fields.append(f)
    return reduce(Field.then, fields, IDENTITY)


def receptive_field_table(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """One row per conv / pooling layer, in the order the forward pass runs them: ``layer``, ``type``,
    ``kernel``, ``stride``, ``output size``, ``jump`` and ``receptive field`` (pixels of the input).

    The order comes from hooks on one zero batch of ``input_shape`` ``(B, C, H, W)``, so branches and
    residual shortcuts are listed as they run. ``kernel`` is a dilated conv's span, ``d (k - 1) + 1``.
    """
    order = []
    with forward_hooks((m, lambda mod, i, o, name=name: order.append((name, mod, o.shape[-1])))
                       for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))):
        dry_run(model, input_shape)
    field, rows = IDENTITY, []
    for name, m, size in order:
        own = layer_field(m)
        if len(set(own.size)) != 1 or len(set(own.jump)) != 1:
            raise ValueError(f"{name} is not square (kernel {m.kernel_size}, stride {m.stride}); the table lists one "
                             f"side per layer")
        field = field.then(own)
        rows.append({"layer": name, "type": type(m).__name__, "kernel": own.size[0], "stride": own.jump[0],
                     "output size": size, "jump": field.jump[0], "receptive field": field.size[0]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- through the graph
@dataclass(frozen=True)
class _Opaque:
    """A value whose field cannot be given as a box: it sees the whole image, or an operation is unknown."""

    reason: str


POINTWISE_OPS = {"add", "sub", "mul", "truediv", "div", "neg", "relu", "relu_", "gelu", "silu", "sigmoid", "tanh",
                 "leaky_relu", "elu", "dropout", "contiguous", "clone", "float", "to", "clamp", "add_", "mul_",
                 "addcmul", "abs", "square", "pow", "sqrt", "exp", "detach"}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm"}
GLOBAL_OPS = {"flatten", "view", "reshape", "linear", "adaptive_avg_pool2d", "adaptive_max_pool2d", "matmul",
              "permute", "transpose", "interpolate"}
SHAPE_OPS = {"size", "dim", "getattr"}


def _merge(values: list) -> Field | _Opaque | None:
    """Where branches meet: the union of their fields (they must advance with the same jump)."""
    values = [v for v in values if v is not None]  # constants (weights, numbers) see no pixel
    if not values:
        return None
    opaque = [v for v in values if isinstance(v, _Opaque)]
    if opaque:
        return opaque[0]
    if len({v.jump for v in values}) > 1:
        return _Opaque(f"branches with different strides {sorted({v.jump for v in values})} are combined")
    first = tuple(min(v.start[a] for v in values) for a in (0, 1))
    last = tuple(max(v.start[a] + v.size[a] for v in values) for a in (0, 1))
    return Field(tuple(e - b for b, e in zip(first, last)), values[0].jump, first)


def _slice_field(f: Field, index) -> Field | _Opaque:
    """``x[:, :, a::s, b::t]`` on a (B, C, H, W) tensor: unit 0 moves to old unit ``a``, the jump grows ``s`` times."""
    index = index if isinstance(index, tuple) else (index,)
    if Ellipsis in index:
        e = index.index(Ellipsis)
        index = index[:e] + (slice(None),) * (4 - len(index) + 1) + index[e + 1:]
    spatial = list(index[2:4]) + [slice(None)] * (2 - len(index[2:4]))
    if not all(isinstance(sl, slice) and (sl.start or 0) >= 0 and (sl.step or 1) >= 1 for sl in spatial):
        return _Opaque(f"indexing {index} on the spatial dimensions")
    a, s = [sl.start or 0 for sl in spatial], [sl.step or 1 for sl in spatial]
    return f.then(Field((1, 1), tuple(s), tuple(a)))


def _op_field(name: str, node: torch.fx.Node, fields: dict) -> Field | _Opaque | None:
    inputs = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: inputs.append(fields[n]))
    merged = _merge(inputs)
    if name in SHAPE_OPS or merged is None:
        return None
    if isinstance(merged, _Opaque):
        return merged
    if name == "getitem":
        return _slice_field(merged, node.args[1])
    if name == "pad":
        pad = list(node.args[1] if len(node.args) > 1 else node.kwargs["pad"]) + [0, 0, 0, 0]
        return Field(merged.size, merged.jump, (merged.start[0] - pad[2] * merged.jump[0],
                                                merged.start[1] - pad[0] * merged.jump[1]))
    if name in REDUCTIONS:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dims, torch.fx.Node):  # torch.max(a, b): element-wise between two tensors
            return merged
        dims = (dims,) if isinstance(dims, int) else dims
        return _Opaque(f"{name} over dims {dims}") if dims is None or {2, 3, -1, -2} & set(dims) else merged
    if name in ("cat", "stack"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return merged if dim in (0, 1) else _Opaque(f"{name} along dim {dim}")
    if name in POINTWISE_OPS:
        return merged
    if name in GLOBAL_OPS:
        return _Opaque(f"{name} mixes all positions")
    return _Opaque(f"receptive_field does not know how {name!r} changes positions")


class _Tracer(torch.fx.Tracer):
    """Keeps conv / pool / point-wise layers and the target layer as single nodes."""

    def __init__(self, leaf: nn.Module | None = None):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return m is self.leaf or layer_field(m) is not None or super().is_leaf_module(m, qualname)


def _module_field(module: nn.Module, target: str | None = None) -> Field | _Opaque | None:
    """Field of ``module``'s output (or of its submodule ``target``'s output) over its first input."""
    leaf = module.get_submodule(target) if target else None
    try:
        graph = _Tracer(leaf).trace(module)
    except Exception as e:  # fx cannot follow data-dependent Python control flow
        raise TypeError(f"receptive_field traces {type(module).__name__}.forward with torch.fx and failed ({e}); "
                        f"list the layers on the path and use receptive_field_of_stack instead") from e
    if target and sum(n.op == "call_module" and n.target == target for n in graph.nodes) != 1:
        raise ValueError(f"layer {target!r} must be called exactly once in forward")
    fields, first_input = {}, True
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node], first_input = (IDENTITY if first_input else None), False
        elif node.op == "get_attr":
            fields[node] = None
        elif node.op == "call_module":
            sub = module.get_submodule(node.target)
            inp = _merge([fields[a] for a in node.all_input_nodes])
            own = layer_field(sub)
            if own is None:
                if sub is leaf:
                    own = _module_field(sub)  # the target is a block: trace it on its own
                elif isinstance(sub, GLOBAL_LAYERS):
                    own = _Opaque(f"{node.target} ({type(sub).__name__}) mixes all positions")
                else:
                    own = _Opaque(f"receptive_field does not know the layer {node.target} ({type(sub).__name__})")
            fields[node] = inp if not isinstance(inp, Field) else (own if not isinstance(own, Field) else inp.then(own))
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else node.target.__name__
            fields[node] = _op_field(name, node, fields)
        elif node.op == "output":
            return fields[node.args[0]] if isinstance(node.args[0], torch.fx.Node) else None
        if target and node.op == "call_module" and node.target == target:
            return fields[node]
    return None


def receptive_field(model: nn.Module, layer_name: str) -> Field:
    """The receptive field of the units of ``layer_name`` (a module name, e.g. ``"features.conv3"`` or
    ``"stage2"``) on the model's input, found by tracing ``model.forward`` (see the module docstring)."""
    try:
        model.get_submodule(layer_name)
    except AttributeError:
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
        raise ValueError(f"{type(model).__name__} has no layer {layer_name!r}; "
                         f"its conv/pool layers are {names}") from None
    f = _module_field(model, layer_name)
    if not isinstance(f, Field):
        why = f.reason if isinstance(f, _Opaque) else "it does not depend on the input"
        raise ValueError(f"layer {layer_name!r} has no receptive field box: {why}")
    return f


def _on_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``model``'s first parameter (or buffer): the one place the interpret tools
    decide where their inputs go, so callers pass tensors from anywhere."""
    ref = next(model.parameters(), None)
    ref = next(model.buffers(), None) if ref is None else ref
    return x if ref is None else x.to(ref.device)


# ------------------------------------------------------------------------------------- measuring
class _Stop(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the network is not needed."""


@contextmanager
def _capture(layer: nn.Module, stop: bool = True) -> Iterator[dict]:
    store = {}

    def hook(module, inputs, output):
        store["out"] = output
        if stop:
            raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _run_to(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of ``layer`` for input ``x`` (the model runs only as far as needed)."""
    with _capture(layer) as store:
        try:
            model(_on_model(model, x))
        except _Stop:
            pass
    if "out" not in store:
        raise ValueError(f"the layer {type(layer).__name__} did not run in the model's forward pass")
    return store["out"]


def gradient_field(model: nn.Module, layer_name: str, image: torch.Tensor, position: tuple[int, int]) -> torch.Tensor:
    """``|d sum_k A_k(i, j) / d x|`` ``(H, W)``: which input pixels unit ``position = (i, j)`` of the layer
    responds to at ``image`` ``(C, H, W)``. Non-zero only inside its receptive field; a ReLU that is off or
    a max-pool that picks another pixel can make it zero inside too."""
    layer = model.get_submodule(layer_name)
    x = image[None].detach().clone().requires_grad_(True)
    with eval_mode(model):
        out = _run_to(model, layer, x)
        (grad,) = torch.autograd.grad(out[0, :, position[0], position[1]].sum(), x)
    return grad[0].abs().sum(0)


def nonzero_box(m: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the non-zero entries of a 2-D map, bottom/right exclusive."""
    rows, cols = m.ne(0).any(1).nonzero().flatten(), m.ne(0).any(0).nonzero().flatten()
    if not len(rows):
        raise ValueError("the map is zero everywhere")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


__all__ = ["Field", "IDENTITY", "gradient_field", "layer_field", "nonzero_box", "receptive_field",
           "receptive_field_of_stack", "receptive_field_table"]
