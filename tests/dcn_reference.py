"""The literal DCNv2 oracle of the tests: an independent, slow, obviously-right implementation.

It follows docs/backends.md ("What the operation computes") word for word: absolute sampling positions,
``floor`` for the bilinear corners (so at an integer position the gradient is the right-hand difference, as in the
kernels), a corner outside the image contributes 0, a sample with y <= -1, y >= H, x <= -1 or x >= W
is 0. Everything is ordinary tensor algebra (one ``gather`` for all corners), so autograd provides every
gradient. The backends (the ``grid_sample`` formulation of ``stvsr.ops.torch_impl``, the compiled
kernels) are checked against it in float64.
"""

from __future__ import annotations

import torch

Pair = tuple[int, int]


def _sampling_positions(
    offset: torch.Tensor, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute (y, x) of every tap at every output position: two (B, G, K, Ho, Wo) tensors."""
    b, _, out_h, out_w = offset.shape
    kh, kw = kernel_size
    taps = kh * kw
    dev, dt = offset.device, offset.dtype
    tap_i = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw)  # kernel row of tap k
    tap_j = torch.arange(kw, device=dev, dtype=dt).repeat(kh)  # kernel column of tap k
    rows = torch.arange(out_h, device=dev, dtype=dt) * stride[0] - padding[0]
    cols = torch.arange(out_w, device=dev, dtype=dt) * stride[1] - padding[1]
    base_y = rows.view(1, out_h, 1) + (tap_i * dilation[0]).view(taps, 1, 1)
    base_x = cols.view(1, 1, out_w) + (tap_j * dilation[1]).view(taps, 1, 1)
    off = offset.view(b, groups, taps, 2, out_h, out_w)  # interleaved (dy, dx) per (group, tap)
    return base_y + off[:, :, :, 0], base_x + off[:, :, :, 1]


def deform_sample(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
) -> torch.Tensor:
    """Mask-modulated bilinear samples, (B, C, K, Ho*Wo), channel-major and tap-minor."""
    b, c, h, w = input.shape
    y, x = _sampling_positions(offset, kernel_size, stride, padding, dilation, groups)
    _, _, taps, out_h, out_w = y.shape
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0  # differentiable fractional parts: the bilinear weights' gradients
    corners = []
    weights = []
    for dy, dx, wgt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        # where(), not multiplication: a NaN position must give a 0 sample, as in the kernels. The flat
        # index in int64: in float32, y * W + x is inexact beyond 2**24 pixels (e.g. 5000x5000).
        corners.append(torch.where(valid, yy, 0).long() * w + torch.where(valid, xx, 0).long())
        weights.append(torch.where(valid, wgt, 0))
    n = taps * out_h * out_w
    index = torch.stack(corners, dim=2).view(b, groups, 1, 4 * n)  # (B, G, 1, 4*K*L)
    planes = input.reshape(b, groups, c // groups, h * w)
    values = torch.gather(planes, 3, index.expand(b, groups, c // groups, 4 * n))
    values = values.view(b, groups, c // groups, 4, n)
    bilinear = torch.stack(weights, dim=2).view(b, groups, 1, 4, n)
    modulated = (values * bilinear).sum(dim=3) * mask.reshape(b, groups, 1, n)
    return modulated.view(b, c, taps, out_h * out_w)


def modulated_deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
) -> torch.Tensor:
    """DCNv2: the 3x3 (or kh x kw) contraction of the modulated samples with ``weight``."""
    b = input.shape[0]
    c_out, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    samples = deform_sample(input, offset, mask, (kh, kw), stride, padding, dilation, groups)
    out = torch.matmul(weight.reshape(c_out, -1), samples.reshape(b, -1, out_h * out_w))
    if bias is not None:
        out = out + bias.view(1, c_out, 1)
    return out.view(b, c_out, out_h, out_w)
