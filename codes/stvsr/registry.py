"""One small registry class; every model, dataset, loss, optimiser and scheduler is found by name in one place."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the candidate closest to ``name`` (case-insensitive second try), or ''."""
    candidates = list(candidates)
    same = [c for c in candidates if c.lower() == str(name).lower()]  # 'dataroot_gt' -> 'dataroot_GT'
    close = same or difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.5)
    if not close:  # 'Front_RBs' -> 'front_RBs'
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[m] for m in difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)]
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry:
    """Maps names (and aliases) to classes or factory functions.

    Registration happens where an object is defined, with the decorator; nothing is discovered by
    scanning folders. A lookup of an unknown name raises a ``KeyError`` naming the closest match.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or obj.__name__
            for label in (key, *aliases):
                if label in self._items or label in self._aliases:
                    raise KeyError(f"{self.kind} '{label}' is already registered")
            self._items[key] = obj
            for alias in aliases:
                self._aliases[alias] = key
            return obj

        return decorator

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = sorted([*self._items, *self._aliases])
        hint = did_you_mean(name, known)
        raise KeyError(f"Unknown {self.kind} '{name}'.{hint} Known: {', '.join(known) or '(none)'}")

    def get(self, name: str) -> Callable:
        return self._items[self.canonical(name)]

    def aliases(self, name: str) -> list[str]:
        """The aliases of the registered name ``name`` (e.g. 'zsm' for 'LunaTokis'), sorted."""
        return sorted(alias for alias, target in self._aliases.items() if target == name)

    def describe(self) -> str:
        """Every registered name with its aliases: 'LunaTokis (zsm), Net (MSITF, msitf), ...' (for --help)."""
        parts = []
        for name in self:
            aliases = self.aliases(name)
            parts.append(f"{name} ({', '.join(aliases)})" if aliases else name)
        return ", ".join(parts)

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


ARCHS = Registry("architecture")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
