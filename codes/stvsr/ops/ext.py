"""The compiled DCN backend: finding or building the extension, and its autograd functions.

The extension is compiled from ``DCNv2_latest/src`` (C++ CPU kernels always; CUDA kernels when a
GPU and the CUDA toolkit are present). It is looked up, in order, as a prebuilt module
(``bash DCNv2_latest/make.sh``) and then in a just-in-time build cache (``STVSR_EXT_DIR`` or
``~/.cache/stvsr/dcn_ext``), built there on first use. A build failure is logged once, in full, and
the caller falls back to another backend.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

PREBUILT_MODULE = "stvsr_dcn_ext"
# ATen's parallel_for is a header template: without -fopenmp it silently runs on one thread. The
# extension links the libgomp that torch already loaded (same soname). -march=native: the build is
# made on (and cached for) the machine that runs it; build_tag() includes the CPU model.
# -fno-trapping-math (as PyTorch's own build): float-to-int conversions may then be vectorised, which
# the per-tap geometry loops need; results are IEEE all the same.
CXX_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-trapping-math")
LD_FLAGS = ("-fopenmp",)
_CPU_SOURCES = ("dcn.cpp", "cpu/dcn_cpu.cpp")
_CUDA_SOURCES = ("cuda/dcn_cuda.cu",)


@dataclass
class ExtensionState:
    module: ModuleType | None = None
    location: str = ""  # where the module came from (file path)
    error: str = ""  # why it could not be loaded (full compiler output for a failed build)
    tried: bool = False


_state = ExtensionState()


def source_dir() -> Path:
    """Directory holding ``dcn.cpp``: inside an installed package, or ``DCNv2_latest/src`` of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parents[2] / "DCNv2_latest" / "src"):
        if (candidate / "dcn.cpp").is_file():
            return candidate
    raise FileNotFoundError(
        f"DCN sources not found (looked in {here / 'csrc'} and {here.parents[2] / 'DCNv2_latest' / 'src'}); "
        "reinstall stvsr from a complete checkout"
    )


def cuda_wanted() -> bool:
    """Compile CUDA kernels when a GPU and the CUDA toolkit are present (STVSR_DCN_CUDA=0 turns it off)."""
    if os.environ.get("STVSR_DCN_CUDA", "1") == "0" or not torch.cuda.is_available():
        return False
    from torch.utils.cpp_extension import CUDA_HOME  # the compiler tooling: loaded only when a build is needed

    return CUDA_HOME is not None


def _sources(with_cuda: bool) -> list[Path]:
    root = source_dir()
    names = _CPU_SOURCES + (_CUDA_SOURCES if with_cuda else ())
    return [root / name for name in names]


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), platform.machine())
    except OSError:
        return platform.machine() + platform.processor()


def source_digest() -> str:
    """Hash of the kernel sources; compiled into the module so that a stale prebuilt one is detected."""
    digest = hashlib.sha256()
    root = source_dir()
    for path in sorted(root.rglob("*")):
        if path.suffix in {".h", ".cpp", ".cu", ".cuh"}:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def defines(with_cuda: bool) -> list[str]:
    """Preprocessor definitions of a build (the digest is a bare token: ninja runs flags through a shell)."""
    return [f"-DSTVSR_SOURCE_DIGEST={source_digest()}", *(["-DWITH_CUDA"] if with_cuda else [])]


def build_tag(with_cuda: bool) -> str:
    """Identifies a build: Python, torch, CUDA, the CPU and the sources. A change of any rebuilds."""
    digest = hashlib.sha256(source_digest().encode())
    digest.update(_cpu_signature().encode())  # -march=native code only runs on the same kind of CPU
    device = f"cu{torch.version.cuda}" if with_cuda else "cpu"
    torch_version = torch.__version__.split("+")[0]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"{py}_torch{torch_version}_{device}_{digest.hexdigest()[:12]}".replace(".", "")


def cache_root() -> Path:
    return Path(os.environ.get("STVSR_EXT_DIR") or Path.home() / ".cache" / "stvsr" / "dcn_ext")


