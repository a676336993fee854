"""Environment self-check: ``stvsr-doctor`` or ``python -m stvsr.doctor``.

Prints the Python and torch versions, the devices, the packages the data and video paths need (PyAV,
lmdb, OpenCV, each tried, and TensorBoard), which deformable-convolution backends work here (and why the
others do not), where the compiled extension came from, and runs a small parity check of every working
backend against the pure PyTorch one. Exit status 1 when a required package is missing or fails its try,
when a parity check fails, when ``STVSR_DCN_BACKEND`` names a backend that cannot run, or, with
``--strict``, when a device has no backend but the pure PyTorch one.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

import torch

import stvsr
from stvsr.ops import BACKENDS, deform_sample, ext, modulated_deform_conv2d
from stvsr.ops.backends import requested_backend, resolve, why_unavailable

TOLERANCE = 1e-4  # max abs error against the 'torch' backend, float32
REFERENCE = "torch"
_PARITY_SHAPE = {"batch": 2, "channels": 16, "groups": 4, "height": 12, "width": 10}


def devices() -> list[torch.device]:
    """CPU, and every CUDA device that is visible."""
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return found


def describe_environment() -> list[str]:
    lines = [
        f"stvsr {stvsr.__version__}",
        f"Python {platform.python_version()} ({sys.executable})",
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
    ]
    if torch.cuda.is_available():
        lines.append(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} device(s)")
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            lines.append(f"  cuda:{i} {torch.cuda.get_device_name(i)} (compute capability {major}.{minor})")
    else:
        built = f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
        lines.append(f"CUDA: not available ({built})")
    return lines


def _check_av() -> str:
    import av  # the checks import their package themselves: whether it imports is what they report

    ffmpeg = getattr(av, "ffmpeg_version_info", "") or ".".join(map(str, av.library_versions.get("libavcodec", ())))
    encoders = [name for name in ("libx264", "libvpx-vp9") if _has_encoder(av, name)]
    if not encoders:
        raise RuntimeError("no H.264 (libx264) or VP9 encoder: stvsr-infer cannot write video files")
    return f"{av.__version__} (FFmpeg {ffmpeg}), encoders: {', '.join(encoders)}"


def _has_encoder(av: Any, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 -- an encoder this FFmpeg build lacks
        return False
    return True


def _check_lmdb() -> str:
    import tempfile

    import lmdb

    with tempfile.TemporaryDirectory() as folder:
        env = lmdb.open(folder, map_size=2**20)
        try:
            with env.begin(write=True) as txn:
                txn.put(b"key", b"value")
            with env.begin() as txn:
                if txn.get(b"key") != b"value":
                    raise RuntimeError("a value written could not be read back")
        finally:
            env.close()
    return f"{lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))}), write and read: ok"


def _check_opencv() -> str:
    import cv2
    import numpy as np

    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    ok, buf = cv2.imencode(".png", img)
    if not ok or not np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), img):
        raise RuntimeError("a PNG written could not be read back unchanged")
    return f"{cv2.__version__}, PNG write and read: ok"


def _check_tensorboard() -> str:
    import tensorboard

    return tensorboard.__version__


# (label, check, required, what it is for)
PACKAGES = (
    ("PyAV", _check_av, True, "video files in and out (stvsr-infer)"),
    ("lmdb", _check_lmdb, True, "LMDB training data"),
    ("OpenCV", _check_opencv, True, "reading and writing frames"),
    ("TensorBoard", _check_tensorboard, False, "training curves (training runs without it)"),
)


def describe_packages() -> tuple[list[str], list[str]]:
    """One line per package the data, video and logging paths use; problems of the required ones."""
    lines, problems = ["Packages:"], []
    for label, check, required, purpose in PACKAGES:
        try:
            lines.append(f"  {label:<12} {check()}")
        except ImportError as exc:
            lines.append(f"  {label:<12} {'MISSING' if required else 'not installed'} ({exc}): needed for {purpose}")
            if required:
                problems.append(f"{label} is not installed (pip install -e . installs it)")
        except Exception as exc:  # noqa: BLE001 -- a package that imports but does not work is reported
            lines.append(f"  {label:<12} FAIL ({type(exc).__name__}: {exc}): needed for {purpose}")
            if required:
                problems.append(f"{label} does not work: {exc}")
    return lines, problems


def describe_request(device: torch.device) -> tuple[list[str], bool]:
    """The backend STVSR_DCN_BACKEND asks for and what it resolves to; ok is False when it cannot run."""
    raw = os.environ.get("STVSR_DCN_BACKEND", "")
    label = f"STVSR_DCN_BACKEND={raw}" if raw else "STVSR_DCN_BACKEND unset (auto)"
    try:
        name = requested_backend()
        chosen = resolve(device, name)
    except (ValueError, RuntimeError) as exc:
        return [f"Requested backend: {label} -> ERROR: {exc}"], False
    return [f"Requested backend: {label} -> {chosen} on {device.type}"], True


def describe_backends(devs: Sequence[torch.device]) -> list[str]:
    lines = ["DCN backends:"]
    for name in BACKENDS:
        for device in devs:
            reason = why_unavailable(name, device)
            lines.append(f"  {name:<12} {device!s:<7} {'works' if not reason else 'no: ' + reason}")
    return lines


def describe_extension() -> list[str]:
    ext.load()
    state = ext.state()
    if state.module is not None:
        kernels = "CPU and CUDA" if state.module.with_cuda() else "CPU"
        return [f"Extension: {kernels} kernels, loaded from {state.location}"]
    return [f"Extension: not available: {state.error}", f"  JIT build cache: {ext.cache_root()}"]


def _parity_inputs(device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    s = _PARITY_SHAPE
    gen = torch.Generator().manual_seed(seed)
    b, c, g, h, w = s["batch"], s["channels"], s["groups"], s["height"], s["width"]
    tensors = {
        "input": torch.randn(b, c, h, w, generator=gen),
        "offset": 2.0 * torch.randn(b, 2 * g * 9, h, w, generator=gen),
        "mask": torch.sigmoid(torch.randn(b, g * 9, h, w, generator=gen)),
        "weight": torch.randn(c, c, 3, 3, generator=gen) / (3.0 * c**0.5),
        "bias": torch.randn(c, generator=gen),
        "grad_out": torch.randn(b, c, h, w, generator=gen),
        "grad_samples": torch.randn(b, c, 9, h * w, generator=gen),
    }
    return {k: v.to(device) for k, v in tensors.items()}


def _run_backend(backend: str, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward and every gradient of the convolution and of the sampling op, by name."""
    groups = _PARITY_SHAPE["groups"]
    leaves = {k: t[k].clone().requires_grad_() for k in ("input", "offset", "mask", "weight", "bias")}
    out = modulated_deform_conv2d(*leaves.values(), 1, 1, 1, groups, backend=backend)
    out.backward(t["grad_out"])
    results = {"conv forward": out.detach(), **{f"conv grad {k}": v.grad for k, v in leaves.items()}}
    sample_leaves = {k: t[k].clone().requires_grad_() for k in ("input", "offset", "mask")}
    samples = deform_sample(*sample_leaves.values(), 3, 1, 1, 1, groups, backend=backend)
    samples.backward(t["grad_samples"])
    results["sample forward"] = samples.detach()
    results.update({f"sample grad {k}": v.grad for k, v in sample_leaves.items()})
    return results


