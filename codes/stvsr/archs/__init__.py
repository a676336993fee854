"""Model architectures, found by name in ``stvsr.registry.ARCHS`` and built by :func:`build_arch`.

Every architecture is one file here: a :class:`~stvsr.archs.base.StvsrArch` subclass that declares its facts
(size multiple, upscale, official settings, network_G keys, training objective; see that class) and registers
itself with ``@ARCHS.register(name, aliases=...)``. Importing this package imports each of those files once,
explicitly (no folder scanning): adding a model is its file plus its name in the import line below. Nothing
else lists the models; the registry does (``ARCHS``, ``ARCHS.describe()`` for help texts).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from stvsr.registry import ARCHS, did_you_mean

# the architectures: each file registers its class in ARCHS
from . import bicubic, msitf, rstt, safa, starnet, stdan, tmnet, zsm  # noqa: F401
from .base import StvsrArch

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "StvsrArch",
    "arch_arguments",
    "build_arch",
    "count_parameters",
    "official_network",
    "time_factor_models",
]


def time_factor_models() -> list[str]:
    """The registered architectures with ``forward_times`` (any time factor k >= 2), for help texts and errors."""
    return [name for name in ARCHS if getattr(ARCHS.get(name), "supports_time_factor", False)]


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


def arch_arguments(network_G: Mapping[str, Any]) -> tuple[type[StvsrArch], dict[str, Any]]:
    """The architecture class named by a ``network_G`` options dict and its constructor arguments.

    ``which_model_G`` names the architecture (official name or alias, e.g. ``LunaTokis`` / ``zsm``,
    ``STTrans2`` / ``stdan``); the other keys are that architecture's :meth:`~StvsrArch.config_keys`. An unknown key, a
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
    config_keys = cls.config_keys()
    accepted = {**config_keys, **dict.fromkeys(cls.config_ignored)}
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
            f"(official settings: docs/models.md and options/train/*.yml)"
        )
    params = inspect.signature(cls).parameters
    kwargs = {}
    for key, value in options.items():
        if key in cls.config_ignored:
            continue
        argument = config_keys[key]
        _check_value(arch, key, value, params[argument].default)
        kwargs[argument] = value
    ignored = [key for key in options if key in cls.config_ignored]
    if ignored:
        logger.debug("network_G keys with no effect on %s: %s", arch, ", ".join(ignored))
    return cls, kwargs


def build_arch(network_G: Mapping[str, Any]) -> StvsrArch:
    """Build the model described by a ``network_G`` options dict (checked by :func:`arch_arguments`)."""
    cls, kwargs = arch_arguments(network_G)
    try:
        model = cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"network_G: {exc}") from None
    logger.info("Built %s (%s parameters)", cls.__name__, f"{count_parameters(model):,}")
    return model


def official_network(name: str) -> dict[str, Any]:
    """The ``network_G`` of the official settings of the architecture ``name`` (or alias): what ``--model name``
    builds (:attr:`StvsrArch.official_settings`)."""
    return {"which_model_G": name, **copy.deepcopy(ARCHS.get(name).official_settings)}


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
