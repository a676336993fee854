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
CXX_FLAGS = ("-O3", "-march=native", "-fopenmp")
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
    from torch.utils.cpp_extension import CUDA_HOME

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
    from torch.utils.cpp_extension import load

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
    except Exception as exc:  # noqa: BLE001 - compiler missing or failing, no ninja, ...: fall back, loudly once
        _state.error = f"{type(exc).__name__}: {exc}"
        logger.warning("The DCN extension could not be built; falling back to another backend.\n%s", _state.error)
        return None
    _state.module = module
    _state.location = getattr(module, "__file__", "") or ""
    return module


def state() -> ExtensionState:
    return _state


def supports(device: torch.device) -> bool:
    module = load()
    if module is None:
        return False
    return device.type == "cpu" or (device.type == "cuda" and module.with_cuda())


class DeformConvFunction(torch.autograd.Function):
    """Modulated deformable convolution through the compiled kernels."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, groups):
        params = (*stride, *padding, *dilation, groups)
        ctx.params = params
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, offset, mask, weight)
        return _state.module.forward(input, weight, bias, offset, mask, *params)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, offset, mask, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_input, grad_offset, grad_mask, grad_weight, grad_bias = _state.module.backward(
            grad_output, input, weight, offset, mask, *ctx.params,
            need[0], need[1] or need[2], need[3], ctx.has_bias and need[4],
        )  # fmt: skip
        return grad_input, grad_offset, grad_mask, grad_weight, grad_bias, None, None, None, None


class DeformSampleFunction(torch.autograd.Function):
    """Mask-modulated deformable sampling (B, C, K, Ho*Wo) through the compiled kernels."""

    @staticmethod
    def forward(ctx, input, offset, mask, kernel_size, stride, padding, dilation, groups):
        params = (*kernel_size, *stride, *padding, *dilation, groups)
        ctx.params = params
        ctx.save_for_backward(input, offset, mask)
        return _state.module.sample(input, offset, mask, *params)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_samples):
        input, offset, mask = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_input, grad_offset, grad_mask = _state.module.sample_backward(
            grad_samples, input, offset, mask, *ctx.params, need[0], need[1] or need[2]
        )
        return grad_input, grad_offset, grad_mask, None, None, None, None, None