def parity_errors(backend: str, device: torch.device) -> dict[str, float]:
    """Max abs difference of every output and gradient of ``backend`` from the 'torch' backend."""
    inputs = _parity_inputs(device)
    reference = _run_backend(REFERENCE, inputs)
    candidate = _run_backend(backend, inputs)
    return {k: (candidate[k] - reference[k]).abs().max().item() for k in reference}


def check_backend(backend: str, device: torch.device) -> tuple[list[str], bool]:
    """Report lines of one backend's parity check, and whether it passed (NaN fails)."""
    try:
        errors = parity_errors(backend, device)
    except Exception as exc:  # noqa: BLE001 -- a crashing backend is a failed check, reported
        return [f"  {backend} on {device}: FAIL ({type(exc).__name__}: {exc})"], False
    worst = max(errors, key=errors.get)
    passed = errors[worst] <= TOLERANCE
    verdict = "PASS" if passed else "FAIL"
    lines = [f"  {backend} on {device}: {verdict} (max abs error {errors[worst]:.2e} in {worst})"]
    return lines + [f"      {name:<20} {err:.2e}" for name, err in errors.items()], passed


def check_parity(devs: Sequence[torch.device]) -> tuple[list[str], bool]:
    s = _PARITY_SHAPE
    header = (
        f"Parity against '{REFERENCE}' (B={s['batch']}, C={s['channels']}, dg={s['groups']}, "
        f"{s['width']}x{s['height']} (W x H), 3x3, float32, forward and all gradients, tolerance {TOLERANCE:g}):"
    )
    lines, ok = [header], True
    for device in devs:
        for backend in (b for b in BACKENDS if b != REFERENCE and not why_unavailable(b, device)):
            backend_lines, passed = check_backend(backend, device)
            lines += backend_lines
            ok &= passed
    if len(lines) == 1:
        lines.append(f"  (no backend other than '{REFERENCE}' works here: nothing to compare)")
    return lines, ok


def only_reference_works(devs: Sequence[torch.device]) -> list[torch.device]:
    """The devices on which no backend but the pure PyTorch one works."""
    return [d for d in devs if all(why_unavailable(b, d) for b in BACKENDS if b != REFERENCE)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stvsr-doctor", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when a device has no deformable-convolution backend but the pure PyTorch one",
    )
    return parser.parse_args(argv)


def _print(lines: Sequence[str]) -> None:
    print("\n".join(lines), flush=True)  # flushed: the extension's build log goes to stderr in between


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # the backend choice is reported below, per device; the log line of each choice (the parity check's
    # reference runs included) would only add stray lines
    logging.getLogger("stvsr.ops.backends").setLevel(logging.WARNING)
    devs = devices()
    _print(describe_environment())
    package_lines, package_problems = describe_packages()
    _print(package_lines)
    request_lines, request_ok = describe_request(devs[0])
    _print(request_lines)
    _print(describe_backends(devs))
    _print(describe_extension())
    parity_lines, parity_ok = check_parity(devs)
    _print(parity_lines)
    problems = list(package_problems)
    if not request_ok:
        problems.append("STVSR_DCN_BACKEND names a backend that cannot run here")
    if not parity_ok:
        problems.append("a backend disagrees with the pure PyTorch reference")
    lacking = only_reference_works(devs)
    if args.strict and lacking:
        problems.append(f"--strict: only the pure PyTorch backend works on {', '.join(map(str, lacking))}")
    _print(["Result: " + ("OK" if not problems else "PROBLEMS: " + "; ".join(problems))])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