def build(verbose: bool = False) -> ModuleType:
    """Compile (or reuse the cached build of) the extension and import it. Raises on failure."""
    from torch.utils.cpp_extension import load  # the compiler tooling: loaded only when a build is needed

    with_cuda = cuda_wanted()
    tag = build_tag(with_cuda)
    build_dir = cache_root() / tag
    build_dir.mkdir(parents=True, exist_ok=True)
    if not any(build_dir.glob("*.so")):
        logger.info("Building the DCN extension (%s) in %s; this happens once.", tag, build_dir)
    _put_ninja_on_path()
    flags = defines(with_cuda)
    return load(
        name=f"stvsr_dcn_{tag}",
        sources=[str(p) for p in _sources(with_cuda)],
        build_directory=str(build_dir),
        extra_cflags=[*CXX_FLAGS, *flags],
        extra_ldflags=list(LD_FLAGS),
        extra_cuda_cflags=["-O3", *flags],
        with_cuda=with_cuda,
        verbose=verbose,
    )


def ninja_folders() -> list[str]:
    """Folders holding the ``ninja`` executable of the pip package ``ninja``, wherever it was installed
    (``ninja.BIN_DIR`` is '' in a venv that borrows the package from the base interpreter)."""
    try:
        dist = importlib.metadata.distribution("ninja")
    except importlib.metadata.PackageNotFoundError:
        return []
    executables = [
        f for f in dist.files or [] if f.name in ("ninja", "ninja.exe") and f.parent.name in ("bin", "Scripts")
    ]
    return [str(Path(dist.locate_file(f)).resolve().parent) for f in executables]


def _put_ninja_on_path() -> None:
    """torch's builder runs ``ninja`` from PATH; the pip-installed one is not there in an unactivated venv."""
    if shutil.which("ninja"):
        return
    for folder in ninja_folders():
        if shutil.which("ninja", path=folder):
            os.environ["PATH"] = os.pathsep.join([folder, os.environ.get("PATH", "")])
            return
    # none: torch's own error ("Ninja is required to load C++ extensions") says what is missing


def _first_error(output: str) -> str:
    """The first compiler error line of a build's output (or its first line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\b(fatal )?error\b:", line, re.IGNORECASE):  # g++, clang, nvcc, ld
            return line
    return lines[0] if lines else "(no output)"


def describe_build_failure(output: str) -> str:
    """Writes the full output of a failed build to a log file and returns a two-line summary naming it."""
    log = cache_root() / "last_build_failure.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
        where = f"full log: {log}"
    except OSError as exc:
        where = f"the full log could not be written to {log} ({exc})"
    return f"the DCN extension could not be built: {_first_error(output)}\n  ({where})"


def _import_prebuilt() -> ModuleType | None:
    try:
        module = importlib.import_module(PREBUILT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != PREBUILT_MODULE:
            logger.warning("Ignoring prebuilt %s: %s", PREBUILT_MODULE, exc)
        return None
    except (ImportError, OSError) as exc:  # e.g. built against another torch: undefined symbols
        logger.warning("Ignoring prebuilt %s (%s); rebuild it with DCNv2_latest/make.sh", PREBUILT_MODULE, exc)
        return None
    if module.source_digest() != source_digest():
        logger.warning(
            "Ignoring prebuilt %s: built from other sources than these; rebuild it with "
            "DCNv2_latest/make.sh (using a just-in-time build meanwhile)",
            PREBUILT_MODULE,
        )
        return None
    if cuda_wanted() and not module.with_cuda():
        logger.info("Prebuilt %s has no CUDA kernels; building one that has", PREBUILT_MODULE)
        return None
    return module


def load() -> ModuleType | None:
    """The extension module, or None when it cannot be had here (the reason is in ``state().error``)."""
    if _state.tried:
        return _state.module
    _state.tried = True
    if os.environ.get("STVSR_DCN_BUILD", "1") == "0":
        _state.error = "disabled by STVSR_DCN_BUILD=0"
        return None
    module = _import_prebuilt()
    try:
        module = module or build()
    except Exception as exc:  # noqa: BLE001 - compiler missing or failing, no ninja, ...: fall back, once
        _state.error = describe_build_failure(f"{type(exc).__name__}: {exc}")
        logger.warning("%s; falling back to another DCN backend", _state.error)
        return None
    _state.module = module
    _state.location = getattr(module, "__file__", "") or ""
    register_ops()
    return module


def state() -> ExtensionState:
    return _state


def supports(device: torch.device) -> bool:
    module = load()
    if module is None:
        return False
    return device.type == "cpu" or (device.type == "cuda" and module.with_cuda())


# --- The kernels as operators -------------------------------------------------------------------
#
# With torch >= 2.4 the kernels are registered with the dispatcher (``torch.ops.stvsr.*``), each with a
# fake implementation (output shapes for tracing) and its backward, so that ``torch.compile`` traces
# them without a graph break and ``torch.library.opcheck`` can test them. On older torch they run
# through ``torch.autograd.Function`` (eager only). Either way the pybind module does the work; the
# unneeded gradients of a backward come back as 0-element tensors (an op cannot return None).

_CONV = "stvsr::deform_conv2d"
_CONV_SCHEMA = (
    "(Tensor input, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups) -> Tensor"
)
_CONV_BACKWARD = "stvsr::deform_conv2d_backward"
_CONV_BACKWARD_SCHEMA = (
    "(Tensor grad_output, Tensor input, Tensor offset, Tensor mask, Tensor weight, int[2] stride, "
    "int[2] padding, int[2] dilation, int groups, bool need_input, bool need_offset_mask, bool need_weight, "
    "bool need_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_SAMPLE = "stvsr::deform_sample"
_SAMPLE_SCHEMA = (
    "(Tensor input, Tensor offset, Tensor mask, int[2] kernel_size, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups) -> Tensor"
)
_SAMPLE_BACKWARD = "stvsr::deform_sample_backward"
_SAMPLE_BACKWARD_SCHEMA = (
    "(Tensor grad_samples, Tensor input, Tensor offset, Tensor mask, int[2] kernel_size, int[2] stride, "
    "int[2] padding, int[2] dilation, int groups, bool need_input, bool need_offset_mask) -> (Tensor, Tensor, Tensor)"
)
_ops_registered = False


def _or_empty(grads, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Undefined (None) gradients of the pybind module as 0-element tensors."""
    return tuple(like.new_empty(0) if g is None else g for g in grads)


