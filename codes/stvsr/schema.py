"""Declared option schemas: one mechanism for every YAML the package reads (training, test, inference) and for
the dataset blocks inside them.

A schema maps each key to a :class:`Key` (types, default, required, choices, help, whether it is a path) or to a
nested schema (a YAML block). :func:`validate` checks a mapping completely (unknown keys with the nearest valid
one, missing required keys, wrong types, values outside the choices) and raises ONE :class:`OptionsError`
listing every problem with its key path (``datasets.train.dataroot_GT: required option is missing``); it
returns a new dict with the defaults filled in and the values coerced (``'4e-4'`` -> 4e-4 for a float key,
``5e3`` -> 5000 for an int key). Nothing is read from or written to disk here, so callers check everything
before they touch any file or folder.

The one rule for relative paths (:func:`resolve_path`): a relative path written in a YAML file is resolved
against that file's folder if it exists there, else against the repository root (where outputs go). Never
against the current directory; a relative path that exists only there is an error saying so.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from stvsr.errors import StvsrError
from stvsr.registry import did_you_mean


class OptionsError(StvsrError, ValueError):
    """A mistake in the options (file, key or value); ``problems`` lists every one found, each starting with
    the key path; the message is all of them."""

    def __init__(self, message: str = "", problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [message]
        super().__init__(message or _summary(self.problems))

    def within(self, prefix: str) -> OptionsError:
        """The same problems, the message prefixed (e.g. with the file name)."""
        return type(self)(f"{prefix}{self}", self.problems)


def _summary(problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


Types = type | tuple[type, ...] | None  # None: any value


@dataclass(frozen=True)
class Key:
    """One option: accepted ``types`` (None: anything; ``type(None)`` in them: null allowed), its ``default``
    (deep-copied), whether it is ``required``, the allowed ``choices`` (compared case-insensitively for strings
    when ``casefold``; the canonical spelling is kept), a ``help`` line, and ``path``: a file or folder that the
    one path rule resolves (``path="list"``: a bare file name, without '/', is a name the dataset looks up
    inside its data root and is left as it is), and ``minimum``: the smallest number allowed (a zero batch size
    or checkpoint interval is found here, not as a crash later)."""

    types: Types = None
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    help: str = ""
    path: bool | str = False
    casefold: bool = False
    minimum: float | None = None


@dataclass(frozen=True)
class Blocks:
    """A mapping of blocks with names of the user's choice (``datasets: {test: {...}}``), each checked against
    ``schema``; null when absent."""

    schema: Schema
    help: str = ""


Schema = Mapping[str, Union[Key, Blocks, "Schema"]]

TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "mapping"}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(TYPE_NAMES.get(t, "null" if t is type(None) else t.__name__) for t in types)


def _coerce(value: Any, types: Types) -> Any:
    """``value`` as one of ``types``; ValueError with the expected types otherwise."""
    if types is None:
        return value
    types = types if isinstance(types, tuple) else (types,)
    if value is None and type(None) in types:
        return None
    if float in types and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):  # PyYAML reads '4e-4' as a string
            try:
                return float(value)
            except ValueError:
                pass
    if int in types and isinstance(value, float) and value.is_integer():  # `!!float 5e3`
        return int(value)
    if str in types and isinstance(value, os.PathLike):
        return os.fspath(value)
    concrete = tuple(t for t in types if t is not type(None))
    if isinstance(value, concrete) and not (isinstance(value, bool) and bool not in types):
        return value
    raise ValueError(f"expected {_type_name(types)}, got {value!r} ({type(value).__name__})")


def _choose(value: Any, spec: Key) -> Any:
    if spec.choices is None:
        return value
    for choice in spec.choices:
        if value == choice or (spec.casefold and isinstance(value, str) and str(choice).upper() == value.upper()):
            return choice
    names = ", ".join("null" if c is None else repr(c) for c in spec.choices)
    raise ValueError(f"={value!r} is not one of {names}.{did_you_mean(value, [str(c) for c in spec.choices])}")


def _at_least(value: Any, spec: Key) -> Any:
    if spec.minimum is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < spec.minimum:
            raise ValueError(f"={value!r} must be >= {spec.minimum:g}")
    return value


def with_flags(section: Mapping[str, Any] | None, args: Any, keys: Sequence[str]) -> dict[str, Any]:
    """A YAML ``section`` (or None) as a new dict with the command-line flags ``keys`` that were given (not None)
    written over it: the one merge rule of ``codes/test.py``, ``codes/test_vimeo.py`` and ``stvsr-infer`` (a
    flag wins over the YAML, the YAML over the default)."""
    merged = dict(section or {})
    merged.update((key, getattr(args, key)) for key in keys if getattr(args, key, None) is not None)
    return merged


def folder_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be one folder's name inside another (an experiment's or a run's), or None when it can:
    not empty, not ``.`` or ``..``, no path separator, no leading dot (hidden) or surrounding spaces."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty folder name"
    if name in (".", ".."):
        return f"{name!r} is not a folder name of its own"
    if "/" in name or "\\" in name or "\0" in name or (os.altsep and os.altsep in name):
        suggestion = "".join("_" if ch in "/\\\0" else ch for ch in name)
        return f"{name!r} holds a path separator: give one folder name (e.g. {suggestion!r})"
    if name.startswith("."):
        return f"{name!r} starts with a dot (a hidden folder): give a visible name"
    if name != name.strip():
        return f"{name!r} starts or ends with a space"
    return None


def check(raw: Any, schema: Schema, where: str, problems: list[str]) -> dict[str, Any]:
    """``raw`` checked against ``schema`` with the defaults filled in; every problem is appended to
    ``problems`` as ``'<where>.<key>: ...'`` (what can be checked goes on after a problem)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where or 'options'}: expected a mapping (a YAML block), got {raw!r}")
        return check({}, schema, where, [])  # the defaults, so that the caller's other checks can go on
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in schema:
            problems.append(
                f"{prefix}{key}: unknown option '{key}'.{did_you_mean(key, list(schema))} "
                f"Valid here: {', '.join(schema)}"
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, Blocks):
            out[key] = _check_blocks(raw.get(key), spec, f"{prefix}{key}", problems)
        elif not isinstance(spec, Key):
            out[key] = check(raw.get(key), spec, f"{prefix}{key}", problems)
        elif key not in raw:
            if spec.required:
                problems.append(f"{prefix}{key}: required option is missing" + (f" ({spec.help})" if spec.help else ""))
            out[key] = copy.deepcopy(spec.default)
        else:
            try:
                out[key] = _at_least(_choose(_coerce(raw[key], spec.types), spec), spec)
            except ValueError as exc:
                sep = "" if str(exc).startswith("=") else ": "
                problems.append(f"{prefix}{key}{sep}{exc}")
                out[key] = raw[key]
    return out


