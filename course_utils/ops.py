"""Deformable convolution written from scratch: bilinear sampling, then an ordinary matrix product.

A regular k x k convolution reads its input on a fixed grid around every output position ``p``:
``y(p) = sum_k w_k x(p + p_k)``. A deformable convolution (Dai et al. 2017, "Deformable Convolutional
Networks", eq. 2) adds a learned, fractional offset to every grid point,

    y(p) = sum_k w_k * x(p + p_k + dp_k),

and reads ``x`` at the fractional position by bilinear interpolation (eq. 3-4). DCNv2 (Zhu et al. 2019,
"Deformable ConvNets v2", eq. 3) also multiplies each sample by a modulation scalar ``m_k`` in [0, 1]:
``y(p) = sum_k w_k * m_k * x(p + p_k + dp_k)``.

``deform_conv2d_reference`` follows the signature and tensor layouts of ``torchvision.ops.deform_conv2d``
so the two can be swapped and compared (``tests/test_ops.py`` checks outputs and all gradients):

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
"""

from __future__ import annotations

import torch
from torch.nn.modules.utils import _pair

__all__ = ["bilinear_sample", "deform_conv2d_reference", "deform_output_size"]


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
