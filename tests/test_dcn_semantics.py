"""What the deformable convolution computes (docs/backends.md), checked on every working backend
against plain convolutions and hand computations, plus the modules' parameter names and error messages."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from stvsr.ops import DCNSep, DCNv2, DCNv2Pack, DeformableSampling, deform_sample, modulated_deform_conv2d
from stvsr.ops import modules as dcn_modules

EXACT = {"rtol": 0.0, "atol": 1e-10}  # float64


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def out_size(h: int, w: int, k: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    span = dilation * (k - 1) + 1
    return (h + 2 * padding - span) // stride + 1, (w + 2 * padding - span) // stride + 1


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"), [(1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 2, 4), (2, 1, 2, 1)]
)
def test_zero_offsets_and_unit_mask_equal_conv2d(
    backend: str, stride: int, padding: int, dilation: int, groups: int
) -> None:
    x, weight, bias = rand(2, 8, 9, 13), rand(5, 8, 3, 3, seed=1), rand(5, seed=2)
    ho, wo = out_size(9, 13, 3, stride, padding, dilation)
    offset = torch.zeros(2, 2 * groups * 9, ho, wo, dtype=torch.float64)
    mask = torch.ones(2, groups * 9, ho, wo, dtype=torch.float64)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation, groups, backend=backend)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(out, expected, **EXACT)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, zero where that is outside the image."""
    h, w = x.shape[-2:]
    py, px = abs(dy), abs(dx)
    padded = F.pad(x, (px, px, py, py))
    return padded[..., py + dy : py + dy + h, px + dx : px + dx + w]


def test_shift_helper() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert shift(x, 1, -2)[0, 0].tolist() == [[0, 0, 4, 5], [0, 0, 8, 9], [0, 0, 0, 0]]


@pytest.mark.parametrize(("dy", "dx"), [(1, -2), (-3, 1)])
def test_integer_offsets_equal_shifted_conv2d(backend: str, dy: int, dx: int) -> None:
    """Moving every tap by (dy, dx) samples X(p + p_k + (dy, dx)): a conv2d of the input shifted with zero
    fill. The shift is of the zero-padded input (conv2d's padding is applied before the shift), because a
    tap that starts in the padding can land inside the image."""
    x, weight, bias = rand(2, 4, 7, 10), rand(3, 4, 3, 3, seed=1), rand(3, seed=2)
    offset = torch.tensor([float(dy), float(dx)], dtype=torch.float64).repeat(2 * 9).view(1, 36, 1, 1)
    offset = offset.expand(2, 36, 7, 10).contiguous()  # every (group, tap) moved by (dy, dx)
    mask = torch.ones(2, 18, 7, 10, dtype=torch.float64)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1, 2, backend=backend)
    expected = F.conv2d(shift(F.pad(x, (1, 1, 1, 1)), dy, dx), weight, bias)
    torch.testing.assert_close(out, expected, **EXACT)


def test_mask_scales_the_output_linearly(backend: str) -> None:
    x, weight, bias = rand(2, 8, 6, 7), rand(4, 8, 3, 3, seed=1), rand(4, seed=2)
    offset = 1.5 * rand(2, 2 * 2 * 9, 6, 7, seed=3)
    m1, m2 = torch.rand(2, 18, 6, 7, dtype=torch.float64), torch.rand(2, 18, 6, 7, dtype=torch.float64)

    def conv(mask: torch.Tensor) -> torch.Tensor:  # without the bias: linear in the mask
        return modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1, 2, backend=backend) - bias.view(-1, 1, 1)

    torch.testing.assert_close(conv(0.3 * m1), 0.3 * conv(m1), **EXACT)
    torch.testing.assert_close(conv(m1 + m2), conv(m1) + conv(m2), **EXACT)
    torch.testing.assert_close(conv(torch.zeros_like(m1)), torch.zeros(2, 4, 6, 7, dtype=torch.float64), **EXACT)


