"""Which deformable-convolution backend runs: what is available here, and the choice for a tensor.

``STVSR_DCN_BACKEND=auto|ext|torch|torchvision`` (default ``auto``) forces one. ``auto`` takes the
compiled extension when it supports the tensor's device, then torchvision where it imports and
works, then the pure PyTorch implementation, which always works.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from . import ext

logger = logging.getLogger(__name__)

BACKENDS = ("ext", "torch", "torchvision")
_ENV = "STVSR_DCN_BACKEND"
_announced: set[tuple[str, str]] = set()
_resolved: dict[tuple[str, str], str] = {}  # (request, device type) -> backend chosen
_resolved_for: object = None  # the extension state that _resolved was chosen with


@functools.cache
def torchvision_status(device_type: str = "cpu") -> str:
    """'' when ``torchvision.ops.deform_conv2d`` imports and runs on ``device_type``, else why not."""
    try:
        from torchvision.ops import deform_conv2d  # optional: probed here, imported only when it works
    except Exception as exc:  # noqa: BLE001 - CUDA-only wheels raise all sorts of errors on CPU-only machines
        return f"torchvision unavailable: {type(exc).__name__}: {exc}"
    try:
        x = torch.zeros(1, 1, 3, 3, device=device_type)
        deform_conv2d(
            x,
            torch.zeros(1, 18, 3, 3, device=device_type),
            torch.zeros(1, 1, 3, 3, device=device_type),
            padding=1,
            mask=torch.ones(1, 9, 3, 3, device=device_type),
        )
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        return f"torchvision.ops.deform_conv2d fails on {device_type}: {type(exc).__name__}: {exc}"
    return ""


def why_unavailable(backend: str, device: torch.device | str = "cpu") -> str:
    """'' when ``backend`` works for tensors on ``device`` here, else the reason."""
    device = torch.device(device)
    if backend == "torch":
        return ""
    if backend == "torchvision":
        return torchvision_status(device.type)
    if backend == "ext":
        if ext.load() is None:
            return f"the DCN extension is not available: {ext.state().error}"
        if not ext.supports(device):
            return f"the DCN extension was built without {device.type.upper()} kernels"
        return ""
    raise ValueError(f"Unknown DCN backend '{backend}'; choose one of {', '.join(BACKENDS)} or 'auto'")


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that work here for tensors on ``device``."""
    return [name for name in BACKENDS if not why_unavailable(name, device)]


def requested_backend() -> str:
    name = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"{_ENV}={name!r} is not a DCN backend; use auto, {', '.join(BACKENDS)}")
    return name


def is_compiling() -> bool:
    """Whether torch.compile is tracing the caller (always False on torch 2.1 and 2.2)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling is not None and is_compiling())


def resolve(device: torch.device, backend: str | None = None) -> str:
    """The backend to run for a tensor on ``device``: ``backend`` if given, else the environment's choice.

    The answer is remembered per (request, device type): the first call may build the extension and
    probe torchvision; later calls, including those ``torch.compile`` traces, only read a dict.
    """
    request = (backend or requested_backend()).lower()
    key = (request, device.type)
    global _resolved_for
    if _resolved_for is not ext.state():  # the extension was reloaded (tests do): choose again
        _resolved.clear()
        _resolved_for = ext.state()
    if key not in _resolved:
        _resolved[key] = _choose(request, device)
    return _resolved[key]


def _choose(name: str, device: torch.device) -> str:
    if name == "auto":
        name = next(n for n in ("ext", "torchvision", "torch") if not why_unavailable(n, device))
    else:
        reason = why_unavailable(name, device)
        if reason:
            raise RuntimeError(f"DCN backend '{name}' was requested but cannot run on {device.type}: {reason}")
    # Not while torch.compile traces (a logging call breaks the graph): the next eager call announces it.
    if (name, device.type) not in _announced and not is_compiling():
        _announced.add((name, device.type))
        logger.info("Deformable convolution backend on %s: %s", device.type, name)
    return name
