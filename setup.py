"""Installs the package ``stvsr`` from ``codes/``.

Nothing here imports torch: the build environment needs only setuptools. The deformable-convolution
extension is compiled later, just in time, on first use (or ahead of time with
``bash DCNv2_latest/make.sh``). So that a non-editable install can still compile it, ``build_py``
copies the C++/CUDA sources of ``DCNv2_latest/src`` into the package as ``stvsr/ops/csrc``, the
first place ``stvsr.ops.ext.source_dir()`` looks.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DCN_SOURCE_DIR = ROOT / "DCNv2_latest" / "src"
DCN_SOURCE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")
DCN_PACKAGE_DIR = Path("stvsr") / "ops" / "csrc"  # relative to the build directory


def read_version() -> str:
    """``__version__`` of codes/stvsr/__init__.py, read as text (importing it would need its dependencies)."""
    init = ROOT / "codes" / "stvsr" / "__init__.py"
    match = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f'no __version__ = "..." line in {init}')
    return match.group(1)


def dcn_sources() -> list[Path]:
    """The extension's sources, relative to DCNv2_latest/src."""
    if not (DCN_SOURCE_DIR / "dcn.cpp").is_file():
        raise FileNotFoundError(f"{DCN_SOURCE_DIR / 'dcn.cpp'} is missing: install from a complete checkout")
    files = (p for p in DCN_SOURCE_DIR.rglob("*") if p.is_file() and p.suffix in DCN_SOURCE_SUFFIXES)
    return sorted(p.relative_to(DCN_SOURCE_DIR) for p in files)


class BuildPyWithDcnSources(build_py):
    """``build_py`` that also ships DCNv2_latest/src as stvsr/ops/csrc (not needed for editable installs,
    whose ``stvsr.ops.ext`` finds the sources in the checkout)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for relative in dcn_sources():
            target = Path(self.build_lib) / DCN_PACKAGE_DIR / relative
            self.mkpath(str(target.parent))
            shutil.copyfile(DCN_SOURCE_DIR / relative, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(Path(self.build_lib) / DCN_PACKAGE_DIR / rel) for rel in dcn_sources()]


setup(
    name="stvsr",
    version=read_version(),
    description="Space-time video super-resolution: Zooming Slow-Mo, STDAN, SAFA, MSITF, STARnet",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").is_file() else "",
    long_description_content_type="text/markdown",
    package_dir={"": "codes"},
    packages=find_packages(where="codes"),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy",
        "pyyaml",
        "tqdm",
        "ninja",
        "opencv-python-headless",
        "lmdb",
        "scikit-image",
        "av",
        "tensorboard",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "stvsr-doctor = stvsr.doctor:main",
            "stvsr-generate-lr = stvsr.data.make_lr:main",
            "stvsr-create-lmdb = stvsr.data.make_lmdb:main",
            "stvsr-make-demo-data = stvsr.data.demo:main",
            "stvsr-infer = stvsr.infer.cli:main",
        ]
    },
    cmdclass={"build_py": BuildPyWithDcnSources},
)