@pytest.mark.parametrize(
    ("y", "x", "expected"),
    [
        (-1.0, 2.0, 0.0),  # y <= -1: zero, even though a bilinear corner (y = 0) is inside
        (-1.25, 2.0, 0.0),
        (-0.5, 2.0, 0.5 * 12.0),  # the corner at y = -1 contributes 0, the one at y = 0 half of X(0, 2)
        (2.5, 4.0, 0.0),  # x >= W
        (2.5, -1.0, 0.0),  # x <= -1
        (3.0, 1.0, 0.0),  # y >= H
        (1.5, 2.25, 0.5 * (0.75 * 22 + 0.25 * 23) + 0.5 * (0.75 * 32 + 0.25 * 33)),
    ],
)
def test_sample_positions_at_and_outside_the_border(backend: str, y: float, x: float, expected: float) -> None:
    """A 1x1 kernel at output (0, 0) samples X(y, x) at exactly the offset; X[i, j] = 10 * (i + 1) + j."""
    image = (10.0 * torch.arange(1, 4).view(3, 1) + torch.arange(4).view(1, 4)).double().view(1, 1, 3, 4)
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    offset[0, :, 0, 0] = torch.tensor([y, x])
    mask, weight = torch.ones(1, 1, 3, 4, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64)
    out = modulated_deform_conv2d(image, offset, mask, weight, None, backend=backend)
    assert out[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(out[0, 0].flatten()[1:], image.flatten()[1:], **EXACT)  # the others sit still


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize(
    ("y", "x"), [(math.nan, 1.0), (1.0, math.nan), (math.inf, 1.0), (1.0, -math.inf), (1e30, 1.0), (1.0, -1e30)]
)
def test_non_finite_and_huge_positions_sample_zero(
    backend: str, y: float, x: float, grad: bool, dtype: torch.dtype
) -> None:
    """A NaN, infinite or huge position samples 0, with zero gradients; the other samples are unaffected."""
    image = rand(1, 2, 3, 4).to(dtype)
    offset = torch.zeros(1, 2, 3, 4, dtype=dtype)
    offset[0, :, 0, 0] = torch.tensor([y, x])
    offset.requires_grad_(grad)
    mask = torch.ones(1, 1, 3, 4, dtype=dtype, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        conv = modulated_deform_conv2d(image, offset, mask, torch.ones(1, 2, 1, 1, dtype=dtype), None, backend=backend)
        samples = deform_sample(image, offset, mask, 1, 1, 0, 1, 1, backend=backend)
    assert conv[0, 0, 0, 0].item() == 0.0 and samples[0, :, 0, 0].tolist() == [0.0, 0.0]
    torch.testing.assert_close(conv[0, 0].flatten()[1:], image.sum(1)[0].flatten()[1:], rtol=0, atol=1e-6)
    if grad:
        (conv.sum() + samples.sum()).backward()
        assert offset.grad[0, :, 0, 0].tolist() == [0.0, 0.0] and mask.grad[0, 0, 0, 0].item() == 0.0
        assert offset.grad.isfinite().all() and mask.grad.isfinite().all()


def test_images_beyond_2_to_the_24_pixels(backend: str) -> None:
    """Flat pixel indices past 2**24 are exact (a float32 y * W + x is not): the far corner is sampled."""
    h = w = 4100  # 16,810,000 pixels; the last one has the odd index 16,809,999
    image = torch.randn(1, 1, h, w)
    corners = image[0, 0, [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]]
    stride = h - 1  # a 1x1 kernel with this stride samples the four corners
    out = modulated_deform_conv2d(
        image, torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 1, 1), None, stride, backend=backend
    )
    assert out.flatten().tolist() == corners.tolist()


@pytest.mark.parametrize(("channel", "neighbour_tap"), [(0, 3), (1, 1)], ids=["dy_moves_down", "dx_moves_right"])
def test_interleaved_offset_layout(backend: str, channel: int, neighbour_tap: int) -> None:
    """Offset channel 0 is dy and channel 1 is dx of tap 0 (kernel position (-1, -1)) of group 0.

    Setting it to 0.5 moves only that tap half a pixel down (right), i.e. halfway to tap 3 (tap 1), and
    only for the channels of group 0. Hand computation on unfolded (im2col) columns.
    """
    b, c, c_out, groups, h, w = 2, 4, 3, 2, 5, 6
    x, weight, bias = rand(b, c, h, w), rand(c_out, c, 3, 3, seed=1), rand(c_out, seed=2)
    offset = torch.zeros(b, 2 * groups * 9, h, w, dtype=torch.float64)
    offset[:, channel] = 0.5
    mask = torch.ones(b, groups * 9, h, w, dtype=torch.float64)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1, groups, backend=backend)

    columns = F.unfold(x, 3, padding=1).view(b, c, 9, h * w)  # X_c(p + p_k) for every tap k
    group0 = slice(0, c // groups)
    columns[:, group0, 0] = 0.5 * columns[:, group0, 0] + 0.5 * columns[:, group0, neighbour_tap]
    expected = (weight.view(c_out, c * 9) @ columns.view(b, c * 9, h * w)).view(b, c_out, h, w)
    torch.testing.assert_close(out, expected + bias.view(-1, 1, 1), **EXACT)
    reference = modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1, groups, backend="torch")
    torch.testing.assert_close(out, reference, **EXACT)


