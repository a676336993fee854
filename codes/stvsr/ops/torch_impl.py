"""Pure PyTorch deformable sampling and convolution: the backend that runs everywhere and that
``torch.compile`` can fuse.

It is the formulation of ``specs/models.md`` section 1.1: one ``F.grid_sample`` (bilinear, zeros
padding) over the (B x groups) channel groups for all kernel taps at once, times the mask, then one
matrix product with the weight. Sampling follows the spec exactly: pixel centres at integers, a
corner outside the image contributes 0, a sample with y <= -1, y >= H, x <= -1 or x >= W (or at a
NaN position) is 0 with zero gradients.

Exact integer positions. ``grid_sample`` takes normalised coordinates and maps them back to pixels;
in general that round trip is off by an ulp, so an integer position (every position at zero offsets,
the usual initialisation) could land just below the integer, and ``floor`` would then take the
gradient from the left neighbour instead of the right one as the kernels do. The planes are therefore
zero-padded at the bottom and right to a size for which the normalisation is a power-of-two scaling:
2**k with ``align_corners=False`` or 2**k + 1 with ``align_corners=True``, whichever is smaller. Then
integer positions round-trip exactly on every device, and the padding is zeros, which is what a
sample beyond the image reads anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends import is_compiling

Pair = tuple[int, int]


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _exact_grid_size(height: int, width: int) -> tuple[int, int, bool]:
    """Padded (H, W) whose coordinate normalisation is exact, and the ``align_corners`` it needs."""
    plain = (_next_power_of_two(height), _next_power_of_two(width))  # align_corners=False: scale 2 / size
    plus_one = (_next_power_of_two(height - 1) + 1, _next_power_of_two(width - 1) + 1)  # True: 2 / (size - 1)
    plus_one = (max(plus_one[0], 2), max(plus_one[1], 2))  # size 1 would make the scale infinite
    if plain[0] * plain[1] <= plus_one[0] * plus_one[1]:
        return *plain, False
    return *plus_one, True


def _normalised(offset: torch.Tensor, base: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """grid_sample coordinate of pixel position ``base + offset`` in a plane of ``size`` pixels.

    The scale is a power of two and ``base`` an integer, so integer positions come out exact.
    """
    scale = 2 / (size - 1) if align_corners else 2 / size
    shift = -1.0 if align_corners else 1 / size - 1
    return torch.add(base * scale + shift, offset, alpha=scale)


def _tap_bases(
    kernel_size: Pair, rows: range, out_w: int, stride: Pair, padding: Pair, dilation: Pair, device, dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of every tap at zero offset for output ``rows``: y (K, R, 1) and x (K, 1, Wo), taps row-major."""
    kh, kw = kernel_size
    tap_row = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]
    tap_col = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]
    ys = torch.arange(rows.start, rows.stop, device=device, dtype=dtype) * stride[0] - padding[0]
    xs = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    return ys.view(1, -1, 1) + tap_row.view(-1, 1, 1), xs.view(1, 1, out_w) + tap_col.view(-1, 1, 1)


