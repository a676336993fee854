"""Compiles the kernel sources against the headers of other torch releases (not part of CI: wheels are large).

    python DCNv2_latest/compile_against.py 2.4.1 2.8.0 2.11.0            # g++, clang++ (if present), nvcc
    python DCNv2_latest/compile_against.py 2.1.2 --compilers g++ nvcc --cache /tmp/torch_wheels

For each version the torch wheel for this Python is fetched once (``pip download --no-deps``) into the
cache (``~/.cache/stvsr/torch_wheels`` by default), only its ``torch/include`` tree is unpacked, and
every translation unit is compiled with ``-c`` (no linking, so the installed torch does not matter):
``dcn.cpp`` without and with ``-DWITH_CUDA``, ``cpu/dcn_cpu.cpp``, and ``cuda/dcn_cuda.cu`` with nvcc. The C++
standard is the one that release's ``torch.utils.cpp_extension`` uses. Prints a table; exit status 1 when
anything failed (the first error of each failure is shown, the full output is in the cache folder).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
DEFAULT_CACHE = Path.home() / ".cache" / "stvsr" / "torch_wheels"
# The flags torch.utils.cpp_extension gives nvcc (half/bfloat16 operators off, relaxed constexpr).
NVCC_FLAGS = (
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
)  # fmt: skip
# The one CMake-generated header that CPU-only wheels lack; CUDA wheels ship it.
CUDA_MACROS = Path("c10") / "cuda" / "impl" / "cuda_cmake_macros.h"


def fetch_wheel(version: str, cache: Path) -> Path:
    """The cached torch wheel of ``version`` for this Python, downloaded (without dependencies) when missing."""
    found = sorted(cache.glob(f"torch-{version}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading torch=={version} (no dependencies) into {cache} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(cache),
             f"torch=={version}"],
            check=True,
        )  # fmt: skip
        found = sorted(cache.glob(f"torch-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip downloaded no torch-{version} wheel into {cache}")
    return found[0]


def unpack_headers(wheel: Path, dest: Path) -> Path:
    """``torch/include`` and ``torch/utils/cpp_extension.py`` of the wheel under ``dest`` (once)."""
    marker = dest / ".unpacked"
    if not marker.exists():
        with zipfile.ZipFile(wheel) as archive:
            members = [
                n for n in archive.namelist() if n.startswith("torch/include/") or n == "torch/utils/cpp_extension.py"
            ]
            archive.extractall(dest, members)
        stub = dest / "torch" / "include" / CUDA_MACROS
        if not stub.exists():
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        marker.touch()
    return dest / "torch"


def cxx_standard(torch_dir: Path) -> str:
    """The -std= that this release's cpp_extension passes (c++17 up to 2.9, c++20 later)."""
    text = (torch_dir / "utils" / "cpp_extension.py").read_text()
    found = re.findall(r"-std=c\+\+(\d\d)", text)
    return f"c++{max(found) if found else '17'}"


def units(torch_dir: Path, compilers: list[str]) -> list[tuple[str, list[str]]]:
    """(label, command) of every compile of this release."""
    include = torch_dir / "include"
    includes = ["-isystem", str(include), "-isystem", str(include / "torch" / "csrc" / "api" / "include"),
                "-isystem", sysconfig.get_paths()["include"]]  # fmt: skip
    std = cxx_standard(torch_dir)
    common = [*includes, f"-std={std}", "-DTORCH_EXTENSION_NAME=stvsr_dcn_check", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    jobs = []
    for cxx in (c for c in compilers if c != "nvcc"):
        flags = [cxx, "-c", "-O1", "-fPIC", "-fopenmp", *common]
        jobs.append((f"{cxx} dcn.cpp", [*flags, str(SRC / "dcn.cpp")]))
        jobs.append((f"{cxx} dcn.cpp -DWITH_CUDA", [*flags, "-DWITH_CUDA", str(SRC / "dcn.cpp")]))
        jobs.append((f"{cxx} cpu/dcn_cpu.cpp", [*flags, str(SRC / "cpu" / "dcn_cpu.cpp")]))
    if "nvcc" in compilers:
        nvcc = ["nvcc", "-c", "-O1", *NVCC_FLAGS, *common, "-gencode", "arch=compute_80,code=sm_80"]
        jobs.append(("nvcc cuda/dcn_cuda.cu", [*nvcc, str(SRC / "cuda" / "dcn_cuda.cu")]))
    return jobs


def first_error(output: str) -> str:
    for line in output.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line.strip()[:300]
    return (output.strip().splitlines() or ["(no output)"])[-1][:300]


def compile_release(version: str, cache: Path, compilers: list[str]) -> list[tuple[str, str, str]]:
    """Rows (unit, 'ok' | 'FAILED', first error) for one torch release."""
    torch_dir = unpack_headers(fetch_wheel(version, cache), cache / f"torch-{version}")
    out_dir = cache / f"torch-{version}" / "objects"
    out_dir.mkdir(exist_ok=True)
    rows = []
    for i, (label, command) in enumerate(units(torch_dir, compilers)):
        print(f"torch {version}: {label} ({cxx_standard(torch_dir)}) ...", flush=True)
        result = subprocess.run([*command, "-o", str(out_dir / f"{i}.o")], check=False, capture_output=True, text=True)
        log = out_dir / f"{i}.log"
        log.write_text(" ".join(command) + "\n\n" + result.stdout + result.stderr)
        ok = result.returncode == 0
        rows.append((label, "ok" if ok else "FAILED", "" if ok else f"{first_error(result.stderr)} ({log})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="torch releases, e.g. 2.4.1 2.8.0 2.11.0")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    parser.add_argument(
        "--compilers", nargs="+", default=["g++", "clang++", "nvcc"], help="compilers to try (missing ones skipped)"
    )
    args = parser.parse_args(argv)
    compilers = [c for c in args.compilers if shutil.which(c)]
    for missing in sorted(set(args.compilers) - set(compilers)):
        print(f"{missing}: not on PATH, skipped")
    table = []
    for version in args.versions:
        table += [(version, *row) for row in compile_release(version, args.cache, compilers)]
    print("\n| torch | unit | result |\n|---|---|---|")
    for version, label, verdict, error in table:
        print(f"| {version} | {label} | {verdict}{': ' + error if error else ''} |")
    return 0 if all(verdict == "ok" for _, _, verdict, _ in table) else 1


if __name__ == "__main__":
    sys.exit(main())
