"""Builds the deformable-convolution extension ahead of time as the importable module ``stvsr_dcn_ext``.

Run through ``bash DCNv2_latest/make.sh`` (``pip install --no-build-isolation DCNv2_latest``): the build
needs the torch it will run with. ``stvsr.ops.ext`` imports this module before trying a just-in-time
build. Compiler flags, sources and the module name come from ``codes/stvsr/ops/ext.py`` so that both
builds are the same; CUDA kernels are included when a GPU and the CUDA toolkit are present.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = Path(__file__).resolve().parent
EXT_PY = HERE.parent / "codes" / "stvsr" / "ops" / "ext.py"


def load_ext_settings() -> ModuleType:
    """codes/stvsr/ops/ext.py loaded by path (it imports only torch), the one source of the build settings."""
    if not EXT_PY.is_file():
        raise FileNotFoundError(f"{EXT_PY} not found: build from a complete stvsr checkout")
    spec = importlib.util.spec_from_file_location("_stvsr_ext_settings", EXT_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def extension(settings: ModuleType) -> CppExtension:
    src = HERE / "src"
    with_cuda = settings.cuda_wanted()
    names = settings._CPU_SOURCES + (settings._CUDA_SOURCES if with_cuda else ())
    kwargs = {
        "name": settings.PREBUILT_MODULE,
        "sources": [str((src / name).relative_to(HERE)) for name in names],
        "include_dirs": [str(src)],
        "extra_link_args": list(settings.LD_FLAGS),
    }
    defines = settings.defines(with_cuda)
    if not with_cuda:
        return CppExtension(extra_compile_args={"cxx": [*settings.CXX_FLAGS, *defines]}, **kwargs)
    flags = {"cxx": [*settings.CXX_FLAGS, *defines], "nvcc": ["-O3", *defines]}
    return CUDAExtension(extra_compile_args=flags, **kwargs)


def main() -> None:
    settings = load_ext_settings()
    setup(
        name=settings.PREBUILT_MODULE,
        version="0.1.0",
        description="Prebuilt deformable-convolution kernels (C++ CPU, CUDA) for stvsr",
        python_requires=">=3.10",
        ext_modules=[extension(settings)],
        cmdclass={"build_ext": BuildExtension},
    )


if __name__ == "__main__":
    main()
