"""The GPU path: ``python -m pytest -m cuda tests`` on a machine with a CUDA device (skipped elsewhere).

Parity of every DCN backend on CUDA with a float64 CPU reference (TF32 off), half and bfloat16 inputs,
channels-last inputs, one training step and one evaluation forward of every registered model with each
backend, AMP bf16 / fp16 training through the trainer, a checkpoint written on the GPU read on the CPU, and
torch.compile (inductor) of a ZSM forward and training step. The in-place test of every op's output on every
device is in test_dcn_ops.py, the clean exit of stvsr-doctor in test_dcn_build.py; both run here too.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from stvsr.archs import ARCHS, StvsrArch, build_arch
from stvsr.model.weights import load_official
from stvsr.ops import BACKENDS, deform_sample, modulated_deform_conv2d
from stvsr.ops.backends import why_unavailable
from stvsr.runner import ModelFacts

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
]
CUDA = torch.device("cuda")
DCN_MODELS = {"LunaTokis", "STTrans2", "Net", "TMNet"}  # the registered models with deformable convolutions
# A small configuration of each registered model: the one its own CPU test module uses.
TINY_FROM = {
    "LunaTokis": ("test_archs_zsm", "TINY"),
    "STTrans2": ("test_archs_stdan", "TINY"),
    "Net": ("test_archs_msitf", "TINY"),
    "SAFA": ("test_archs_safa", "SMALL"),
    "STARnet": ("test_archs_starnet", "TINY"),
    "TMNet": ("test_archs_tmnet", "TINY"),
    "RSTT": ("test_archs_rstt", "TINY"),
    "bicubic": (None, {"which_model_G": "bicubic"}),
}


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off: otherwise matrix products round to 10 mantissa bits and 1e-4 errors look like bugs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def need(backend: str) -> None:
    reason = why_unavailable(backend, CUDA)
    if reason:
        pytest.fail(f"DCN backend '{backend}' does not run on CUDA here: {reason}")


def tiny_config(name: str) -> dict:
    module, attr = TINY_FROM[name]
    return dict(attr) if module is None else dict(getattr(importlib.import_module(module), attr))


def _dcn_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b, c, g, h, w = 2, 16, 4, 12, 10
    return {
        "input": torch.randn(b, c, h, w, generator=gen, dtype=torch.float64),
        "offset": 2.0 * torch.randn(b, 2 * g * 9, h, w, generator=gen, dtype=torch.float64),
        "mask": torch.rand(b, g * 9, h, w, generator=gen, dtype=torch.float64),
        "weight": torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64) / 12,
        "bias": torch.randn(c, generator=gen, dtype=torch.float64),
    }


def _forward_and_grads(t: dict[str, torch.Tensor], backend: str, device, dtype, memory_format=None):
    leaves = {}
    for k, v in t.items():
        v = v.detach().to(device=device, dtype=dtype, copy=True)
        if memory_format is not None and v.dim() == 4:
            v = v.contiguous(memory_format=memory_format)
        leaves[k] = v.requires_grad_()
    out = modulated_deform_conv2d(*leaves.values(), 1, 1, 1, 4, backend=backend)
    grad = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out).to(device=device, dtype=dtype)
    out.backward(grad)
    sample_leaves = {k: leaves[k].detach().clone().requires_grad_() for k in ("input", "offset", "mask")}
    samples = deform_sample(*sample_leaves.values(), 3, 1, 1, 1, 4, backend=backend)
    samples.backward(torch.cos(torch.arange(samples.numel(), dtype=torch.float64)).view_as(samples).to(samples))
    results = {"conv": out, **{f"conv d{k}": v.grad for k, v in leaves.items()}, "sample": samples}
    results.update({f"sample d{k}": v.grad for k, v in sample_leaves.items()})
    return {k: v.detach().double().cpu() for k, v in results.items()}


def _assert_close_scaled(got: dict, want: dict, tol: float) -> None:
    """Every output within ``tol`` of the reference, relative to the reference's largest magnitude."""
    for name, reference in want.items():
        scale = reference.abs().max().item() or 1.0
        err = (got[name] - reference).abs().max().item() / scale
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_on_cuda_match_a_float64_reference(backend: str) -> None:
    need(backend)
    t = _dcn_inputs()
    reference = _forward_and_grads(t, "torch", "cpu", torch.float64)
    _assert_close_scaled(_forward_and_grads(t, backend, CUDA, torch.float64), reference, 1e-10)
    _assert_close_scaled(_forward_and_grads(t, backend, CUDA, torch.float32), reference, 2e-5)
    channels_last = _forward_and_grads(t, backend, CUDA, torch.float32, torch.channels_last)
    _assert_close_scaled(channels_last, reference, 2e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_and_bfloat16_inputs(backend: str, dtype: torch.dtype) -> None:
    need(backend)
    t = _dcn_inputs(seed=1)
    leaves = {k: v.to(CUDA, dtype).requires_grad_() for k, v in t.items()}
    out = modulated_deform_conv2d(*leaves.values(), 1, 1, 1, 4, backend=backend)
    assert out.dtype == dtype
    out.float().square().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == dtype and v.grad.isfinite().all() for v in leaves.values())
    reference = _forward_and_grads(t, "torch", "cpu", torch.float64)["conv"]
    scale = reference.abs().max().item()
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    assert (out.detach().double().cpu() - reference).abs().max().item() / scale <= tol