def _or_none(grads, needed) -> tuple[torch.Tensor | None, ...]:
    return tuple(g if need else None for g, need in zip(grads, needed))


def _fake_grads(like: dict[str, torch.Tensor], needed: dict[str, bool]) -> tuple[torch.Tensor, ...]:
    empty = next(iter(like.values())).new_empty(0)
    return tuple(torch.empty_like(t) if needed[name] else empty for name, t in like.items())


def _conv(input, offset, mask, weight, bias, stride, padding, dilation, groups):
    return _state.module.forward(input, weight, bias, offset, mask, *stride, *padding, *dilation, groups)


def _conv_fake(input, offset, mask, weight, bias, stride, padding, dilation, groups):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def _conv_backward(grad_output, input, offset, mask, weight, stride, padding, dilation, groups, *needs):
    need_input, need_offset_mask, need_weight, need_bias = needs
    grads = _state.module.backward(
        grad_output, input, weight, offset, mask, *stride, *padding, *dilation, groups,
        need_input, need_offset_mask, need_weight, need_bias,
    )  # fmt: skip
    return _or_empty(grads, input)


def _conv_backward_fake(grad_output, input, offset, mask, weight, stride, padding, dilation, groups, *needs):
    need_input, need_offset_mask, need_weight, need_bias = needs
    like = {"input": input, "offset": offset, "mask": mask, "weight": weight, "bias": weight.new_empty(weight.shape[0])}
    wanted = dict(zip(like, (need_input, need_offset_mask, need_offset_mask, need_weight, need_bias)))
    return _fake_grads(like, wanted)


def _conv_setup(ctx, inputs, output) -> None:
    input, offset, mask, weight, bias, stride, padding, dilation, groups = inputs
    ctx.params = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, offset, mask, weight)


def _conv_autograd(ctx, grad_output):
    input, offset, mask, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    needs = (need[0], need[1] or need[2], need[3], ctx.has_bias and need[4])
    grads = torch.ops.stvsr.deform_conv2d_backward(
        grad_output.contiguous(), input, offset, mask, weight, *ctx.params, *needs
    )
    return (*_or_none(grads, need[:5]), None, None, None, None)


def _sample(input, offset, mask, kernel_size, stride, padding, dilation, groups):
    return _state.module.sample(input, offset, mask, *kernel_size, *stride, *padding, *dilation, groups)


def _sample_fake(input, offset, mask, kernel_size, stride, padding, dilation, groups):
    taps = kernel_size[0] * kernel_size[1]
    return input.new_empty((input.shape[0], input.shape[1], taps, offset.shape[2] * offset.shape[3]))


