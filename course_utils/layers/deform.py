"""Deformable convolution written from scratch: bilinear sampling, then an ordinary matrix product;
the function ``deform_conv2d_reference`` and the layer ``DeformConv2d`` that predicts its own offsets.

A regular k x k convolution reads its input on a fixed grid around every output position ``p``:
``y(p) = sum_k w_k x(p + p_k)``. A deformable convolution (Dai et al. 2017, "Deformable Convolutional
Networks", eq. 2) adds a learned, fractional offset to every grid point,

    y(p) = sum_k w_k * x(p + p_k + dp_k),

and reads ``x`` at the fractional position by bilinear interpolation (eq. 3-4). DCNv2 (Zhu et al. 2019,
"Deformable ConvNets v2", eq. 3) also multiplies each sample by a modulation scalar ``m_k`` in [0, 1]:
``y(p) = sum_k w_k * m_k * x(p + p_k + dp_k)``.

``deform_conv2d_reference`` follows the signature and tensor layouts of ``torchvision.ops.deform_conv2d``
so the two can be swapped and compared (``tests/layers/test_deform.py`` checks outputs and all gradients):

- ``offset`` ``(B, 2 * G * kh * kw, H_out, W_out)``: for offset group ``g`` and kernel point ``k = i * kw + j``,
  channel ``g * 2 * kh * kw + 2 * k`` holds the row offset ``dy`` and the next channel the column offset ``dx``;
- ``mask`` ``(B, G * kh * kw, H_out, W_out)``: channel ``g * kh * kw + k``;
- the sampling point of output ``(oy, ox)`` and kernel point ``(i, j)`` is
  ``(oy * stride - padding + i * dilation + dy, ox * stride - padding + j * dilation + dx)`` in pixel
  units of the *unpadded* input; ``padding`` only shifts the grid;
- every pixel outside the image reads as zero, so a point less than one pixel outside the border still
  gets the share of its neighbours that lie inside, and a point one pixel or more outside reads 0.

Nothing loops over pixels: the four neighbours of all sampling points are fetched with one ``gather``
each, and autograd differentiates the interpolation (with respect to the input, the offsets and the
mask) exactly as torchvision's hand-written backward does.

``DeformConv2d`` (Dai et al. 2017, section 2.1): "the offsets are obtained by applying a convolutional
layer over the same input feature map", with the same kernel size, stride and padding as the main
convolution, predicting ``2 k^2`` channels, a ``(dy, dx)`` pair per kernel point and output position.
With ``modulated=True`` it is DCNv2 (Zhu et al. 2019, section 3.1): the same layer also predicts ``k^2``
modulation scalars passed through a sigmoid. The offset layer starts at zero (weights and bias), as in
both papers, so an untrained ``DeformConv2d`` samples the regular grid and computes exactly a regular
convolution; the modulation logits start at zero too, so every mask starts at sigmoid(0) = 0.5 (DCNv2's
choice), which a following batch norm absorbs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ["BACKENDS", "DeformConv2d", "affine_scale_angle", "bilinear_sample", "deform_conv2d_reference",
           "deform_output_size", "grid_affine"]

BACKENDS = ("torchvision", "reference")


def deform_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length along one axis, as for ``nn.Conv2d``: ``(size + 2p - d(k - 1) - 1) // s + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def bilinear_sample(x: torch.Tensor, y_pos: torch.Tensor, x_pos: torch.Tensor) -> torch.Tensor:
    """Read ``x`` at fractional pixel positions, treating every pixel outside the image as zero.

    Args:
        x: ``(B, G, C, H, W)`` images, split into ``G`` groups of ``C`` channels.
        y_pos, x_pos: ``(B, G, P)`` row and column coordinates (pixel units, 0 = first pixel's centre);
            group ``g`` of ``x`` is read at the points of group ``g``.

    Returns:
        ``(B, G, C, P)``: ``sum over the 4 neighbours (r, c) of (1 - |y - r|) (1 - |x - c|) x[r, c]``.
    """
    B, G, C, H, W = x.shape
    flat = x.reshape(B, G, C, H * W)
    y0, x0 = torch.floor(y_pos), torch.floor(x_pos)
    ly, lx = y_pos - y0, x_pos - x0  # distance to the top-left neighbour, in [0, 1)
    y0, x0 = y0.long(), x0.long()
    out = 0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            r, c = y0 + dy, x0 + dx
            inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)  # (B, G, P); outside pixels read zero
            idx = (r.clamp(0, H - 1) * W + c.clamp(0, W - 1))  # a valid index; its value is masked out below
            values = flat.gather(3, idx[:, :, None, :].expand(B, G, C, idx.shape[-1]))  # (B, G, C, P)
            out = out + values * (wy * wx * inside)[:, :, None, :]
    return out


def _check(input, offset, weight, bias, mask, stride, padding, dilation):
    """Validate shapes; return ``(offset_groups, weight_groups, H_out, W_out)`` or raise a clear error."""
    if input.ndim != 4:
        raise ValueError(f"input must be (B, C, H, W), got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"weight must be (C_out, C_in / groups, kh, kw), got shape {tuple(weight.shape)}")
    B, C, H, W = input.shape
    C_out, C_per_group, kh, kw = weight.shape
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"need stride >= 1, dilation >= 1, padding >= 0; got {stride}, {dilation}, {padding}")
    if C_per_group == 0 or C % C_per_group != 0:
        raise ValueError(f"input has {C} channels, which is not a multiple of weight.shape[1] = {C_per_group}; "
                         f"weight must be (C_out, C_in / groups, kh, kw)")
    groups = C // C_per_group
    if C_out % groups != 0:
        raise ValueError(f"C_out = {C_out} is not divisible by groups = {groups}")
    H_out = deform_output_size(H, kh, stride[0], padding[0], dilation[0])
    W_out = deform_output_size(W, kw, stride[1], padding[1], dilation[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(f"the {kh}x{kw} kernel (dilation {dilation}) does not fit the {H}x{W} input with "
                         f"padding {padding}: output would be {H_out}x{W_out}; increase padding or use a smaller kernel")
    K = kh * kw
    if offset.ndim != 4 or offset.shape[1] % (2 * K) != 0 or offset.shape[1] == 0:
        raise ValueError(f"offset must be (B, 2 * offset_groups * kh * kw, H_out, W_out) = (B, multiple of {2 * K}, "
                         f"{H_out}, {W_out}); got shape {tuple(offset.shape)}")
    G = offset.shape[1] // (2 * K)
    if tuple(offset.shape) != (B, 2 * G * K, H_out, W_out):
        raise ValueError(f"offset has shape {tuple(offset.shape)} but must be {(B, 2 * G * K, H_out, W_out)}: "
                         f"one (dy, dx) pair per kernel point for every output position")
    if C % G != 0:
        raise ValueError(f"input channels ({C}) must be divisible by the number of offset groups ({G})")
    if mask is not None and tuple(mask.shape) != (B, G * K, H_out, W_out):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but must be {(B, G * K, H_out, W_out)} "
                         f"(one scalar per kernel point, offset group and output position)")
    if bias is not None and tuple(bias.shape) != (C_out,):
        raise ValueError(f"bias must have shape ({C_out},), got {tuple(bias.shape)}")
    return G, groups, H_out, W_out


def deform_conv2d_reference(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable convolution (DCNv1, or DCNv2 with ``mask``), from scratch; same call as
    ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G * kh * kw, H_out, W_out)``, ``(dy, dx)`` per kernel point and offset group ``G``.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation: ints or ``(h, w)`` pairs, as for ``nn.Conv2d``.
        mask: ``(B, G * kh * kw, H_out, W_out)`` modulation scalars, or ``None`` (all ones).

    Returns:
        ``(B, C_out, H_out, W_out)``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    G, groups, H_out, W_out = _check(input, offset, weight, bias, mask, stride, padding, dilation)
    B, C, H, W = input.shape
    C_out, _, kh, kw = weight.shape
    K, L = kh * kw, H_out * W_out

    # The regular grid: row of kernel point (i, j) at output (oy, ox) is oy * stride - padding + i * dilation.
    dev, dt = input.device, input.dtype
    rows = (torch.arange(kh, device=dev, dtype=dt) * dilation[0])[:, None] \
        + (torch.arange(H_out, device=dev, dtype=dt) * stride[0] - padding[0])[None, :]  # (kh, H_out)
    cols = (torch.arange(kw, device=dev, dtype=dt) * dilation[1])[:, None] \
        + (torch.arange(W_out, device=dev, dtype=dt) * stride[1] - padding[1])[None, :]  # (kw, W_out)
    grid_y = rows[:, None, :, None].expand(kh, kw, H_out, W_out).reshape(K, H_out, W_out)
    grid_x = cols[None, :, None, :].expand(kh, kw, H_out, W_out).reshape(K, H_out, W_out)

    off = offset.reshape(B, G, K, 2, H_out, W_out)  # channel g * 2K + 2k + {0: dy, 1: dx}
    y_pos = (grid_y + off[:, :, :, 0]).reshape(B, G, K * L)
    x_pos = (grid_x + off[:, :, :, 1]).reshape(B, G, K * L)

    # "deformable im2col": every input channel read at the K shifted points of every output position.
    columns = bilinear_sample(input.reshape(B, G, C // G, H, W), y_pos, x_pos)  # (B, G, C/G, K * L)
    columns = columns.reshape(B, G, C // G, K, L)
    if mask is not None:
        columns = columns * mask.reshape(B, G, 1, K, L)
    # (B, C * K, L) with channel-major, kernel-point-minor order: the order of weight.flatten(1).
    columns = columns.reshape(B, groups, (C // groups) * K, L)
    w = weight.reshape(groups, C_out // groups, (C // groups) * K)
    out = torch.einsum("gok,bgkl->bgol", w, columns).reshape(B, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


class DeformConv2d(nn.Module):
    """A deformable convolution with its own offset predictor.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as for ``nn.Conv2d`` (square kernel).
        modulated: also predict a sigmoid modulation mask per kernel point (DCNv2).
        backend: ``"torchvision"`` (``torchvision.ops.deform_conv2d``, compiled; the one to use on a GPU) or
            ``"reference"`` (``deform_conv2d_reference`` above, the from-scratch version; same numbers; on a
            CPU often faster than torchvision's kernel, on a GPU much slower).
        bias: learn a bias for the main convolution (not needed before a BatchNorm).

    Attributes:
        offset_conv: ``nn.Conv2d(in_channels, 2 k^2 (+ k^2), kernel_size, stride, padding)``, zero-initialised
            without drawing random numbers.
        weight, bias: the main convolution's parameters, shaped as ``nn.Conv2d``'s and initialised the same way,
            from the same random draws: under one seed a ``DeformConv2d`` and an ``nn.Conv2d`` start equal.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 modulated: bool = False, backend: str = "torchvision", bias: bool = True):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError("in_channels, out_channels, kernel_size and stride must be >= 1 and padding >= 0; "
                             f"got {in_channels}, {out_channels}, {kernel_size}, {stride}, {padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.modulated, self.backend = modulated, backend
        K = kernel_size * kernel_size
        # skip_init builds the offset conv without its random initialisation: it draws nothing from the global
        # generator, so under one seed a network's shared layers start from the same weights whether its convs
        # are deformable or regular (a paired comparison is then paired in its initial weights too).
        self.offset_conv = nn.utils.skip_init(nn.Conv2d, in_channels, (3 if modulated else 2) * K, kernel_size,
                                              stride, padding)
        nn.init.zeros_(self.offset_conv.weight)  # start on the regular grid (and with every mask at 0.5)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default, the same draws in the same order
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * K)
            nn.init.uniform_(self.bias, -bound, bound)

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predicted ``offset`` ``(B, 2 k^2, H_out, W_out)`` (``(dy, dx)`` per kernel point, in pixels) and
        ``mask`` ``(B, k^2, H_out, W_out)`` in (0, 1), or ``None`` when not modulated."""
        out = self.offset_conv(x)
        K2 = 2 * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[:, :K2], torch.sigmoid(out[:, K2:])

    def sampling_points(self, x: torch.Tensor) -> torch.Tensor:
        """Where each kernel point reads ``x``: ``(B, k^2, H_out, W_out, 2)`` as (row, column) in ``x``'s pixels.

        The regular grid ``(oy * stride - padding + i, ox * stride - padding + j)`` plus the predicted offsets.
        """
        offset, _ = self.offsets(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, _, H_out, W_out = offset.shape
        rows = torch.arange(kh, device=x.device)[:, None] + torch.arange(H_out, device=x.device)[None, :] * sh - ph
        cols = torch.arange(kw, device=x.device)[:, None] + torch.arange(W_out, device=x.device)[None, :] * sw - pw
        grid = torch.stack(torch.broadcast_tensors(rows[:, None, :, None], cols[None, :, None, :]), -1)  # (kh, kw, H, W, 2)
        grid = grid.reshape(kh * kw, H_out, W_out, 2).to(offset.dtype)
        return grid + offset.reshape(B, kh * kw, 2, H_out, W_out).permute(0, 1, 3, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets(x)
        if self.backend == "torchvision":
            from torchvision.ops import deform_conv2d as op
        else:
            op = deform_conv2d_reference
        return op(x.contiguous(), offset.contiguous(), self.weight, self.bias, stride=self.stride,
                  padding=self.padding, mask=mask.contiguous() if mask is not None else None)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, modulated={self.modulated}, backend={self.backend!r}, "
                f"bias={self.bias is not None}")


def grid_affine(points: torch.Tensor, kernel_size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The 2x2 linear map that best carries the regular kernel grid to learned sampling points, per image.

    At every output position the regular grid's kernel points ``g_k`` (centred: ``(i - c, j - c)``) and the
    learned points ``q_k`` (centred on their own mean, which removes each position's shift) are matched by
    least squares, ``A = argmin sum_positions w sum_k |q_k - A g_k|^2``, pooled over the positions of an image.
    ``A = I`` is the regular grid; ``2 I`` a grid spread twice as wide; a rotation matrix a turned grid.

    Args:
        points: ``(B, k^2, H, W, 2)`` (row, column) sampling points, as ``DeformConv2d.sampling_points`` returns.
        kernel_size: ``k`` (square kernels, dilation 1).
        weights: ``(B, H, W)`` non-negative weight of each position (e.g. 1 on the object, 0 on the
            background), or ``None`` for all positions equally; every image needs some positive weight.

    Returns:
        ``(B, 2, 2)`` in (row, column) coordinates.
    """
    B, K, H, W, _ = points.shape
    if K != kernel_size * kernel_size:
        raise ValueError(f"points have {K} kernel points per position, but a {kernel_size}x{kernel_size} kernel has "
                         f"{kernel_size * kernel_size}; pass the layer's kernel_size")
    if weights is None:
        weights = points.new_ones(B, H, W)
    if tuple(weights.shape) != (B, H, W):
        raise ValueError(f"weights must be (B, H, W) = {(B, H, W)}, got {tuple(weights.shape)}")
    total = weights.flatten(1).sum(1)
    if (weights < 0).any() or not (total > 0).all():
        raise ValueError("weights must be >= 0 with some positive weight in every image (no position selected?)")
    c = (kernel_size - 1) / 2
    ij = torch.arange(kernel_size, dtype=points.dtype, device=points.device) - c
    g = torch.stack(torch.meshgrid(ij, ij, indexing="ij"), -1).reshape(K, 2)  # (K, 2), kernel point k = i * k + j
    q = points - points.mean(1, keepdim=True)  # (B, K, H, W, 2), each position centred
    cross = torch.einsum("bkhwr,kc,bhw->brc", q, g, weights.to(points.dtype))  # sum w q g^T
    gram = g.T @ g * total.to(points.dtype)[:, None, None]  # sum w g g^T, (B, 2, 2)
    return cross @ torch.linalg.inv(gram)


def affine_scale_angle(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``sqrt(|det A|)`` and rotation angle (radians) of ``(..., 2, 2)`` maps in (row, column) coordinates.

    The angle is that of the nearest similarity, ``atan2(A[1, 0] - A[0, 1], A[0, 0] + A[1, 1])``, so that
    ``s [[cos a, -sin a], [sin a, cos a]]`` gives back ``(s, a)``.
    """
    if matrices.shape[-2:] != (2, 2):
        raise ValueError(f"matrices must be (..., 2, 2), got {tuple(matrices.shape)}")
    a, b, c, d = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 1, 0], matrices[..., 1, 1]
    return (a * d - b * c).abs().sqrt(), torch.atan2(c - b, a + d)
