"""Model architectures, found by name in ``stvsr.registry.ARCHS`` and built by :func:`build_arch`.

Importing this package registers every architecture below, explicitly (no folder scanning). Each
architecture class declares:

- ``size_divisor``: H and W of the low-resolution input must be multiples of it (the evaluator pads);
- ``upscale``: the spatial factor (4);
- ``config_keys``: the ``network_G`` keys it accepts, mapped to constructor arguments;
  ``config_required``: the keys the official code requires; ``config_ignored``: keys of the official
  configs that have no effect (accepted, so that existing config files work).

and, where it applies: ``supports_time_factor`` with ``forward_times(lqs, k)`` (frames at t = j/k between each
pair: ``stvsr-infer --time-factor``; SAFA, TMNet), ``takes_time`` with ``forward(lqs, t)`` (t (B, n) time
stamps, which the trainer passes when samples carry ``time``; TMNet, bicubic).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from stvsr.registry import ARCHS, did_you_mean

# registers bicubic, LunaTokis (zsm), Net (MSITF), RSTT, SAFA, STARnet, STTrans2 (stdan) and TMNet
from . import bicubic, msitf, rstt, safa, starnet, stdan, tmnet, zsm  # noqa: F401
from .msitf import MSITF
from .rstt import RSTT
from .safa import SAFA
from .starnet import STARnet
from .stdan import STTrans2
from .tmnet import TMNet
from .zsm import LunaTokis

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "MSITF",
    "RSTT",
    "SAFA",
    "LunaTokis",
    "STARnet",
    "STTrans2",
    "TMNet",
    "arch_arguments",
    "build_arch",
    "count_parameters",
]


def _check_value(arch: str, key: str, value: Any, default: Any) -> None:
    """Reject values of the wrong kind (a typo in YAML should not become a silently odd model)."""
    where = f"network_G.{key} = {value!r} ({arch})"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = True
    if not ok:
        kind = type(default).__name__ if not isinstance(default, (tuple, list)) else "list of int"
        raise ValueError(f"{where}: expected a non-negative {kind}")


def arch_arguments(network_G: Mapping[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The architecture class named by a ``network_G`` options dict and its constructor arguments.

    ``which_model_G`` names the architecture (official name or alias, e.g. ``LunaTokis`` / ``zsm``,
    ``STTrans2`` / ``stdan``); the other keys are that architecture's ``config_keys``. An unknown key, a
    missing required key or a value of the wrong kind raises a ``ValueError`` that names the key (and the
    nearest valid one for a typo). Builds nothing: the options validator calls it too.
    """
    if not isinstance(network_G, Mapping):
        raise TypeError(f"network_G must be a mapping of options, got {type(network_G).__name__}")
    options = dict(network_G)
    name = options.pop("which_model_G", None)
    if name is None:
        raise ValueError(f"network_G.which_model_G is required: one of {', '.join(ARCHS)}")
    try:
        cls = ARCHS.get(str(name))
    except KeyError as exc:
        raise ValueError(f"network_G.which_model_G: {exc.args[0]}") from None
    arch = cls.__name__
    accepted = {**cls.config_keys, **dict.fromkeys(cls.config_ignored)}
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"network_G.{key}: unknown key for {arch}.{did_you_mean(key, accepted)} "
                f"Valid keys: which_model_G, {', '.join(accepted)}"
            )
    missing = [key for key in cls.config_required if key not in options]
    if missing:
        raise ValueError(
            f"network_G for {arch} is missing required key(s): {', '.join(missing)} "
            f"(official settings: see specs/models.md and options/train/*.yml)"
        )
    params = inspect.signature(cls).parameters
    kwargs = {}
    for key, value in options.items():
        if key in cls.config_ignored:
            continue
        argument = cls.config_keys[key]
        _check_value(arch, key, value, params[argument].default)
        kwargs[argument] = value
    ignored = [key for key in options if key in cls.config_ignored]
    if ignored:
        logger.debug("network_G keys with no effect on %s: %s", arch, ", ".join(ignored))
    return cls, kwargs


def build_arch(network_G: Mapping[str, Any]) -> nn.Module:
    """Build the model described by a ``network_G`` options dict (checked by :func:`arch_arguments`)."""
    cls, kwargs = arch_arguments(network_G)
    try:
        model = cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"network_G: {exc}") from None
    logger.info("Built %s (%s parameters)", cls.__name__, f"{count_parameters(model):,}")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
