"""Load official and framework checkpoints into a model; save weights atomically.

One loader for every format: a plain ``state_dict`` (the official ``xiang2020zooming.pth`` and
``STDAN_20220306.pth``), or one wrapped as ``{'params': ...}``, ``{'params_ema': ...}`` (BasicSR),
``{'state_dict': ...}`` (also ``'model'``/``'net'``/``'network'``), with or without the ``module.`` prefix
of DataParallel / DistributedDataParallel (and ``_orig_mod.`` of ``torch.compile``).
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stvsr.atomic import atomic_path
from stvsr.errors import StvsrError

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model", "net", "network")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED = 12  # names listed per category in a mismatch message


class CheckpointMismatchError(StvsrError, RuntimeError):
    """The checkpoint's keys or shapes do not match the model (one message lists every difference);
    ``report`` is the :class:`LoadReport` (missing, unexpected and mismatched keys)."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What :func:`load_official` found: where the weights were, and what did not match."""

    source: str
    wrapper_key: str | None
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def message(self, model_name: str = "model") -> str:
        where = f"{self.source}" + (f" ['{self.wrapper_key}']" if self.wrapper_key else "")
        lines = [f"Checkpoint {where} does not match {model_name}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}, in the model but not in the file): "
                         f"{_listing(self.missing)}")  # fmt: skip
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}, in the file but not in the model): "
                         f"{_listing(self.unexpected)}")  # fmt: skip
        if self.mismatched:
            shown = [f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            lines.append(f"  shape mismatches ({len(self.mismatched)}): {_listing(shown)}")
        lines.append("  Check that the options (which_model_G, nf, back_RBs, embed_dim, ...) match the checkpoint.")
        return "\n".join(lines)


class NonFiniteWeightsError(StvsrError, ValueError):
    """The checkpoint holds NaN or infinite weights (the run that wrote it diverged); ``keys`` names them."""

    def __init__(self, source: str, keys: list[str]) -> None:
        super().__init__(
            f"{source}: {len(keys)} weight tensor(s) hold NaN or infinite values ({_listing(keys)}): the run that "
            "wrote it diverged, and its outputs would be meaningless. Use an earlier checkpoint of that run."
        )
        self.keys = keys


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` when a floating tensor of ``state`` holds NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(source, bad)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, key: str | None = None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a loaded checkpoint and the wrapper key they were under (None for a plain one).

    ``key`` picks a wrapper explicitly (e.g. ``'params_ema'``); by default the first present of
    ``params``, ``params_ema``, ``state_dict``, ``model``, ``net``, ``network`` is used. Prefixes
    ``module.`` and ``_orig_mod.`` are stripped.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"a checkpoint must be a dict of tensors, got {type(obj).__name__}")
    wrapper = None
    if key is not None:
        if key not in obj:
            raise KeyError(f"checkpoint has no '{key}' entry; it has: {', '.join(map(str, obj))}")
        obj, wrapper = obj[key], key
    elif not _is_state_dict(obj):
        for candidate in WRAPPER_KEYS:
            if candidate in obj and isinstance(obj[candidate], Mapping):
                obj, wrapper = obj[candidate], candidate
                break
    if not _is_state_dict(obj):
        found = ", ".join(f"{k!s} ({type(v).__name__})" for k, v in list(obj.items())[:10]) if obj else "nothing"
        raise ValueError(
            f"no state_dict found in the checkpoint: expected a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS)}; found {found}"
        )
    state = {}
    for name, tensor in obj.items():
        for prefix in STRIPPED_PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix) :]
        state[name] = tensor
    return state, wrapper


def compare(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<dict>",
            wrapper_key: str | None = None) -> LoadReport:  # fmt: skip
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``model.state_dict()``."""
    own = model.state_dict()
    report = LoadReport(source=source, wrapper_key=wrapper_key)
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    return report


def load_official(
    model: nn.Module,
    path: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    key: str | None = None,
    weights_only: bool = True,
) -> LoadReport:
    """Load a checkpoint (a file or an already loaded dict) into ``model``.

    Args:
        model: the network; a ``DataParallel``/``DistributedDataParallel`` wrapper is unwrapped.
        path: a ``.pth`` file, or a dict as ``torch.load`` returns it.
        strict: raise :class:`CheckpointMismatchError` on any missing or unexpected key or shape mismatch
            (one message lists them all). With ``strict=False`` the matching tensors are loaded, the rest is
            logged as a warning.
        key: take the weights from this wrapper entry (e.g. ``'params_ema'``) instead of the default order.
            Weights that are not finite (NaN, inf) are refused (:class:`NonFiniteWeightsError`).
        weights_only: unpickle tensors and plain containers only (safe for untrusted files). Set False only
            for a trusted file that stores other Python objects.
    Returns:
        a :class:`LoadReport`.
    """
    net = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    if isinstance(path, Mapping):
        obj, source = path, "<dict>"
    else:
        source = str(path)
        if not Path(source).is_file():
            raise FileNotFoundError(f"checkpoint not found: {source}")
        try:
            obj = torch.load(source, map_location="cpu", weights_only=weights_only)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{source}: cannot be loaded with weights_only={weights_only} ({exc}). If the file comes from a "
                f"source you trust, load it with weights_only=False."
            ) from None
        except (RuntimeError, EOFError) as exc:
            raise ValueError(f"{source}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        state, wrapper = extract_state_dict(obj, key)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{source}: {exc.args[0]}") from None
    check_finite(state, source)
    report = compare(net, state, source, wrapper)
    name = type(net).__name__
    if not report.ok:
        if strict:
            raise CheckpointMismatchError(report.message(name), report)
        logger.warning("%s\n  Loading the %d matching tensors (strict=False).", report.message(name),
                       len(state) - len(report.unexpected) - len(report.mismatched))  # fmt: skip
    bad = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    net.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    logger.info("Loaded %s%s into %s (%d tensors)", source, f" ['{wrapper}']" if wrapper else "", name,
                len(state) - len(bad))  # fmt: skip
    return report


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``model``'s weights as a plain state_dict (the official format), atomically: a temporary file in
    the same folder, then a rename, so that an interrupted save never leaves a truncated checkpoint."""
    net = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    target = Path(path)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(target) as tmp:
        torch.save(state, tmp)


class NotACheckpointError(StvsrError, ValueError):
    """A file given as a checkpoint that ``torch.load`` cannot read (empty, truncated, text, ...); the message
    says which and why."""


TEXT_BYTES = 256  # read to tell a text file from a damaged binary one


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is still text
        if exc.start < len(head) - 3:
            return False
    return True


def _zip_is_whole(path: Path) -> bool:
    """Whether the zip archive at ``path`` (torch's file format) is complete: every member there, CRCs right."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def probe_checkpoint(path: str | os.PathLike) -> Any:
    """Load ``path`` once as ``torch.load`` does (``weights_only``; memory-mapped for the zip format, so cheap)
    and return what it holds; None for a file that only loads with ``weights_only=False`` (it pickles other
    Python objects: :func:`load_official` says how to load a trusted one). A file that is not a PyTorch
    checkpoint at all raises :class:`NotACheckpointError`: ``checkpoint X: not a PyTorch checkpoint (empty file
    / truncated or damaged / a text file / ...)``."""
    path = Path(path)

    def refuse(reason: str) -> NotACheckpointError:
        return NotACheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({reason})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(TEXT_BYTES)
    except OSError as exc:
        raise NotACheckpointError(f"checkpoint {path}: cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise refuse("an empty file: 0 bytes")
    is_zip = head.startswith(b"PK\x03\x04")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if is_zip and _zip_is_whole(path):  # a whole torch file that pickles other objects: load_official explains
            return None
        error: Exception = exc
    except Exception as exc:  # noqa: BLE001 -- every way torch.load fails is classified below
        error = exc
    if _looks_like_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:40] if head.strip() else ""
        raise refuse(f"a text file{f', starting {first!r}' if first else ''}")
    if is_zip or isinstance(error, EOFError) or (head.startswith(b"\x80") and isinstance(error, RuntimeError)):
        raise refuse(f"truncated or damaged: {size:,} bytes that end before its data does")
    if isinstance(error, pickle.UnpicklingError):
        raise refuse(f"{size:,} bytes that are not what torch.save writes")
    detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
    raise refuse(f"torch.load cannot read it: {detail}")


def saved_network(path: str | os.PathLike) -> dict | None:
    """The ``network_G`` a checkpoint of the trainer carries (``network_G``; ``options.network_G`` in older ones),
    so that the checkpoint alone rebuilds its model; None for other checkpoints (official weights, files that
    load only with ``weights_only=False``). A file that is not a checkpoint raises :class:`NotACheckpointError`
    (:func:`probe_checkpoint`)."""
    obj = probe_checkpoint(path)
    if not isinstance(obj, dict):
        return None
    network = obj.get("network_G")
    if network is None and isinstance(obj.get("options"), dict):
        network = obj["options"].get("network_G")
    return dict(network) if isinstance(network, dict) and network.get("which_model_G") else None
