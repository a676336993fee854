"""The one Python API of the deformable convolution: argument checks, then the chosen backend."""

from __future__ import annotations

import torch
from torch.nn.modules.utils import _pair

from . import backends, ext, torch_impl

IntPair = int | tuple[int, int]

# The kernels compute in float32 or float64; half-precision positions would be too coarse (0.25 px
# at 300 px), so half and bfloat16 inputs are computed in float32 and the result cast back.
_KERNEL_DTYPES = (torch.float32, torch.float64)


def _check_input(input: torch.Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(f"deformable conv: input must be (B, C, H, W), got shape {tuple(input.shape)}")


def _check_weight(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.dim() != 4 or weight.shape[1] != input.shape[1]:
        raise ValueError(
            f"deformable conv: weight must be (C_out, {input.shape[1]}, kh, kw), got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"deformable conv: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise ValueError(f"deformable conv: {name} is on {t.device} but input is on {input.device}")


def _check(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> None:
    _check_input(input)
    b, c, h, w = input.shape
    if groups < 1 or c % groups:
        raise ValueError(f"deformable conv: {c} input channels are not divisible by deformable_groups={groups}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"deformable conv: bad stride {stride}, padding {padding} or dilation {dilation}")
    kh, kw = kernel_size
    out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"deformable conv: input {h}x{w} is too small for kernel {kernel_size}, padding {padding}, "
            f"dilation {dilation}"
        )
    taps = kh * kw
    for name, t, channels in (("offset", offset, 2 * groups * taps), ("mask", mask, groups * taps)):
        if tuple(t.shape) != (b, channels, out_h, out_w):
            raise ValueError(
                f"deformable conv: {name} must have shape {(b, channels, out_h, out_w)} "
                f"(B, {'2*' if name == 'offset' else ''}groups*kh*kw, Ho, Wo), got {tuple(t.shape)}"
            )
        if t.device != input.device:
            raise ValueError(f"deformable conv: {name} is on {t.device} but input is on {input.device}")


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    dtype = torch.promote_types(*(t.dtype for t in tensors[:2]))
    for t in tensors[2:]:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in _KERNEL_DTYPES else torch.float32


def modulated_deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    deformable_groups: int = 1,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Modulated deformable convolution (DCNv2), as docs/backends.md defines it.

    Args:
        input: (B, C, H, W).
        offset: (B, 2*G*kh*kw, Ho, Wo), interleaved (dy, dx) per (group, tap), taps row-major.
        mask: (B, G*kh*kw, Ho, Wo), multiplies each sample (pass ones for DCNv1).
        weight: (C_out, C, kh, kw); bias: (C_out) or None.
        backend: 'ext', 'torch', 'torchvision' or 'auto'; default from STVSR_DCN_BACKEND.
    Returns:
        (B, C_out, Ho, Wo), differentiable in input, offset, mask, weight and bias.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_input(input)  # before the weight check, which reads input.shape[1]
    _check_weight(input, weight, bias)
    _check(input, offset, mask, tuple(weight.shape[2:]), stride, padding, dilation, deformable_groups)
    out_dtype = input.dtype
    dtype = _compute_dtype(input, offset, mask, weight, bias)
    args = [t.to(dtype) if t is not None else None for t in (input, offset, mask, weight, bias)]
    name = backends.resolve(input.device, backend)
    if name == "ext":
        x, off, m, wgt, b = (t.contiguous() if t is not None else None for t in args)
        out = ext.deform_conv2d(x, off, m, wgt, b, stride, padding, dilation, deformable_groups)
    elif name == "torchvision":
        from torchvision.ops import deform_conv2d  # optional: its CUDA wheels fail to import on CPU-only machines

        x, off, m, wgt, b = args
        out = deform_conv2d(x, off, wgt, b, stride=stride, padding=padding, dilation=dilation, mask=m)
    else:
        out = torch_impl.modulated_deform_conv2d(*args, stride, padding, dilation, deformable_groups)
    return out.to(out_dtype)


def deform_sample(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    kernel_size: IntPair = 3,
    stride: IntPair = 1,
    padding: IntPair = 1,
    dilation: IntPair = 1,
    deformable_groups: int = 1,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Mask-modulated deformable samples without the convolution (STDAN's ``DSP_sep2``).

    Returns (B, C, kh*kw, Ho*Wo): ``out[b, c, k, p] = mask[b, g(c)*K + k, p] * input_c(p + p_k + offset)``,
    positions flattened row-major. torchvision has no such op, so that backend computes it with the
    pure PyTorch implementation.
    """
    kernel_size, stride, padding, dilation = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    _check(input, offset, mask, kernel_size, stride, padding, dilation, deformable_groups)
    out_dtype = input.dtype
    dtype = _compute_dtype(input, offset, mask)
    x, off, m = (t.to(dtype) for t in (input, offset, mask))
    if backends.resolve(input.device, backend) == "ext":
        out = ext.deform_sample(
            x.contiguous(), off.contiguous(), m.contiguous(), kernel_size, stride, padding, dilation, deformable_groups
        )
    else:
        out = torch_impl.deform_sample(x, off, m, kernel_size, stride, padding, dilation, deformable_groups)
    return out.to(out_dtype)