def _check_blocks(raw: Any, spec: Blocks, where: str, problems: list[str]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping of named blocks, got {raw!r}")
        return None
    return {name: check(block, spec.schema, f"{where}.{name}", problems) for name, block in raw.items()}


def validate(raw: Any, schema: Schema, where: str = "") -> dict[str, Any]:
    """:func:`check`, raising one :class:`OptionsError` that lists every problem."""
    problems: list[str] = []
    out = check(raw, schema, where, problems)
    if problems:
        raise OptionsError(problems=problems)
    return out


def path_keys(schema: Schema) -> list[str]:
    """The keys of ``schema`` (top level) declared as paths."""
    return [key for key, spec in schema.items() if isinstance(spec, Key) and spec.path]


def resolve_path(value: str | os.PathLike | None, base: Path | None, root: Path, key: str = "") -> str | None:
    """``value`` made absolute by the one rule: relative to ``base`` (the YAML file's folder) if it exists
    there, else to ``root`` (the repository root). A relative path that exists only under the current
    directory is an :class:`OptionsError` (``key`` names the option)."""
    if value is None:
        return None
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute():
        return str(p)
    for candidate in ([base / p] if base is not None else []) + [root / p]:
        if candidate.exists():
            return str(candidate.resolve())
    if p.exists() and Path.cwd().resolve() not in {root.resolve(), *([base.resolve()] if base else [])}:
        raise OptionsError(
            f"{key or value}: {value} exists only relative to the current directory; relative paths in a YAML "
            f"file are resolved against the file's folder ({base}), then the repository root ({root}): make it "
            f"relative to one of those, or absolute"
        )
    return str((root / p).resolve())


def repo_root() -> Path:
    """The repository root (``STVSR_ROOT`` overrides): the folder holding ``codes/``."""
    env = os.environ.get("STVSR_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def resolve_paths(section: dict[str, Any], schema: Schema, base: Path | None, root: Path, where: str) -> None:
    """Resolve, in place, the path keys of ``section`` (a validated block of ``schema``, nested blocks
    included) by the one rule."""
    prefix = f"{where}." if where else ""
    for key, spec in schema.items():
        value = section.get(key)
        if isinstance(spec, Blocks):
            for name, block in (value or {}).items():
                resolve_paths(block, spec.schema, base, root, f"{prefix}{key}.{name}")
        elif not isinstance(spec, Key):
            if isinstance(value, dict):
                resolve_paths(value, spec, base, root, f"{prefix}{key}")
        elif spec.path and isinstance(value, str) and not (spec.path == "list" and "/" not in value):
            section[key] = resolve_path(value, base, root, f"{prefix}{key}")


def load_yaml(file: str | os.PathLike, schema: Schema) -> dict[str, Any]:
    """A YAML file checked against ``schema`` (defaults filled in) with its paths resolved by the one rule
    (the file's folder, then the repository root); :class:`OptionsError` naming the file otherwise."""
    file = Path(file)
    try:
        opt = validate(read_mapping(file), schema)
        resolve_paths(opt, schema, file.resolve().parent, repo_root(), "")
    except OptionsError as exc:
        raise exc.within(f"{file}: ") from None
    return opt


def read_mapping(file: Path) -> dict[str, Any]:
    """An existing YAML file whose top level is a mapping, as a dict; OptionsError naming the file otherwise."""
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OptionsError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise OptionsError(f"{file}: expected a mapping at the top level")
    return raw