def test_deform_sample_matches_unfold_and_mask(backend: str) -> None:
    """Zero offsets: the samples are the im2col columns, (B, C, 9, H*W), times the mask of their group."""
    x = rand(2, 6, 5, 7)
    mask = torch.rand(2, 3 * 9, 5, 7, dtype=torch.float64)
    samples = deform_sample(
        x, torch.zeros(2, 2 * 3 * 9, 5, 7, dtype=torch.float64), mask, 3, 1, 1, 1, 3, backend=backend
    )
    columns = F.unfold(x, 3, padding=1).view(2, 3, 2, 9, 35)
    expected = (columns * mask.view(2, 3, 1, 9, 35)).view(2, 6, 9, 35)
    torch.testing.assert_close(samples, expected, **EXACT)


# ----------------------------------------------------------------------------------------------- modules


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_dcn_sep_keys_and_parameter_count() -> None:
    module = DCNSep(64, 64, 3, padding=1, deformable_groups=8)
    assert shapes(module) == {
        "weight": (64, 64, 3, 3),
        "bias": (64,),
        "conv_offset_mask.weight": (216, 64, 3, 3),
        "conv_offset_mask.bias": (216,),
    }
    assert sum(p.numel() for p in module.parameters()) == 161_560


def test_dcnv2_pack_uses_conv_offset() -> None:
    assert shapes(DCNv2Pack(64, 64, 3, padding=1, deformable_groups=8)) == {
        "weight": (64, 64, 3, 3),
        "bias": (64,),
        "conv_offset.weight": (216, 64, 3, 3),
        "conv_offset.bias": (216,),
    }


def test_dcnv2_keys() -> None:
    assert shapes(DCNv2(16, 32, 3, padding=1, deformable_groups=2)) == {
        "weight": (32, 16, 3, 3),
        "bias": (32,),
        "conv_offset_mask.weight": (54, 16, 3, 3),
        "conv_offset_mask.bias": (54,),
    }


def test_deformable_sampling_keys() -> None:
    assert shapes(DeformableSampling(72, deformable_groups=8)) == {
        "conv_offset_mask.weight": (216, 72, 3, 3),
        "conv_offset_mask.bias": (216,),
    }


