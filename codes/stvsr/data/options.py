"""Dataset options: the ``datasets.<phase>`` blocks of the YAML schema.

Each registered dataset class declares its keys in ``OPTIONS`` (a :mod:`stvsr.schema` schema); every block may
also hold :data:`LOADER_OPTIONS` (they configure the DataLoader or name the set, not the dataset) and ``mode``
(the registered name). :func:`dataset_schema` is the whole schema of a class: the training options check every
block with it before anything is built, and the dataset checks its own options with it again when it is
constructed directly (:func:`resolve_options`), so both report the same problems the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stvsr.schema import Key, OptionsError, Schema, check

from .io import DataError

NONE = type(None)
PATH = Key((str, NONE), path=True)  # an optional file or folder

LOADER_OPTIONS: dict[str, Key] = {
    "name": Key((str, NONE), help="the set's name in logs and reports"),
    "use_shuffle": Key(bool, True),
    "n_workers": Key(int, 0, minimum=0, help="DataLoader worker processes"),
    "batch_size": Key(int, 1, minimum=1, help="the total over all processes"),
    "dist": Key(bool, False),
}


class DatasetOptionsError(OptionsError, DataError):
    """A problem with a dataset's options (an :class:`OptionsError` and a :class:`DataError`)."""


def dataset_schema(cls: type) -> dict[str, Any]:
    """Every key a ``datasets.<phase>`` block of dataset class ``cls`` may hold."""
    return {"mode": Key(str, cls.__name__), **LOADER_OPTIONS, **cls.OPTIONS}


def resolve_options(opt: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """``opt`` checked against :func:`dataset_schema` of ``cls``, defaults filled in; one
    :class:`DatasetOptionsError` listing every problem otherwise."""
    if not isinstance(opt, Mapping):
        raise DatasetOptionsError(f"{where} options must be a mapping (a YAML block), got {type(opt).__name__}")
    problems: list[str] = []
    out = check(opt, dataset_schema(cls), where, problems)
    if problems:
        raise DatasetOptionsError(problems=problems)
    return out


__all__ = ["LOADER_OPTIONS", "PATH", "DatasetOptionsError", "Schema", "dataset_schema", "resolve_options"]
