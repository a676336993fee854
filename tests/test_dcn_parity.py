"""float32 parity of every working backend with the pure PyTorch reference, on a realistic shape.

Bounds: the forward output must agree to 1e-4 absolute. A gradient must agree to
``1e-4 * max(1, rms(reference gradient))``. The upstream gradient is standard normal, and the input,
offset and mask gradients then have an rms below 1 (checked below), so for them the bound is the
absolute 1e-4. The weight and bias gradients each sum B*Ho*Wo = 3072 products and reach an rms of
20-60; float32 rounding of such sums grows with their magnitude whatever the summation order, so their
bound scales with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stvsr.ops import deform_sample, modulated_deform_conv2d, torch_impl

TOL = 1e-4
B, C, C_OUT, G, H, W = 2, 64, 64, 8, 32, 48
CONV_INPUTS = ("input", "offset", "mask", "weight", "bias")


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "input": torch.randn(B, C, H, W, generator=gen),
        "offset": 2.0 * torch.randn(B, 2 * G * 9, H, W, generator=gen),
        "mask": torch.sigmoid(torch.randn(B, G * 9, H, W, generator=gen)),
        "weight": torch.randn(C_OUT, C, 3, 3, generator=gen) / 24,
        "bias": torch.randn(C_OUT, generator=gen),
        "grad_out": torch.randn(B, C_OUT, H, W, generator=gen),
        "grad_samples": torch.randn(B, C, 9, H * W, generator=gen),
    }


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return make_inputs()


def conv_results(
    t: dict[str, torch.Tensor],
    backend: str,
    requires_grad: tuple[str, ...] = CONV_INPUTS,
) -> dict[str, torch.Tensor]:
    leaves = {k: t[k].clone().requires_grad_(k in requires_grad) for k in CONV_INPUTS}
    out = modulated_deform_conv2d(*leaves.values(), 1, 1, 1, G, backend=backend)
    out.backward(t["grad_out"])
    grads = {f"grad {k}": v.grad for k, v in leaves.items() if k in requires_grad}
    assert all(v.grad is None for k, v in leaves.items() if k not in requires_grad)
    return {"forward": out.detach(), **grads}


def sample_results(t: dict[str, torch.Tensor], backend: str) -> dict[str, torch.Tensor]:
    leaves = {k: t[k].clone().requires_grad_() for k in ("input", "offset", "mask")}
    samples = deform_sample(*leaves.values(), 3, 1, 1, 1, G, backend=backend)
    samples.backward(t["grad_samples"])
    return {"forward": samples.detach(), **{f"grad {k}": v.grad for k, v in leaves.items()}}


def rms(t: torch.Tensor) -> float:
    return t.double().square().mean().sqrt().item()


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, ref in expected.items():
        assert actual[name].shape == ref.shape and actual[name].dtype == ref.dtype, name
        scale = 1.0 if name == "forward" else max(1.0, rms(ref))
        error = (actual[name] - ref).abs().max().item()
        assert error <= TOL * scale, f"{name}: max abs error {error:.3g} > {TOL * scale:.3g} (scale {scale:.3g})"


def test_conv_forward_and_gradients(other_backend: str, inputs: dict[str, torch.Tensor]) -> None:
    assert_close(conv_results(inputs, other_backend), conv_results(inputs, "torch"))


def test_sample_forward_and_gradients(other_backend: str, inputs: dict[str, torch.Tensor]) -> None:
    assert_close(sample_results(inputs, other_backend), sample_results(inputs, "torch"))


@pytest.mark.parametrize(
    "requires_grad",
    [("input", "offset", "mask"), ("input",), ("offset",), ("mask", "bias"), ("weight", "bias")],
    ids=lambda names: "+".join(names),
)
def test_conv_partial_requires_grad(
    other_backend: str, inputs: dict[str, torch.Tensor], requires_grad: tuple[str, ...]
) -> None:
    """Frozen inputs (a frozen weight, a detached offset, ...) leave the other gradients unchanged."""
    expected = conv_results(inputs, "torch", requires_grad)
    assert_close(conv_results(inputs, other_backend, requires_grad), expected)
    full = conv_results(inputs, "torch")
    for name in expected:  # and equal to the ones computed with everything requiring grad
        torch.testing.assert_close(expected[name], full[name], rtol=0, atol=TOL * max(1.0, rms(full[name])))


def test_gradient_scale_is_realistic(inputs: dict[str, torch.Tensor]) -> None:
    """The input, offset and mask gradients are O(1), so their bound above is the absolute 1e-4."""
    grads = conv_results(inputs, "torch")
    for name in ("grad input", "grad offset", "grad mask"):
        assert 0.05 < rms(grads[name]) <= 1.0, name


def test_sample_forward_above_the_fresh_mapping_size(other_backend: str) -> None:
    """A (B, C, 9, L) output of more than 32 MB, which the ext kernels put on huge pages, is the same."""
    gen = torch.Generator().manual_seed(1)
    height, width = 120, 124  # 64 * 9 * 120 * 124 * 4 bytes = 34 MB
    x = torch.randn(1, C, height, width, generator=gen)
    offset = 2.0 * torch.randn(1, 2 * G * 9, height, width, generator=gen)
    mask = torch.rand(1, G * 9, height, width, generator=gen)
    with torch.no_grad():
        got = deform_sample(x, offset, mask, 3, 1, 1, 1, G, backend=other_backend)
        expected = deform_sample(x, offset, mask, 3, 1, 1, 1, G, backend="torch")
    assert got.nbytes > 32 << 20
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


def test_torch_sample_above_the_fresh_mapping_size_equals_its_autograd_path() -> None:
    """Without autograd the torch backend writes such an output in row bands (into huge pages)."""
    gen = torch.Generator().manual_seed(2)
    height, width = 121, 124  # 34 MB; bands of 14 rows, the last one shorter
    x = torch.randn(1, C, height, width, generator=gen)
    offset = 2.0 * torch.randn(1, 2 * G * 9, height, width, generator=gen)
    mask = torch.rand(1, G * 9, height, width, generator=gen)
    with torch.no_grad():
        banded = deform_sample(x, offset, mask, 3, 1, 1, 1, G, backend="torch")
    whole = deform_sample(x, offset.requires_grad_(), mask, 3, 1, 1, 1, G, backend="torch")
    assert banded.nbytes > 32 << 20
    torch.testing.assert_close(banded, whole.detach(), rtol=0, atol=0)


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping that holds ``address`` (Linux's /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:  # a mapping's first line: start-end perms ...
            start, end = (int(v, 16) for v in head.split("-"))
            inside = start <= address < end
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(), reason="no THP support here")
def test_large_torch_backend_outputs_are_asked_for_huge_pages() -> None:
    """The hint reaches the kernel: the mapping of a 40 MB output carries the ``hg`` (MADV_HUGEPAGE) flag."""
    out = torch_impl._empty_for_writing(torch.empty(0), 10 << 20)  # 40 MB of float32
    assert "hg" in _vm_flags(out.data_ptr() + (20 << 20))


def test_only_whole_huge_pages_of_large_outputs_are_hinted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(torch_impl, "_madvise", lambda: lambda *args: calls.append(args))
    torch_impl._empty_for_writing(torch.empty(0), 1 << 20)  # 4 MB: from the heap, left alone
    assert calls == []
    out = torch_impl._empty_for_writing(torch.empty(0), 10 << 20)
    (start, length, advice), huge = calls[0], 2 << 20
    assert len(calls) == 1 and advice == 14  # MADV_HUGEPAGE
    assert start % huge == 0 and length % huge == 0 and length >= (40 << 20) - 2 * huge
    assert out.data_ptr() <= start and start + length <= out.data_ptr() + out.nbytes