@pytest.fixture
def use_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Modules call the functional API without a backend argument: choose it through the environment."""
    monkeypatch.setenv("STVSR_DCN_BACKEND", backend)
    return backend


@pytest.mark.parametrize("cls", [DCNSep, DCNv2Pack])
def test_modules_at_init_are_half_a_plain_conv(use_backend: str, cls: type) -> None:
    """Zero-initialised offset conv: offsets 0 and mask 0.5, so the output is 0.5 * conv2d(x, W) + b."""
    torch.manual_seed(0)
    module = cls(16, 8, 3, padding=1, deformable_groups=8).double()
    with torch.no_grad():
        module.bias.normal_()
    x, feat = rand(2, 16, 6, 5), rand(2, 16, 6, 5, seed=1)
    expected = 0.5 * F.conv2d(x, module.weight, padding=1) + module.bias.view(-1, 1, 1)
    torch.testing.assert_close(module(x, feat), expected, **EXACT)


def test_dcnv2_at_init_is_half_a_plain_conv(use_backend: str) -> None:
    module = DCNv2(8, 4, 3, padding=1, deformable_groups=2).double()
    with torch.no_grad():
        module.bias.normal_()
    x = rand(1, 8, 5, 6)
    expected = 0.5 * F.conv2d(x, module.weight, padding=1) + module.bias.view(-1, 1, 1)
    torch.testing.assert_close(module(x), expected, **EXACT)


def test_deformable_sampling_output(use_backend: str) -> None:
    x, feat = rand(2, 16, 5, 7), rand(2, 8, 5, 7, seed=1)
    module = DeformableSampling(16, deformable_groups=8, offset_in_channels=8).double()
    samples = module(x, feat)
    assert samples.shape == (2, 16, 9, 35)
    torch.testing.assert_close(samples, 0.5 * F.unfold(x, 3, padding=1).view(2, 16, 9, 35), **EXACT)


# ------------------------------------------------------------------------------------------ bad inputs


def valid_args() -> dict[str, torch.Tensor]:
    return {
        "input": torch.randn(1, 8, 5, 5),
        "offset": torch.zeros(1, 2 * 2 * 9, 5, 5),
        "mask": torch.ones(1, 2 * 9, 5, 5),
        "weight": torch.randn(4, 8, 3, 3),
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"offset": torch.zeros(1, 2 * 9, 5, 5)}, r"offset must have shape \(1, 36, 5, 5\)"),
        ({"offset": torch.zeros(1, 36, 4, 5)}, r"offset must have shape"),
        ({"mask": torch.ones(1, 9, 5, 5)}, r"mask must have shape \(1, 18, 5, 5\)"),
        ({"weight": torch.randn(4, 6, 3, 3)}, r"weight must be \(C_out, 8, kh, kw\)"),
        ({"input": torch.randn(1, 7, 5, 5), "weight": torch.randn(4, 7, 3, 3)}, r"7 input channels are not divisible"),
        ({"input": torch.randn(8, 5, 5)}, r"input must be \(B, C, H, W\)"),
        ({"bias": torch.randn(3)}, r"bias must have shape \(4,\), got \(3,\)"),
    ],
)
def test_bad_arguments_raise_value_error(change: dict[str, torch.Tensor], match: str) -> None:
    args = {**valid_args(), **change}
    with pytest.raises(ValueError, match=match):
        modulated_deform_conv2d(*args.values(), padding=1, deformable_groups=2, backend="torch")


def test_module_channels_not_divisible_by_groups() -> None:
    with pytest.raises(ValueError, match="in_channels=60 is not divisible by deformable_groups=8"):
        DCNSep(60, 64, 3, padding=1, deformable_groups=8)


def test_unknown_backend_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STVSR_DCN_BACKEND", "bogus")
    args = valid_args()
    with pytest.raises(ValueError, match="STVSR_DCN_BACKEND='bogus' is not a DCN backend"):
        modulated_deform_conv2d(*args.values(), padding=1, deformable_groups=2)


def test_unknown_backend_argument() -> None:
    with pytest.raises(ValueError, match="Unknown DCN backend 'bogus'"):
        modulated_deform_conv2d(*valid_args().values(), padding=1, deformable_groups=2, backend="bogus")


def test_bfloat16_input_on_cpu(backend: str) -> None:
    """Half-precision tensors are computed in float32 and the result (and the gradients) cast back."""
    args = {k: v.bfloat16().requires_grad_() for k, v in valid_args().items()}
    args["offset"] = (0.7 * torch.randn(1, 36, 5, 5)).bfloat16().requires_grad_()
    out = modulated_deform_conv2d(*args.values(), padding=1, deformable_groups=2, backend=backend)
    assert out.dtype == torch.bfloat16
    reference = modulated_deform_conv2d(
        *(v.detach().float() for v in args.values()), padding=1, deformable_groups=2, backend="torch"
    )
    torch.testing.assert_close(out.float(), reference, rtol=0.02, atol=0.05)
    out.float().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.bfloat16 for v in args.values())


# ------------------------------------------------------------------------------------- offset warning


def test_large_offset_warning_is_logged_and_rate_limited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dcn_modules, "_last_warning", [-math.inf])
    caplog.set_level(logging.WARNING, logger="stvsr.ops.modules")
    x = torch.randn(1, 8, 4, 4)

    def diverged() -> DCNSep:
        module = DCNSep(8, 8, 3, padding=1, deformable_groups=1)
        with torch.no_grad():
            module.conv_offset_mask.bias[:18] = 150.0  # every offset 150 px
        return module

    first = diverged()
    first(x, x)
    first(x, x)  # the same module checks its offsets only every _CHECK_EVERY forwards
    diverged()(x, x)  # another module checks at once, but the last warning was under _WARN_INTERVAL_S ago
    warnings = [r for r in caplog.records if "mean |offset|" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING and "DCNSep: mean |offset| = 150.0 > 100" in warnings[0].getMessage()


def test_modules_run_without_torch_compiler_is_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.1 and 2.2 (supported) have no torch.compiler.is_compiling."""
    monkeypatch.delattr(torch.compiler, "is_compiling")
    module = DCNSep(8, 8, 3, padding=1)
    assert module(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_no_offset_warning_below_threshold(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcn_modules, "_last_warning", [-math.inf])
    caplog.set_level(logging.WARNING, logger="stvsr.ops.modules")
    module = DCNSep(8, 8, 3, padding=1)
    with torch.no_grad():
        module.conv_offset_mask.bias[:18] = 50.0
    module(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4))
    assert not [r for r in caplog.records if "mean |offset|" in r.getMessage()]