def _model_input(model: torch.nn.Module, train: bool) -> tuple[int, int]:
    """(frames, size) of a small input the model takes: 4 frames (2 for the pair models in training)."""
    frames = ModelFacts.of(model).input_frames or 4
    if train and type(model).supervised is not StvsrArch.supervised:  # the pair models
        frames = 2
    return frames, 32


def _train_step(model: torch.nn.Module) -> None:
    model.train()
    n, size = _model_input(model, train=True)
    x = torch.rand(2, n, 3, size, size, device=CUDA)
    gt = torch.rand(2, 2 * n - 1, 3, 4 * size, 4 * size, device=CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def charbonnier(a, b):
        return torch.sqrt((a - b) ** 2 + 1e-6).mean()

    loss = model.training_objective(x, gt, charbonnier)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "no weight changed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(ARCHS))
def test_every_model_trains_and_evaluates_on_cuda(name: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert name in TINY_FROM, f"add a small configuration of '{name}' to TINY_FROM"
    if name not in DCN_MODELS and backend != "ext":
        pytest.skip(f"{name} has no deformable convolution: one backend is enough")
    if name in DCN_MODELS:
        need(backend)
        monkeypatch.setenv("STVSR_DCN_BACKEND", backend)
    torch.manual_seed(0)
    model = build_arch(tiny_config(name))
    if any(True for _ in model.parameters()):
        _train_step(model.to(CUDA))
    model.eval()
    n, size = _model_input(model, train=False)
    x = torch.rand(1, n, 3, size, size)
    with torch.no_grad():
        on_gpu = model(x.to(CUDA)).cpu()
        on_cpu = model.cpu()(x)
    assert on_gpu.shape == (1, 2 * n - 1, 3, 4 * size, 4 * size)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=2e-4)


def _trainer_options(tmp_path, **train):
    import test_trainer

    data = test_trainer.make_vimeo(tmp_path / "vimeo", clips=3)
    opt, _ = test_trainer.base_options(tmp_path, data, **train)
    opt["device"] = "cuda"
    return opt


@pytest.mark.parametrize(
    "train", [{"amp": "bf16"}, {"amp": "fp16"}, {"compile": True}], ids=["bf16", "fp16", "compile"]
)
def test_trainer_runs_with_mixed_precision_and_compile(tmp_path, train: dict) -> None:
    from stvsr.train.trainer import Trainer

    trainer = Trainer(_trainer_options(tmp_path, niter=3, **train))
    try:
        result = trainer.train()
    finally:
        trainer.close()
    assert result["iter"] == 3 and torch.isfinite(torch.tensor(result["loss"]))


def test_checkpoint_written_on_the_gpu_loads_on_the_cpu(tmp_path) -> None:
    from stvsr.train.trainer import Trainer, find_latest_checkpoint

    opt = _trainer_options(tmp_path, niter=3)
    trainer = Trainer(opt)
    try:
        trainer.train()
        gpu_weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    finally:
        trainer.close()
    checkpoint = find_latest_checkpoint(trainer.models_dir)
    cpu_model = build_arch(opt["network_G"])
    assert load_official(cpu_model, checkpoint).ok
    assert all(torch.equal(v, gpu_weights[k]) for k, v in cpu_model.state_dict().items())


@pytest.mark.parametrize("backend", ["ext", "torchvision"])
def test_compiled_zsm_forward_and_training_step_on_cuda(backend: str) -> None:
    from test_dcn_ops import _compiled_zsm_checks

    need(backend)
    _compiled_zsm_checks(backend, "cuda", "inductor")
