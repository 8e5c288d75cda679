"""The from-scratch deformable convolution against torchvision.ops.deform_conv2d: outputs and every gradient;
the DeformConv2d layer: starts as a regular conv (and from nn.Conv2d's random draws), backends agree, sampling
points, parameter counts; the affine fit of sampling points against numpy's least squares."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from course_utils.layers.deform import (DeformConv2d, affine_scale_angle, bilinear_sample, deform_conv2d_reference,
                                        deform_output_size, grid_affine)

CASES = [
    # B, C_in, C_out, H, W, k, stride, padding, dilation, offset groups, weight groups
    dict(B=2, C=3, O=4, H=7, W=6, k=(3, 3), stride=1, padding=1, dilation=1, G=1, groups=1),
    dict(B=1, C=2, O=3, H=9, W=8, k=(3, 3), stride=2, padding=0, dilation=1, G=1, groups=1),
    dict(B=2, C=4, O=2, H=8, W=9, k=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), G=2, groups=1),
    dict(B=1, C=4, O=6, H=6, W=6, k=(2, 2), stride=1, padding=0, dilation=2, G=1, groups=2),
    dict(B=3, C=2, O=2, H=5, W=5, k=(1, 1), stride=1, padding=0, dilation=1, G=2, groups=1),
    dict(B=2, C=6, O=4, H=10, W=7, k=(3, 3), stride=3, padding=2, dilation=1, G=3, groups=2),
]


def make(case, scale=2.5, seed=0, dtype=torch.float64):
    """Random inputs; offsets up to ``scale`` pixels (non-integer) so that some points fall outside the image."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = case["k"]
    s, p, d = (torch.nn.modules.utils._pair(case[n]) for n in ("stride", "padding", "dilation"))
    Ho = deform_output_size(case["H"], kh, s[0], p[0], d[0])
    Wo = deform_output_size(case["W"], kw, s[1], p[1], d[1])
    K = kh * kw
    x = torch.randn(case["B"], case["C"], case["H"], case["W"], generator=g, dtype=dtype)
    offset = (torch.rand(case["B"], 2 * case["G"] * K, Ho, Wo, generator=g, dtype=dtype) * 2 - 1) * scale
    weight = torch.randn(case["O"], case["C"] // case["groups"], kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(case["O"], generator=g, dtype=dtype)
    mask = torch.rand(case["B"], case["G"] * K, Ho, Wo, generator=g, dtype=dtype)
    return x, offset, weight, bias, mask


def both(case, use_mask, use_bias=True, **kw):
    """Forward and backward through both implementations with the same random output gradient."""
    x, offset, weight, bias, mask = make(case, **kw)
    results = []
    for fn in (deform_conv2d_reference, deform_conv2d):
        leaves = [t.clone().requires_grad_(True) for t in (x, offset, weight, bias, mask)]
        xi, oi, wi, bi, mi = leaves
        out = fn(xi, oi, wi, bi if use_bias else None, stride=case["stride"], padding=case["padding"],
                 dilation=case["dilation"], mask=mi if use_mask else None)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        out.backward(grad_out)
        results.append((out.detach(), [t.grad for t in leaves]))
    return results


@pytest.mark.parametrize("use_mask", [False, True], ids=["dcn_v1", "dcn_v2_mask"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c['k']}-s{c['stride']}-p{c['padding']}-d{c['dilation']}-G{c['G']}-g{c['groups']}")
def test_forward_and_gradients_match_torchvision(case, use_mask):
    (ours, our_grads), (theirs, their_grads) = both(case, use_mask)
    torch.testing.assert_close(ours, theirs)
    names = ["input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, our_grads, their_grads):
        if name == "mask" and not use_mask:
            assert a is None  # the reference never touches an unused mask
            continue
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient w.r.t. {name}: {m}")


def test_without_bias_and_in_float32():
    case = CASES[0]
    x, offset, weight, _, mask = make(case, dtype=torch.float32)
    kw = dict(padding=1, mask=mask)
    torch.testing.assert_close(deform_conv2d_reference(x, offset, weight, **kw), deform_conv2d(x, offset, weight, **kw),
                               atol=1e-5, rtol=1e-5)


def test_points_far_outside_read_zero_and_near_border_read_a_share():
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    offset[0, 0] = -10.0  # every point ten rows above the image
    assert deform_conv2d_reference(x, offset, w).abs().max() == 0
    offset[0, 0] = -0.25  # a quarter pixel up: the top row keeps 3/4 of its value, the others all of it
    out = deform_conv2d_reference(x, offset, w)[0, 0]
    torch.testing.assert_close(out[0], torch.full((4,), 0.75, dtype=torch.float64))
    torch.testing.assert_close(out[1:], torch.ones(3, 4, dtype=torch.float64))
    torch.testing.assert_close(out, deform_conv2d(x, offset, w)[0, 0])


@pytest.mark.parametrize("case", CASES[:4], ids=["s1p1", "s2", "dilated", "grouped"])
def test_zero_offsets_equal_a_regular_convolution(case):
    x, offset, weight, bias, _ = make(case)
    out = deform_conv2d_reference(x, torch.zeros_like(offset[:, : 2 * weight.shape[2] * weight.shape[3]]), weight, bias,
                                  stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    groups = case["C"] // weight.shape[1]
    expected = F.conv2d(x, weight, bias, stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                        groups=groups)
    torch.testing.assert_close(out, expected)


def test_integer_offsets_shift_the_input():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 6, 6, dtype=torch.float64)
    offset[:, 0::2] = 1.0  # every point one row down
    # point (i, j) of output (r, c) reads row r - 1 + i + 1 = r + i: no zero row above, two below
    moved = F.pad(x, (1, 1, 0, 2))
    torch.testing.assert_close(deform_conv2d_reference(x, offset, w, padding=1), F.conv2d(moved, w))


def test_bilinear_sample_matches_grid_sample():
    """With align_corners=True and zero padding, grid_sample interpolates the same way."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    ys = torch.rand(2, 1, 40, generator=g, dtype=torch.float64) * 8 - 1.5
    xs = torch.rand(2, 1, 40, generator=g, dtype=torch.float64) * 10 - 1.5
    ours = bilinear_sample(x[:, None], ys, xs)[:, 0]  # (2, 3, 40)
    grid = torch.stack([xs / (7 - 1) * 2 - 1, ys / (5 - 1) * 2 - 1], -1)  # (2, 1, 40, 2) as (x, y) in [-1, 1]
    theirs = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, :, 0]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("change, message", [
    (lambda x, o, w, m: (x[0], o, w, m), "input must be"),
    (lambda x, o, w, m: (x, o, w[0], m), "weight must be"),
    (lambda x, o, w, m: (x, o[:, :5], w, m), "offset must be"),
    (lambda x, o, w, m: (x, o[:, :, :3], w, m), "offset has shape"),
    (lambda x, o, w, m: (x, o, w[:, :2], m), "not a multiple of weight.shape"),
    (lambda x, o, w, m: (x, o, w, m[:, :4]), "mask has shape"),
    (lambda x, o, w, m: (x[:, :, :2, :2], o, torch.randn(4, 3, 5, 5, dtype=w.dtype), m), "does not fit"),
])
def test_bad_shapes_raise_clear_errors(change, message):
    x, offset, weight, _, mask = make(CASES[0])
    x, offset, weight, mask = change(x, offset, weight, mask)
    with pytest.raises(ValueError, match=message):
        deform_conv2d_reference(x, offset, weight, padding=1, mask=mask)


def test_offset_groups_must_divide_channels():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match="divisible by the number of offset groups"):
        deform_conv2d_reference(x, torch.zeros(1, 2 * 2 * 9, 5, 5), torch.randn(2, 3, 3, 3), padding=1)
    with pytest.raises(ValueError, match="bias must have shape"):
        deform_conv2d_reference(x, torch.zeros(1, 18, 5, 5), torch.randn(2, 3, 3, 3), torch.zeros(3), padding=1)


# ------------------------------------------------------------------ the DeformConv2d layer
def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
def test_deform_conv_starts_as_a_regular_conv(modulated, stride, padding):
    layer = DeformConv2d(3, 5, 3, stride=stride, padding=padding, modulated=modulated)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.zero_()
        layer.bias.zero_()
    x = torch.randn(2, 3, 9, 9)
    offset, mask = layer.offsets(x)
    assert offset.abs().max() == 0  # zero-initialised offset predictor: the regular grid
    expected = conv(x)
    if modulated:
        torch.testing.assert_close(mask, torch.full_like(mask, 0.5))  # sigmoid(0), DCNv2's start
        expected = 0.5 * expected
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_initialisation_matches_nn_conv2d_statistics():
    torch.manual_seed(0)
    layer, conv = DeformConv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
    assert abs(layer.weight.std().item() / conv.weight.std().item() - 1) < 0.05
    assert layer.bias.abs().max() <= 1 / (64 * 9) ** 0.5


@pytest.mark.parametrize("modulated", [False, True])
def test_backends_agree_on_outputs_and_gradients(modulated):
    torch.manual_seed(1)
    a = DeformConv2d(4, 6, 3, stride=2, padding=1, modulated=modulated, backend="torchvision").double()
    nn.init.normal_(a.offset_conv.weight, std=0.5)  # move the points off the grid, some outside the image
    nn.init.normal_(a.offset_conv.bias, std=1.0)
    b = DeformConv2d(4, 6, 3, stride=2, padding=1, modulated=modulated, backend="reference").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4, 11, 10, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=lambda m: f"{name}: {m}")


def test_deform_conv_parameter_count_and_errors():
    layer = DeformConv2d(32, 64, 3, padding=1, bias=False)
    assert n_params(layer) == 32 * 64 * 9 + (32 * 18 * 9 + 18)
    assert n_params(DeformConv2d(32, 64, 3, padding=1, modulated=True)) == 32 * 64 * 9 + 64 + (32 * 27 * 9 + 27)
    with pytest.raises(ValueError, match="backend must be one of"):
        DeformConv2d(1, 1, 3, backend="cuda")
    with pytest.raises(ValueError, match="kernel_size and stride must be >= 1"):
        DeformConv2d(1, 1, 0)


def test_sampling_points_are_the_grid_plus_the_offsets():
    layer = DeformConv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(1, 2, 8, 8)
    pts = layer.sampling_points(x)  # zero offsets: the regular grid
    assert pts.shape == (1, 9, 4, 4, 2)
    assert pts[0, 0, 0, 0].tolist() == [-1.0, -1.0] and pts[0, 8, 3, 3].tolist() == [7.0, 7.0]
    assert pts[0, 5, 1, 2].tolist() == [2 - 1 + 1, 4 - 1 + 2]  # kernel point (1, 2) of output (1, 2)
    nn.init.normal_(layer.offset_conv.bias)
    offset, _ = layer.offsets(x)
    moved = layer.sampling_points(x)
    torch.testing.assert_close(moved[0, 4, :, :, 0] - pts[0, 4, :, :, 0], offset[0, 8])  # dy of the centre point
    torch.testing.assert_close(moved[0, 4, :, :, 1] - pts[0, 4, :, :, 1], offset[0, 9])  # dx


@pytest.mark.parametrize("bias", [False, True])
def test_deform_conv_draws_the_same_random_numbers_as_nn_conv2d(bias):
    torch.manual_seed(3)
    layer = DeformConv2d(4, 6, 3, padding=1, bias=bias)
    after_deform = torch.rand(5)  # the generator's state after building the layer
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias)
    after_conv = torch.rand(5)
    torch.testing.assert_close(layer.weight, conv.weight, rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(layer.bias, conv.bias, rtol=0, atol=0)
    torch.testing.assert_close(after_deform, after_conv, rtol=0, atol=0)  # the offset conv drew nothing
    assert layer.offset_conv.weight.abs().max() == 0 and layer.offset_conv.bias.abs().max() == 0


# ------------------------------------------------------------------ the affine fit of sampling points
def grid_points(A, kernel=3, H=4, W=5, shifts=None):
    """Sampling points (1, k^2, H, W, 2) whose kernel points are A g_k around each position, plus a shift."""
    c = (kernel - 1) / 2
    ij = torch.arange(kernel, dtype=torch.float64) - c
    g = torch.stack(torch.meshgrid(ij, ij, indexing="ij"), -1).reshape(-1, 2)  # (K, 2)
    centres = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1).double()  # (H, W, 2)
    pts = centres[None] + (g @ A.T)[:, None, None, :]  # (K, H, W, 2)
    if shifts is not None:
        pts = pts + shifts[None]
    return pts[None]


@pytest.mark.parametrize("kernel", [3, 5])
def test_grid_affine_recovers_a_known_map_and_ignores_shifts(kernel):
    A = torch.tensor([[1.3, -0.4], [0.2, 0.8]], dtype=torch.float64)
    shifts = torch.randn(4, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grid_affine(grid_points(A, kernel, shifts=shifts), kernel)[0], A)
    regular = grid_points(torch.eye(2, dtype=torch.float64), kernel)
    torch.testing.assert_close(grid_affine(regular, kernel)[0], torch.eye(2, dtype=torch.float64))


def test_grid_affine_is_numpys_weighted_least_squares():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(2, 9, 3, 4, 2, dtype=torch.float64, generator=g)
    w = torch.rand(2, 3, 4, dtype=torch.float64, generator=g) * (torch.rand(2, 3, 4, generator=g) > 0.3)
    A = grid_affine(pts, 3, w)
    ij = np.arange(3) - 1.0
    grid = np.stack(np.meshgrid(ij, ij, indexing="ij"), -1).reshape(9, 2)
    for b in range(2):
        rows, targets, sw = [], [], []
        for h in range(3):
            for x in range(4):
                q = pts[b, :, h, x].numpy()
                # one design row per kernel point, with a free shift per position: [g_k, e_position]
                for k in range(9):
                    onehot = np.zeros(12)
                    onehot[h * 4 + x] = 1
                    rows.append(np.concatenate([grid[k], onehot]))
                    targets.append(q[k])
                    sw.append(np.sqrt(w[b, h, x].item()))
        X, Y, sw = np.array(rows), np.array(targets), np.array(sw)[:, None]
        sol = np.linalg.lstsq(X * sw, Y * sw, rcond=None)[0]  # (2 + 12, 2): first two rows are A^T
        np.testing.assert_allclose(A[b].numpy(), sol[:2].T, atol=1e-10)


def test_affine_scale_angle_of_a_similarity_and_errors():
    angle = torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    scale = torch.tensor([1.2, 0.7, 2.0], dtype=torch.float64)
    R = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    s, a = affine_scale_angle(scale[:, None, None] * R)
    torch.testing.assert_close(s, scale)
    torch.testing.assert_close(a, angle)
    s, a = affine_scale_angle(torch.diag(torch.tensor([2.0, 0.5])))  # a stretch: area kept, no rotation
    assert s.item() == pytest.approx(1.0) and a.item() == 0.0
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        affine_scale_angle(torch.eye(3))
    with pytest.raises(ValueError, match="kernel points per position"):
        grid_affine(torch.zeros(1, 9, 2, 2, 2), 5)
    with pytest.raises(ValueError, match="some positive weight"):
        grid_affine(torch.zeros(1, 9, 2, 2, 2), 3, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="weights must be"):
        grid_affine(torch.zeros(1, 9, 2, 2, 2), 3, torch.ones(2, 2))