def _sample_backward(grad_samples, input, offset, mask, kernel_size, stride, padding, dilation, groups, *needs):
    grads = _state.module.sample_backward(
        grad_samples, input, offset, mask, *kernel_size, *stride, *padding, *dilation, groups, *needs
    )
    return _or_empty(grads, input)


def _sample_backward_fake(grad_samples, input, offset, mask, kernel_size, stride, padding, dilation, groups, *needs):
    need_input, need_offset_mask = needs
    like = {"input": input, "offset": offset, "mask": mask}
    return _fake_grads(like, dict(zip(like, (need_input, need_offset_mask, need_offset_mask))))


def _sample_setup(ctx, inputs, output) -> None:
    input, offset, mask, *params = inputs
    ctx.params = tuple(params)
    ctx.save_for_backward(input, offset, mask)


def _sample_autograd(ctx, grad_samples):
    input, offset, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    grads = torch.ops.stvsr.deform_sample_backward(
        grad_samples.contiguous(), input, offset, mask, *ctx.params, need[0], need[1] or need[2]
    )
    return (*_or_none(grads, need[:3]), None, None, None, None, None)


def register_ops() -> bool:
    """Registers the ``torch.ops.stvsr`` operators once per process; False where torch is older than 2.4."""
    global _ops_registered
    if _ops_registered:
        return True
    if not hasattr(torch.library, "custom_op"):
        return False
    for name, schema, impl, fake in (
        (_CONV, _CONV_SCHEMA, _conv, _conv_fake),
        (_CONV_BACKWARD, _CONV_BACKWARD_SCHEMA, _conv_backward, _conv_backward_fake),
        (_SAMPLE, _SAMPLE_SCHEMA, _sample, _sample_fake),
        (_SAMPLE_BACKWARD, _SAMPLE_BACKWARD_SCHEMA, _sample_backward, _sample_backward_fake),
    ):
        op = torch.library.custom_op(name, impl, mutates_args=(), schema=schema)
        op.register_fake(fake)
    torch.library.register_autograd(_CONV, _conv_autograd, setup_context=_conv_setup)
    torch.library.register_autograd(_SAMPLE, _sample_autograd, setup_context=_sample_setup)
    _ops_registered = True
    return True


def deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """The compiled modulated deformable convolution (contiguous tensors of one dtype, checked by the caller)."""
    if _ops_registered:
        return torch.ops.stvsr.deform_conv2d(input, offset, mask, weight, bias, stride, padding, dilation, groups)
    return DeformConvFunction.apply(input, offset, mask, weight, bias, stride, padding, dilation, groups)


def deform_sample(input, offset, mask, kernel_size, stride, padding, dilation, groups) -> torch.Tensor:
    """The compiled mask-modulated deformable sampling, (B, C, kh*kw, Ho*Wo)."""
    if _ops_registered:
        return torch.ops.stvsr.deform_sample(input, offset, mask, kernel_size, stride, padding, dilation, groups)
    return DeformSampleFunction.apply(input, offset, mask, kernel_size, stride, padding, dilation, groups)


class DeformConvFunction(torch.autograd.Function):
    """torch < 2.4: the modulated deformable convolution as an autograd function (a graph break under compile)."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, groups):
        _conv_setup(ctx, (input, offset, mask, weight, bias, stride, padding, dilation, groups), None)
        return _conv(input, offset, mask, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, offset, mask, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        needs = (need[0], need[1] or need[2], need[3], ctx.has_bias and need[4])
        grads = _conv_backward(grad_output.contiguous(), input, offset, mask, weight, *ctx.params, *needs)
        return (*_or_none(grads, need[:5]), None, None, None, None)


class DeformSampleFunction(torch.autograd.Function):
    """torch < 2.4: the mask-modulated deformable sampling as an autograd function."""

    @staticmethod
    def forward(ctx, input, offset, mask, kernel_size, stride, padding, dilation, groups):
        _sample_setup(ctx, (input, offset, mask, kernel_size, stride, padding, dilation, groups), None)
        return _sample(input, offset, mask, kernel_size, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_samples):
        input, offset, mask = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = _sample_backward(
            grad_samples.contiguous(), input, offset, mask, *ctx.params, need[0], need[1] or need[2]
        )
        return (*_or_none(grads, need[:3]), None, None, None, None, None)
