"""The deformable ops as operators: fresh outputs on every device, torch.library registration (opcheck),
the offset monitor, and torch.compile (one graph, no recompiles, the eager result)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from stvsr.archs import build_arch
from stvsr.ops import DCNSep, check_offsets, deform_sample, ext, modulated_deform_conv2d, offset_magnitudes
from stvsr.ops import modules as dcn_modules
from stvsr.ops.backends import why_unavailable

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
ZSM_TINY = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 2, "front_RBs": 1, "back_RBs": 1}


def _inputs(device: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b, c, g, h, w = 2, 8, 2, 6, 5
    t = {
        "input": torch.randn(b, c, h, w, generator=gen),
        "offset": 1.5 * torch.randn(b, 2 * g * 9, h, w, generator=gen),
        "mask": torch.rand(b, g * 9, h, w, generator=gen),
        "weight": torch.randn(c, c, 3, 3, generator=gen) / 8,
        "bias": torch.randn(c, generator=gen),
    }
    return {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in t.items()}


def _run(op: str, t: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    if op == "conv":
        return modulated_deform_conv2d(*t.values(), 1, 1, 1, 2, backend=backend)
    return deform_sample(t["input"], t["offset"], t["mask"], 3, 1, 1, 1, 2, backend=backend)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["conv", "sample"])
def test_every_op_output_takes_an_in_place_op_under_autograd(backend: str, op: str, device: str) -> None:
    """A view of a kernel's internal buffer breaks ``F.leaky_relu_(out)`` in autograd (seen on CUDA)."""
    reason = why_unavailable(backend, device)
    if reason:
        pytest.skip(reason)
    plain, inplace = _inputs(device), _inputs(device)
    expected = F.leaky_relu(_run(op, plain, backend), 0.1)
    out = _run(op, inplace, backend)
    if backend == "ext":  # a compiled kernel's output must be its own allocation (torch's may be a view)
        assert out._base is None, "the kernel returned a view of an internal buffer"
    F.leaky_relu_(out, 0.1)
    torch.testing.assert_close(out, expected)
    (expected * expected).sum().backward()
    (out * out).sum().backward()
    for name in inplace:
        if plain[name].grad is not None:
            torch.testing.assert_close(inplace[name].grad, plain[name].grad, msg=f"gradient of {name}")


@pytest.mark.ext
@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch >= 2.4")
@pytest.mark.parametrize("device", DEVICES)
def test_extension_ops_are_registered_and_pass_opcheck(device: str) -> None:
    """Schema, fake (meta) implementation, autograd registration and tracing of the torch.ops.stvsr operators."""
    if why_unavailable("ext", device):
        pytest.skip(why_unavailable("ext", device))
    t = _inputs(device, torch.float64)
    conv_args = (t["input"], t["offset"], t["mask"], t["weight"], t["bias"], [1, 1], [1, 1], [1, 1], 2)
    torch.library.opcheck(torch.ops.stvsr.deform_conv2d.default, conv_args)
    no_bias = (*conv_args[:4], None, *conv_args[5:])
    torch.library.opcheck(torch.ops.stvsr.deform_conv2d.default, no_bias)
    sample_args = (t["input"], t["offset"], t["mask"], [3, 3], [1, 1], [1, 1], [1, 1], 2)
    torch.library.opcheck(torch.ops.stvsr.deform_sample.default, sample_args)


@pytest.mark.ext
def test_gradients_that_are_not_needed_are_not_computed() -> None:
    if not ext.register_ops():
        pytest.skip("torch < 2.4: no registered operators")
    t = _inputs("cpu")
    grads = torch.ops.stvsr.deform_conv2d_backward(
        torch.ones(2, 8, 6, 5), *(t[k].detach() for k in ("input", "offset", "mask", "weight")),
        [1, 1], [1, 1], [1, 1], 2, False, True, False, False,
    )  # fmt: skip
    assert [g.numel() for g in grads] == [0, t["offset"].numel(), t["mask"].numel(), 0, 0]


# --------------------------------------------------------------------------------------- offset monitor


