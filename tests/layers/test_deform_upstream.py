"""torchvision's own deformable-convolution tests, run against ``deform_conv2d_reference``.

Adapted from pytorch/vision ``test/test_ops.py``, class ``TestDeformConv``: its ``get_fn_args`` setting (6 input
channels, 2 weight groups, 3 offset groups, kernel (3, 2), stride (2, 1), padding (1, 0), dilation (2, 1), a 5x4
input), ``test_forward`` and ``test_backward`` over ``batch_sz`` in (0, 33) and contiguous / non-contiguous inputs
(33 reduced to 3 here), ``expected_fn`` (the brute-force loop, compared on one case) and ``test_wrong_sizes``.
"""

import pytest
import torch
from torch.autograd import gradcheck
from torchvision.ops import deform_conv2d

from course_utils.layers.deform import deform_conv2d_reference

STRIDE, PAD, DILATION = (2, 1), (1, 0), (2, 1)


def get_fn_args(contiguous, batch_sz, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    n_in, n_out, n_weight_grps, n_offset_grps = 6, 2, 2, 3
    (kh, kw), (in_h, in_w) = (3, 2), (5, 4)
    out_h = (in_h + 2 * PAD[0] - (DILATION[0] * (kh - 1) + 1)) // STRIDE[0] + 1
    out_w = (in_w + 2 * PAD[1] - (DILATION[1] * (kw - 1) + 1)) // STRIDE[1] + 1
    x = torch.rand(batch_sz, n_in, in_h, in_w, dtype=dtype)
    offset = torch.randn(batch_sz, n_offset_grps * 2 * kh * kw, out_h, out_w, dtype=dtype)
    mask = torch.randn(batch_sz, n_offset_grps * kh * kw, out_h, out_w, dtype=dtype)
    weight = torch.randn(n_out, n_in // n_weight_grps, kh, kw, dtype=dtype)
    bias = torch.randn(n_out, dtype=dtype)
    if not contiguous:  # the same permutations as upstream
        x = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        offset = offset.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
        mask = mask.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
        weight = weight.permute(3, 2, 0, 1).contiguous().permute(2, 3, 1, 0)
    return [t.requires_grad_() for t in (x, weight, offset, mask, bias)]


def expected_fn(x, weight, offset, mask, bias):
    """test_ops.py's brute-force loop over batch, output channel, position, kernel point and input channel."""
    def bilinear_interpolate(data, y, x):  # test_ops.py's helper: zero outside the image
        height, width = data.shape
        y_low, x_low = int(torch.floor(y)), int(torch.floor(x))
        val = 0.0
        for dy, wy in ((0, 1 - (y - y_low)), (1, y - y_low)):
            for dx, wx in ((0, 1 - (x - x_low)), (1, x - x_low)):
                r, c = y_low + dy, x_low + dx
                if 0 <= r < height and 0 <= c < width:
                    val = val + wy * wx * data[r, c]
        return val

    (sh, sw), (ph, pw), (dh, dw) = STRIDE, PAD, DILATION
    kh, kw = weight.shape[-2:]
    B, C, H, W = x.shape
    O = weight.shape[0]
    out_h, out_w = offset.shape[-2:]
    n_offset_grps = offset.shape[1] // (2 * kh * kw)
    c_per_offset_grp, c_per_weight_grp = C // n_offset_grps, weight.shape[1]
    out_c_per_weight_grp = O // (C // c_per_weight_grp)
    out = torch.zeros(B, O, out_h, out_w, dtype=x.dtype)
    for b in range(B):
        for c_out in range(O):
            for i in range(out_h):
                for j in range(out_w):
                    for di in range(kh):
                        for dj in range(kw):
                            for c in range(c_per_weight_grp):
                                c_in = (c_out // out_c_per_weight_grp) * c_per_weight_grp + c
                                mask_idx = (c_in // c_per_offset_grp) * kh * kw + di * kw + dj
                                pi = sh * i - ph + dh * di + offset[b, 2 * mask_idx, i, j]
                                pj = sw * j - pw + dw * dj + offset[b, 2 * mask_idx + 1, i, j]
                                m = 1.0 if mask is None else mask[b, mask_idx, i, j]
                                out[b, c_out, i, j] += m * weight[c_out, c, di, dj] * bilinear_interpolate(x[b, c_in], pi, pj)
    return out + bias.view(1, O, 1, 1)


def _call(fn, x, weight, offset, mask, bias):
    return fn(x, offset, weight, bias, stride=STRIDE, padding=PAD, dilation=DILATION, mask=mask)


def test_forward_matches_the_brute_force_loop():
    x, weight, offset, mask, bias = (t.detach() for t in get_fn_args(True, 1))
    for m in (mask, None):
        torch.testing.assert_close(_call(deform_conv2d_reference, x, weight, offset, m, bias),
                                   expected_fn(x, weight, offset, m, bias))


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("batch_sz", [0, 3])
def test_forward_and_backward_match_torchvision(contiguous, batch_sz):
    for use_mask in (True, False):  # test_forward's "no modulation test" as well
        args = get_fn_args(contiguous, batch_sz)
        results = []
        for fn in (deform_conv2d_reference, deform_conv2d):
            leaves = [t.detach().clone().requires_grad_() for t in args]
            x, weight, offset, mask, bias = leaves
            out = _call(fn, x, weight, offset, mask if use_mask else None, bias)
            out.backward(torch.ones_like(out) * 0.5 + torch.arange(out.numel()).reshape(out.shape) % 3)
            results.append((out.detach(), [t.grad for t in leaves]))
        (ours, our_grads), (theirs, their_grads) = results
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs)
        for name, a, b in zip(("input", "weight", "offset", "mask", "bias"), our_grads, their_grads):
            if use_mask or name != "mask":
                torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("contiguous", [True, False])
def test_backward_gradcheck(contiguous):
    x, weight, offset, mask, bias = get_fn_args(contiguous, 2)
    f = lambda x_, o_, m_, w_, b_: _call(deform_conv2d_reference, x_, w_, o_, m_, b_)
    assert gradcheck(f, (x, offset, mask, weight, bias), fast_mode=True)
    f_no_mask = lambda x_, o_, w_, b_: _call(deform_conv2d_reference, x_, w_, o_, None, b_)
    assert gradcheck(f_no_mask, (x, offset, weight, bias), fast_mode=True)


def test_wrong_sizes():
    x, weight, offset, mask, bias = (t.detach() for t in get_fn_args(True, 10))
    with pytest.raises(ValueError, match=r"offset must be \(B, 2 \* offset_groups"):  # torchvision: "the shape of the offset"
        _call(deform_conv2d_reference, x, weight, torch.rand_like(offset[:, :2]), None, bias)
    with pytest.raises(ValueError, match="mask has shape .* but must be"):  # torchvision: "mask.shape[1] is not valid"
        _call(deform_conv2d_reference, x, weight, offset, torch.rand_like(mask[:, :2]), bias)
