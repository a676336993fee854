"""Every backend against the literal oracle of ``tests/dcn_reference.py``, in float64: forward and all
gradients, at random sample positions and at integer ones. At an integer position bilinear interpolation
has a kink, and the convention of the kernels must hold there: ``floor`` picks the corners, so the
gradient is the right-hand difference (which is what a model at initialisation, with all offsets zero,
trains with). The pure PyTorch backend runs in row bands without autograd and in blocks of deformable
groups with it; both splits are forced down to one row / one group here too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

import dcn_reference
from stvsr.ops import deform_sample, modulated_deform_conv2d, torch_impl

# (B, C, C_out, groups, H, W, kernel, stride, padding, dilation)
SHAPES = {
    "5x7_dg2": (2, 8, 3, 2, 5, 7, (3, 3), 1, 1, 1),
    "stride2": (1, 4, 2, 1, 7, 6, (3, 3), 2, 1, 1),
    "dilation2_kernel2x3": (1, 4, 2, 2, 6, 7, (2, 3), 1, 2, 2),
    "one_row": (1, 4, 2, 2, 1, 9, (3, 3), 1, 1, 1),
}


def make_inputs(shape: tuple, offsets: str, seed: int = 0) -> dict[str, torch.Tensor]:
    b, c, c_out, groups, h, w, (kh, kw), stride, padding, dilation = shape
    out_h = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    gen = torch.Generator().manual_seed(seed)
    offset_shape = (b, 2 * groups * kh * kw, out_h, out_w)
    if offsets == "random":
        offset = 2.0 * torch.randn(offset_shape, generator=gen, dtype=torch.float64)
    elif offsets == "integer":  # many samples exactly on the border lines y = -1, y = H - 1, x = W ...
        offset = torch.randint(-4, 5, offset_shape, generator=gen).double()
    else:
        offset = torch.zeros(offset_shape, dtype=torch.float64)
    tensors = {
        "input": torch.randn(b, c, h, w, generator=gen, dtype=torch.float64),
        "offset": offset,
        "mask": torch.rand(b, groups * kh * kw, out_h, out_w, generator=gen, dtype=torch.float64),
        "weight": torch.randn(c_out, c, kh, kw, generator=gen, dtype=torch.float64),
        "bias": torch.randn(c_out, generator=gen, dtype=torch.float64),
    }
    return {k: v.requires_grad_() for k, v in tensors.items()}


def conv_and_grads(fn, t: dict[str, torch.Tensor], shape: tuple) -> dict[str, torch.Tensor]:
    *_, groups, _, _, _, stride, padding, dilation = shape
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items()}
    out = fn(*leaves.values(), _pair(stride), _pair(padding), _pair(dilation), groups)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
    return {"forward": out.detach(), **{f"grad {k}": v.grad for k, v in leaves.items()}}


def sample_and_grads(fn, t: dict[str, torch.Tensor], shape: tuple) -> dict[str, torch.Tensor]:
    *_, groups, _, _, kernel, stride, padding, dilation = shape
    leaves = {k: t[k].detach().clone().requires_grad_() for k in ("input", "offset", "mask")}
    out = fn(*leaves.values(), kernel, _pair(stride), _pair(padding), _pair(dilation), groups)
    out.backward(torch.sin(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
    return {"forward": out.detach(), **{f"grad {k}": v.grad for k, v in leaves.items()}}


def assert_all_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for name, ref in expected.items():
        torch.testing.assert_close(actual[name], ref, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(params=["whole", "one_row_bands_one_group_blocks"])
def torch_split(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param != "whole":
        monkeypatch.setattr(torch_impl, "_BAND_BYTES", 1)
        monkeypatch.setattr(torch_impl, "_BLOCK_BYTES", 1)
        monkeypatch.setattr(torch_impl, "_FRESH_MAPPING_BYTES", 1)  # deform_sample's bands into huge pages
    return request.param


@pytest.mark.parametrize("offsets", ["random", "integer", "zero"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_conv_equals_the_oracle(backend: str, torch_split: str, shape: tuple, offsets: str) -> None:
    if backend != "torch" and torch_split != "whole":
        pytest.skip("the split only concerns the torch backend")
    t = make_inputs(shape, offsets)
    expected = conv_and_grads(dcn_reference.modulated_deform_conv2d, t, shape)

    def run(*args):
        *tensors, stride, padding, dilation, groups = args
        return modulated_deform_conv2d(*tensors, stride, padding, dilation, groups, backend=backend)

    assert_all_close(conv_and_grads(run, t, shape), expected)
    with torch.no_grad():  # the no-grad path of the torch backend (row bands, in-place modulation)
        torch.testing.assert_close(run(*t.values(), *shape[-3:], shape[3]), expected["forward"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("offsets", ["random", "integer", "zero"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_sample_equals_the_oracle(backend: str, torch_split: str, shape: tuple, offsets: str) -> None:
    if backend != "torch" and torch_split != "whole":
        pytest.skip("the split only concerns the torch backend")
    t = make_inputs(shape, offsets)
    expected = sample_and_grads(dcn_reference.deform_sample, t, shape)

    def run(*args):
        return deform_sample(*args, backend=backend)

    assert_all_close(sample_and_grads(run, t, shape), expected)
    with torch.no_grad():  # the no-grad path of the torch backend (in place, or in row bands when large)
        *_, groups, _, _, kernel, stride, padding, dilation = shape
        got = run(t["input"], t["offset"], t["mask"], kernel, stride, padding, dilation, groups)
    torch.testing.assert_close(got, expected["forward"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("height", [1, 2, 3, 31, 33, 64, 65, 100, 144])
def test_integer_positions_are_exact_in_float32(height: int) -> None:
    """Zero offsets and a unit mask sample the pixels themselves: exactly, for every plane size (the
    grid normalisation of the torch backend must round-trip integers), with the right-hand gradient."""
    width = height + 47
    x = torch.randn(1, 2, height, width)
    offset = torch.zeros(1, 18, height, width, requires_grad=True)
    mask = torch.ones(1, 9, height, width)
    samples = deform_sample(x, offset, mask, 3, 1, 1, 1, 1, backend="torch")
    torch.testing.assert_close(samples.view(1, 2 * 9, -1), F.unfold(x, 3, padding=1), rtol=0, atol=0)
    samples.sum().backward()
    # d(sum of tap (0, 0) samples)/d(dx) at output p: x[p + (-1, 0)] - x[p + (-1, -1)] (0 outside the
    # image), except in column 0, where the tap samples x = -1 exactly: outside, so zero gradient.
    padded = F.pad(x, (1, 1, 1, 1))
    right_difference = (padded[..., :-2, 1:-1] - padded[..., :-2, :-2]).sum(1)
    right_difference[..., 0] = 0
    torch.testing.assert_close(offset.grad[0, 1], right_difference[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(64, 112, (64, 128, False)), (144, 180, (256, 256, False)), (65, 129, (65, 129, True)), (1, 1, (1, 1, False))],
)
def test_exact_grid_size(height: int, width: int, expected: tuple[int, int, bool]) -> None:
    assert torch_impl._exact_grid_size(height, width) == expected


def test_strided_inputs_equal_contiguous_ones(backend: str) -> None:
    """Channels-last input, offsets and masks that are views of a transposed tensor (as in STDAN)."""
    shape = SHAPES["5x7_dg2"]
    t = make_inputs(shape, "random")
    expected = conv_and_grads(dcn_reference.modulated_deform_conv2d, t, shape)
    strided = dict(t)
    strided["input"] = t["input"].detach().contiguous(memory_format=torch.channels_last)
    for key in ("offset", "mask"):
        strided[key] = t[key].detach().transpose(2, 3).contiguous().transpose(2, 3)

    def run(*args):
        *tensors, stride, padding, dilation, groups = args
        return modulated_deform_conv2d(*tensors, stride, padding, dilation, groups, backend=backend)

    assert_all_close(conv_and_grads(run, strided, shape), expected)
    with torch.no_grad():
        out = run(*strided.values(), *shape[-3:], shape[3])
    torch.testing.assert_close(out, expected["forward"], rtol=0, atol=1e-10)
    samples = sample_and_grads(lambda *a: deform_sample(*a, backend=backend), strided, shape)
    assert_all_close(samples, sample_and_grads(dcn_reference.deform_sample, t, shape))