class _Sampler:
    """Modulated deformable samples of one input, for all output rows or a band of them."""

    def __init__(
        self, input: torch.Tensor, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, groups: int
    ):
        self.batch, self.channels, self.height, self.width = input.shape
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups = groups
        self.grid_h, self.grid_w, self.align_corners = _exact_grid_size(self.height, self.width)
        padded = F.pad(input, (0, self.grid_w - self.width, 0, self.grid_h - self.height))
        self.planes = padded.reshape(self.batch * groups, self.channels // groups, self.grid_h, self.grid_w)

    def __call__(self, offset: torch.Tensor, mask: torch.Tensor, rows: range, in_place: bool) -> torch.Tensor:
        """(B, C, K, R*Wo) for the output ``rows``, whose offsets and masks are ``offset`` and ``mask``.

        ``in_place`` modulates the samples in their own buffer (no autograd through them then).
        """
        b, c, g = self.batch, self.channels, self.groups
        taps = self.kernel_size[0] * self.kernel_size[1]
        out_w = offset.shape[3]
        base_y, base_x = _tap_bases(
            self.kernel_size, rows, out_w, self.stride, self.padding, self.dilation, offset.device, offset.dtype
        )
        off = offset.reshape(b, g, taps, 2, len(rows), out_w)  # interleaved (dy, dx) per (group, tap)
        off_y, off_x = off[:, :, :, 0], off[:, :, :, 1]
        # y > -1 etc., compared on the offsets (base is an integer; the same up to the rounding of base +
        # offset, exact at integer offsets); False for NaN.
        inside = (off_y > -1 - base_y) & (off_y < self.height - base_y)
        inside &= (off_x > -1 - base_x) & (off_x < self.width - base_x)
        # Positions not inside sample the corner -1 (zero weight below; finite even where the offset is not).
        grid_x = torch.where(inside, _normalised(off_x, base_x, self.grid_w, self.align_corners), -1.0)
        grid_y = torch.where(inside, _normalised(off_y, base_y, self.grid_h, self.align_corners), -1.0)
        grid = torch.stack((grid_x, grid_y), dim=-1).view(b * g, taps * len(rows), out_w, 2)
        samples = F.grid_sample(self.planes, grid, "bilinear", "zeros", align_corners=self.align_corners)
        n = taps * len(rows) * out_w
        weights = mask.reshape(b, g, 1, n) * inside.reshape(b, g, 1, n)
        samples = samples.reshape(b, g, c // g, n)
        modulated = samples.mul_(weights) if in_place else samples * weights
        return modulated.reshape(b, c, taps, len(rows) * out_w)


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    sampler = _Sampler(input, kernel_size, stride, padding, dilation, groups)
    return sampler(offset, mask, range(offset.shape[2]), in_place=not _needs_grad(input, offset, mask))


# Without autograd the convolution runs in bands of output rows whose samples take about this many
# bytes: the buffer is reused from the heap (a fresh multi-megabyte allocation costs page faults that
# take longer than the sampling) and is still in cache when the matrix product reads it.
_BAND_BYTES = 4 << 20


# With autograd, every sample tensor lives until the backward. The convolution is a sum over its
# deformable groups, so it is computed for blocks of groups whose sample tensors stay below about this
# size (glibc serves larger buffers with fresh mmap()s, whose page faults cost a third of the time), but
# with at least one (sample, group) plane per thread.
_BLOCK_BYTES = 8 << 20


def _groups_per_block(batch: int, group_bytes: int, groups: int) -> int:
    """Deformable groups per block: samples within _BLOCK_BYTES, at least one plane per thread, a divisor."""
    # grid_sample's eager backward runs one thread per plane (traced code does not ask: reading
    # torch.get_num_threads() breaks a torch.compile graph).
    threads = 1 if is_compiling() else torch.get_num_threads()
    per_block = min(groups, max(1, _BLOCK_BYTES // group_bytes, -(-threads // batch)))
    while groups % per_block:  # up to a divisor of the groups
        per_block += 1
    return per_block


def _conv_by_group_blocks(input, offset, mask, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    b, c, _, _ = input.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    per_block = _groups_per_block(b, b * (c // groups) * kh * kw * out_h * out_w * input.element_size(), groups)
    blocks = groups // per_block
    # split(), not slicing: the backward of a split is one concatenation, that of a slice a zero-filled
    # full-size gradient per block.
    pieces = zip(
        input.split(c // blocks, dim=1),
        offset.split(offset.shape[1] // blocks, dim=1),
        mask.split(mask.shape[1] // blocks, dim=1),
        weight.split(c // blocks, dim=1),
    )
    out = None
    for x, off, m, w in pieces:
        samples = _Sampler(x, (kh, kw), stride, padding, dilation, per_block)(off, m, range(out_h), in_place=False)
        part = torch.matmul(w.reshape(c_out, -1), samples.reshape(b, -1, out_h * out_w))
        out = part if out is None else out + part
    if bias is not None:
        out = out + bias.view(1, c_out, 1)
    return out.view(b, c_out, out_h, out_w)


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
    """DCNv2: the kh x kw contraction of the modulated samples with ``weight``."""
    if _needs_grad(input, offset, mask, weight, bias):
        return _conv_by_group_blocks(input, offset, mask, weight, bias, stride, padding, dilation, groups)
    return _conv_by_row_bands(input, offset, mask, weight, bias, stride, padding, dilation, groups)


def _conv_by_row_bands(input, offset, mask, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    b = input.shape[0]
    c_out, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    flat_weight = weight.reshape(c_out, -1)
    sampler = _Sampler(input, (kh, kw), stride, padding, dilation, groups)
    out = input.new_empty(b, c_out, out_h, out_w)
    row_bytes = b * flat_weight.shape[1] * out_w * input.element_size()
    band = max(1, _BAND_BYTES // row_bytes)
    for r0 in range(0, out_h, band):
        rows = range(r0, min(r0 + band, out_h))
        samples = sampler(offset[:, :, r0 : rows.stop], mask[:, :, r0 : rows.stop], rows, in_place=True)
        part = torch.matmul(flat_weight, samples.reshape(b, -1, len(rows) * out_w))
        if bias is not None:
            part += bias.view(1, c_out, 1)
        out[:, :, r0 : rows.stop] = part.view(b, c_out, len(rows), out_w)
    return out