def test_offset_monitor_records_the_last_forward_outside_the_state_dict(caplog: pytest.LogCaptureFixture) -> None:
    module = DCNSep(8, 8, 3, padding=1, deformable_groups=2)
    assert "offset_magnitude" not in module.state_dict()
    with torch.no_grad():
        module.conv_offset_mask.bias[:36] = -3.0
    x = torch.randn(1, 8, 5, 5)
    module(x, x)
    assert offset_magnitudes(module) == {"": pytest.approx(3.0)}
    net = torch.nn.ModuleDict({"a": module, "b": DCNSep(8, 8, 3, padding=1)})
    net["b"](x, x)
    assert offset_magnitudes(net) == {"a": pytest.approx(3.0), "b": 0.0}
    assert check_offsets(net, threshold=1.0) == {"a": pytest.approx(3.0)}


def test_nan_offsets_count_as_large(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dcn_modules, "_last_warning", [-math.inf])
    caplog.set_level(logging.WARNING, logger="stvsr.ops.modules")
    module = DCNSep(8, 8, 3, padding=1)
    module.offset_magnitude.fill_(float("nan"))
    assert list(check_offsets(module)) == [""]
    assert "DCNSep: mean |offset| = nan" in caplog.text


# ---------------------------------------------------------------------------------------- torch.compile


def _compiled_zsm_checks(backend: str, device: str, compiler: str) -> None:
    """Compiles a tiny ZSM forward and training step: one graph (fullgraph), the eager result, no recompile
    for a second batch of the same shape, and the offset monitor fed from inside the compiled graph."""
    import torch._dynamo

    monkey_env = pytest.MonkeyPatch()
    monkey_env.setenv("STVSR_DCN_BACKEND", backend)
    try:
        torch._dynamo.reset()
        torch.manual_seed(0)
        net = build_arch(ZSM_TINY).to(device)
        x = torch.rand(2, 3, 3, 8, 8, device=device)
        expected = net(x)
        expected.square().mean().backward()
        eager_grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad(set_to_none=True)
        compiled = torch.compile(net, backend=compiler, fullgraph=True)
        out = compiled(x)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        out.square().mean().backward()
        for p, g in zip(net.parameters(), eager_grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5)
        for module in (m for m in net.modules() if isinstance(m, DCNSep)):
            module.offset_magnitude.fill_(-1.0)
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled(torch.rand(2, 3, 3, 8, 8, device=device)).sum().backward()
        assert all(v >= 0 for v in offset_magnitudes(net).values()), "the compiled graph did not record offsets"
    finally:
        monkey_env.undo()
        torch._dynamo.reset()


@pytest.mark.ext
def test_compiled_zsm_with_the_extension_is_one_graph_without_recompiles() -> None:
    if not ext.register_ops():
        pytest.skip("torch < 2.4: the extension is an autograd.Function there (a graph break)")
    _compiled_zsm_checks("ext", "cpu", "aot_eager")


@pytest.mark.parametrize("op", ["conv", "sample"])
def test_compiled_torch_backend_training_step_is_one_graph_with_eager_gradients(op: str) -> None:
    """The torch backend's hand-written backwards (autograd.Functions) trace into one graph."""
    import torch._dynamo

    torch._dynamo.reset()
    eager, traced = _inputs("cpu"), _inputs("cpu")
    (_run(op, eager, "torch") ** 2).sum().backward()
    compiled = torch.compile(lambda t: (_run(op, t, "torch") ** 2).sum(), backend="aot_eager", fullgraph=True)
    compiled(traced).backward()
    for name, tensor in eager.items():
        if tensor.grad is not None:
            torch.testing.assert_close(traced[name].grad, tensor.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()


def test_compiled_dcn_module_with_the_torch_backend_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo

    monkeypatch.setenv("STVSR_DCN_BACKEND", "torch")
    torch._dynamo.reset()
    module = DCNSep(8, 8, 3, padding=1, deformable_groups=2)
    torch.nn.init.normal_(module.conv_offset_mask.weight, std=0.1)
    x, feat = torch.randn(1, 8, 7, 6), torch.randn(1, 8, 7, 6)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, feat), module(x, feat), rtol=1e-5, atol=1e-6)
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled(torch.randn(1, 8, 7, 6), feat)
    torch._dynamo.reset()
