"""Validation of dataset options (the ``datasets.<phase>`` blocks of the Zooming Slow-Mo YAML schema).

Each dataset declares its keys with defaults; an unknown key is an error naming the closest valid key,
a missing required key is an error, and nothing silently turns into None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stvsr.registry import did_you_mean

from .io import DataError

REQUIRED = object()  # marks a key without a default

# Keys of the official schema that configure the DataLoader or the logger, not the dataset.
LOADER_KEYS = {"name": None, "use_shuffle": True, "n_workers": 0, "batch_size": 1, "dist": False}


def resolve_options(opt: Mapping[str, Any], schema: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """``opt`` merged over ``schema``'s defaults; DataError for unknown or missing keys."""
    if not isinstance(opt, Mapping):
        raise DataError(f"{dataset} options must be a mapping (a YAML block), got {type(opt).__name__}")
    known = {**LOADER_KEYS, **schema}
    for key in opt:
        if key not in known:
            hint = did_you_mean(key, known)
            raise DataError(f"{dataset}: unknown option '{key}'.{hint} Valid: {', '.join(sorted(known))}")
    merged = {key: opt.get(key, default) for key, default in known.items()}
    missing = [key for key, value in merged.items() if value is REQUIRED]
    if missing:
        raise DataError(f"{dataset}: missing required option(s) {', '.join(missing)}")
    return merged


def check_choice(value: Any, choices: tuple, key: str, dataset: str) -> None:
    if value not in choices:
        raise DataError(f"{dataset}: option {key}={value!r} is not one of {', '.join(map(repr, choices))}")
