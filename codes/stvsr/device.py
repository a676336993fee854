"""The device a command runs on: the default (the first CUDA GPU when there is one, else the CPU), and a
user's choice checked before any work (``--device``, ``device:`` in a YAML)."""

from __future__ import annotations

import torch

from stvsr.errors import StvsrError


class DeviceError(StvsrError, ValueError):
    """A device that does not exist here; the message says which devices do."""


def default_device() -> str:
    """``'cuda'`` when PyTorch sees a CUDA GPU, else ``'cpu'`` (what ``device: auto`` and a missing
    ``--device`` mean)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _available() -> str:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "cpu" + (f", cuda (cuda:0 .. cuda:{n - 1})" if n else "; no CUDA device is visible")


def resolve_device(name: str | torch.device | None, what: str = "--device") -> torch.device:
    """``name`` (None or ``'auto'``: :func:`default_device`) as a ``torch.device`` that exists on this machine;
    one :class:`DeviceError` naming ``what`` otherwise (a typo, CUDA absent, an index past the last GPU)."""
    if name is None or name == "auto":
        name = default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"{what} {name!r}: not a device ({exc}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"{what} {name}: stvsr runs on cpu or cuda; available here: {_available()}")
    if not torch.cuda.is_available():
        raise DeviceError(f"{what} {name}: CUDA is not available on this machine ({_available()}): use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"{what} {name}: there is no such GPU; available here: {_available()}")
    return device
