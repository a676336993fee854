"""float64 gradcheck of the hand-written ('ext') and reference ('torch') backward passes.

Shapes are tiny (C <= 8, C_out <= 3, H, W <= 7) so that the finite differences stay fast. Offsets are
random floats, so no sample sits within the finite-difference step of an integer coordinate, where
bilinear interpolation has a kink.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from stvsr.ops import deform_sample, modulated_deform_conv2d


@dataclass(frozen=True)
class Case:
    batch: int = 2
    channels: int = 4
    out_channels: int = 3
    height: int = 5
    width: int = 7
    kernel: tuple[int, int] = (3, 3)
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1
    offset_scale: float = 1.0
    far_offsets: bool = False  # add +-6 px to push many samples outside the image

    def out_size(self) -> tuple[int, int]:
        kh, kw = self.kernel
        span_h, span_w = self.dilation * (kh - 1) + 1, self.dilation * (kw - 1) + 1
        return (
            (self.height + 2 * self.padding - span_h) // self.stride + 1,
            (self.width + 2 * self.padding - span_w) // self.stride + 1,
        )


CASES = {
    "basic_5x7_B2": Case(),
    "dg8_C8": Case(batch=1, channels=8, out_channels=2, height=4, width=5, groups=8),
    "stride2": Case(height=7, width=6, stride=2),
    "dilation2": Case(height=6, width=7, dilation=2),
    "padding0_dg2": Case(height=6, width=7, padding=0, groups=2),
    "far_offsets_outside": Case(offset_scale=3.0, far_offsets=True),
    "kernel_2x3": Case(kernel=(2, 3), padding=1),
}


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kh, kw = case.kernel
    taps = kh * kw
    out_h, out_w = case.out_size()
    offset = case.offset_scale * torch.randn(case.batch, 2 * case.groups * taps, out_h, out_w, generator=gen)
    if case.far_offsets:
        offset += 6.0 * torch.randint(-1, 2, offset.shape, generator=gen)
    tensors = {
        "input": torch.randn(case.batch, case.channels, case.height, case.width, generator=gen),
        "offset": offset,
        "mask": torch.rand(case.batch, case.groups * taps, out_h, out_w, generator=gen),
        "weight": torch.randn(case.out_channels, case.channels, kh, kw, generator=gen),
        "bias": torch.randn(case.out_channels, generator=gen),
    }
    return {k: v.double().requires_grad_() for k, v in tensors.items()}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_deform_conv_gradcheck(gradcheck_backend: str, case: Case) -> None:
    t = make_inputs(case)

    def fn(input, offset, mask, weight, bias):
        return modulated_deform_conv2d(
            input,
            offset,
            mask,
            weight,
            bias,
            case.stride,
            case.padding,
            case.dilation,
            case.groups,
            backend=gradcheck_backend,
        )

    assert torch.autograd.gradcheck(fn, tuple(t.values()), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_far_offsets_reach_outside() -> None:
    """The 'far_offsets_outside' case really samples outside the image (else it would test nothing new)."""
    case = CASES["far_offsets_outside"]
    t = make_inputs(case)
    offset = t["offset"].detach().view(case.batch, -1, 2, *case.out_size())
    assert (offset[:, :, 0].abs() > case.height + 1).any() and (offset[:, :, 1].abs() > case.width + 1).any()


SAMPLE_CASES = {
    "3x3_dg2_5x7_B2": Case(out_channels=0, groups=2),
    "stride2_dilation2_far": Case(
        out_channels=0, height=7, width=6, stride=2, dilation=2, padding=2, offset_scale=3.0, far_offsets=True
    ),
}


@pytest.mark.parametrize("case", SAMPLE_CASES.values(), ids=SAMPLE_CASES.keys())
def test_deform_sample_gradcheck(gradcheck_backend: str, case: Case) -> None:
    t = make_inputs(case)

    def fn(input, offset, mask):
        return deform_sample(
            input,
            offset,
            mask,
            case.kernel,
            case.stride,
            case.padding,
            case.dilation,
            case.groups,
            backend=gradcheck_backend,
        )

    inputs = (t["input"], t["offset"], t["mask"])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
