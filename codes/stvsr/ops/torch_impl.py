"""Pure PyTorch deformable sampling and convolution: the backend that runs everywhere and that
``torch.compile`` can fuse.

It is the formulation of docs/backends.md ("What the operation computes"): one ``F.grid_sample`` (bilinear, zeros
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

import ctypes
import functools
import sys

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
    """Deformable samples of one input and their modulation, for all output rows or a band of them."""

    def __init__(
        self, input: torch.Tensor, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair, groups: int
    ):
        self.batch, self.channels, self.height, self.width = input.shape
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups = groups
        self.grid_h, self.grid_w, self.align_corners = _exact_grid_size(self.height, self.width)
        padded = F.pad(input, (0, self.grid_w - self.width, 0, self.grid_h - self.height))
        self.planes = padded.reshape(self.batch * groups, self.channels // groups, self.grid_h, self.grid_w)

    def row_bands(self, offset: torch.Tensor, mask: torch.Tensor):
        """(rows, their offsets, their masks) for bands of output rows of about _BAND_BYTES of samples each."""
        out_h, out_w = offset.shape[2:]
        taps = self.kernel_size[0] * self.kernel_size[1]
        band = max(1, _BAND_BYTES // (self.batch * self.channels * taps * out_w * offset.element_size()))
        for r0 in range(0, out_h, band):
            rows = range(r0, min(r0 + band, out_h))
            yield rows, offset[:, :, r0 : rows.stop], mask[:, :, r0 : rows.stop]

    def modulated_in_place(self, offset: torch.Tensor, mask: torch.Tensor, rows: range) -> torch.Tensor:
        """(B, C, K, R*Wo) for the output ``rows``, modulated in the samples' own buffer (no autograd)."""
        samples, modulation = self.unmodulated(offset, mask, rows, gradients=False)
        return samples.mul_(modulation).view(self.batch, self.channels, -1, len(rows) * offset.shape[3])

    def unmodulated(
        self, offset: torch.Tensor, mask: torch.Tensor, rows: range, *, gradients: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear samples (B, G, C/G, K*R*Wo) for the output ``rows`` and their modulation (B, G, 1, K*R*Wo).

        ``gradients``: whether autograd differentiates them. Without, the geometry skips the inside test,
        which only their gradients need (the values are the same).
        """
        b, c, g = self.batch, self.channels, self.groups
        taps = self.kernel_size[0] * self.kernel_size[1]
        out_w = offset.shape[3]
        n = taps * len(rows) * out_w
        base_y, base_x = _tap_bases(
            self.kernel_size, rows, out_w, self.stride, self.padding, self.dilation, offset.device, offset.dtype
        )
        off = offset.reshape(b, g, taps, 2, len(rows), out_w)  # interleaved (dy, dx) per (group, tap)
        off_y, off_x = off[:, :, :, 0], off[:, :, :, 1]
        grid_x = _normalised(off_x, base_x, self.grid_w, self.align_corners)
        grid_y = _normalised(off_y, base_y, self.grid_h, self.align_corners)
        if gradients:
            # y > -1 etc., compared on the offsets (base is an integer; the same up to the rounding of base +
            # offset, exact at integer offsets); False for NaN.
            inside = (off_y > -1 - base_y) & (off_y < self.height - base_y)
            inside &= (off_x > -1 - base_x) & (off_x < self.width - base_x)
            # Positions not inside sample the corner -1 (zero weight below; finite where the offset is not).
            grid = torch.stack((torch.where(inside, grid_x, -1.0), torch.where(inside, grid_y, -1.0)), dim=-1)
            modulation = mask.reshape(b, g, 1, n) * inside.reshape(b, g, 1, n)
        else:
            # Values only: a position outside the image samples zero padding or nothing (bilinear sampling
            # with zeros outside is continuous at the border), so the test above is needed only for its
            # gradients. NaN and infinite positions are moved far outside (2 plane sizes beyond an edge).
            grid = torch.stack((grid_x, grid_y), dim=-1).nan_to_num_(_FAR, _FAR, -_FAR).clamp_(-_FAR, _FAR)
            modulation = mask.reshape(b, g, 1, n)
        grid = grid.view(b * g, taps * len(rows), out_w, 2)
        samples = F.grid_sample(self.planes, grid, "bilinear", "zeros", align_corners=self.align_corners)
        return samples.view(b, g, c // g, n), modulation


# A normalised grid coordinate about two plane sizes beyond an edge: outside for any size and align_corners.
_FAR = 5.0


# glibc serves every allocation above 32 MB (its largest mmap threshold) with a fresh mapping, whose
# first touch costs a page fault per 4 kB page; in transparent huge pages it costs one per 2 MB
# (docs/benchmarks.md has the measurement). The extension asks for them the same way (``madvise``).
_FRESH_MAPPING_BYTES = 32 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


@functools.cache
def _madvise():
    """libc's ``madvise`` on Linux, else None."""
    if sys.platform != "linux":
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def _empty_for_writing(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """An uninitialised tensor that the caller writes in full, in huge pages where it is a fresh mapping.

    Without huge-page support the hint fails and changes nothing.
    """
    out = like.new_empty(shape)
    size = out.numel() * out.element_size()
    if size < _FRESH_MAPPING_BYTES or out.device.type != "cpu" or is_compiling() or _madvise() is None:
        return out  # (traced code has no addresses)
    first = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    last = (out.data_ptr() + size) // _HUGE_PAGE * _HUGE_PAGE
    if last > first:
        _madvise()(first, last - first, _MADV_HUGEPAGE)
    return out


def _grad_of_modulation(grad_modulated: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Sum over each group's channels of grad * samples, (B, G, 1, N), without a product tensor."""
    grad = grad_modulated[:, :, :1] * samples[:, :, :1]
    for i in range(1, samples.shape[2]):
        grad.addcmul_(grad_modulated[:, :, i : i + 1], samples[:, :, i : i + 1])
    return grad


class _Modulate(torch.autograd.Function):
    """``samples * modulation`` (B, G, C/G, N) x (B, G, 1, N), whose sample-sized results (the product and
    the samples' gradient) are written in huge pages, and whose backward makes no product tensor."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, modulation: torch.Tensor):
        ctx.save_for_backward(samples, modulation)
        return torch.mul(samples, modulation, out=_empty_for_writing(samples, *samples.shape))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        samples, modulation = ctx.saved_tensors
        grad_samples = torch.mul(grad, modulation, out=_empty_for_writing(grad, *samples.shape))
        grad_modulation = _grad_of_modulation(grad, samples) if ctx.needs_input_grad[1] else None
        return grad_samples, grad_modulation


class _ModulatedContraction(torch.autograd.Function):
    """``flat_weight @ (samples * modulation)``, (B, C_out, positions): the products are per sample
    (``torch.matmul`` folds a 2-D x 3-D product into copies), and the backward reuses the gradient's
    buffer and makes no product tensor (autograd's makes two, each sample-sized)."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, modulation: torch.Tensor, flat_weight: torch.Tensor, positions: int):
        modulated = samples * modulation
        ctx.save_for_backward(samples, modulation, modulated, flat_weight)
        rows = modulated.view(samples.shape[0], -1, positions)
        out = rows.new_empty(rows.shape[0], flat_weight.shape[0], positions)
        for i in range(rows.shape[0]):
            torch.mm(flat_weight, rows[i], out=out[i])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        samples, modulation, modulated, flat_weight = ctx.saved_tensors
        rows = modulated.view(samples.shape[0], -1, grad_out.shape[2])
        grad_weight = None
        if ctx.needs_input_grad[2]:
            grad_weight = torch.mm(grad_out[0], rows[0].t())
            for i in range(1, rows.shape[0]):
                grad_weight.addmm_(grad_out[i], rows[i].t())
        grad_modulated = samples.new_empty(samples.shape)
        grad_rows = grad_modulated.view(rows.shape)
        for i in range(rows.shape[0]):
            torch.mm(flat_weight.t(), grad_out[i], out=grad_rows[i])
        grad_modulation = _grad_of_modulation(grad_modulated, samples) if ctx.needs_input_grad[1] else None
        return grad_modulated.mul_(modulation), grad_modulation, grad_weight, None


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
    b, c, g = sampler.batch, sampler.channels, groups
    taps, (out_h, out_w) = kernel_size[0] * kernel_size[1], offset.shape[2:]
    if _needs_grad(input, offset, mask):
        samples, modulation = sampler.unmodulated(offset, mask, range(out_h), gradients=True)
        return _Modulate.apply(samples, modulation).view(b, c, taps, out_h * out_w)
    if is_compiling() or b * c * taps * out_h * out_w * input.element_size() < _FRESH_MAPPING_BYTES:
        return sampler.modulated_in_place(offset, mask, range(out_h))
    # A fresh mapping: written in bands into huge pages (grid_sample cannot write into a given tensor).
    out = _empty_for_writing(input, b, c, taps, out_h * out_w)
    planar = out.view(b, g, c // g, taps, out_h, out_w)
    for rows, off, m in sampler.row_bands(offset, mask):
        samples, modulation = sampler.unmodulated(off, m, rows, gradients=False)
        shape = (b, g, -1, taps, len(rows), out_w)
        torch.mul(samples.view(shape), modulation.view(shape), out=planar[:, :, :, :, rows.start : rows.stop])
    return out


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
        sampler = _Sampler(x, (kh, kw), stride, padding, dilation, per_block)
        samples, modulation = sampler.unmodulated(off, m, range(out_h), gradients=True)
        part = _ModulatedContraction.apply(samples, modulation, w.reshape(c_out, -1), out_h * out_w)
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
    out = input.new_empty(b, c_out, out_h * out_w)
    for rows, off, m in sampler.row_bands(offset, mask):
        samples = sampler.modulated_in_place(off, m, rows)
        for i in range(b):  # per sample, into the output rows (torch.matmul folds a 2-D x 3-D product into copies)
            target = out[i, :, rows.start * out_w : rows.stop * out_w]
            if bias is None:
                torch.mm(flat_weight, samples[i].view(-1, target.shape[1]), out=target)
            else:
                torch.addmm(bias.view(c_out, 1), flat_weight, samples[i].view(-1, target.shape[1]), out=target)
    return out.view(b, c_out, out_h, out_w)
