"""The spatial scale: one fact per run.

A model declares the factors it makes (:class:`SpaceScale`: one fixed factor, or any factor in a range with the
range it was trained on); the options, the datasets, the evaluation protocol and a checkpoint may each name one.
:func:`reconcile_scale` is the one place where a run (training, evaluation, inference) makes them agree when it is
built: every source that names a factor must name the same one, and the model must make it; otherwise one
error lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from stvsr.errors import StvsrError


class ScaleMismatchError(StvsrError, ValueError):
    """The sources of a run's scale disagree, or the model cannot make it; the message lists them."""


@dataclass(frozen=True)
class SpaceScale:
    """The spatial factors a model makes: ``fixed`` (x4 for every model with a fixed factor), or, for a continuous
    model, any factor in [``low``, ``high``], ``trained`` on a sub-range (factors outside it are out of
    distribution, and evaluated as such)."""

    fixed: float | None = 4
    low: float | None = None
    high: float | None = None
    trained: tuple[float, float] | None = None

    @classmethod
    def continuous(cls, low: float, high: float, trained: tuple[float, float]) -> SpaceScale:
        return cls(fixed=None, low=low, high=high, trained=trained)

    @property
    def default(self) -> float:
        """The factor of a run that names none: the fixed one, or x4 (the field's setting) for a continuous model."""
        return self.fixed if self.fixed is not None else 4

    def supports(self, factor: float) -> bool:
        if self.fixed is not None:
            return factor == self.fixed
        return self.low <= factor <= self.high

    def describe(self) -> str:
        if self.fixed is not None:
            return f"x{self.fixed:g} only"
        return f"any factor in [{self.low:g}, {self.high:g}] (trained on [{self.trained[0]:g}, {self.trained[1]:g}])"


def reconcile_scale(space: SpaceScale, model_name: str, **named: float | None) -> float:
    """The one factor of a run: ``named`` maps each source (an option key such as ``scale`` or
    ``datasets.train.scale``, ``protocol.scale``, ``checkpoint``) to the factor it names, or None where it names
    none. :class:`ScaleMismatchError` when they differ or ``model_name`` cannot make it."""
    given = {source: value for source, value in named.items() if value is not None}
    factors = set(given.values())
    if len(factors) <= 1:
        factor = factors.pop() if factors else space.default
        if space.supports(factor):
            return factor
    listed = ", ".join(f"{source} x{value:g}" for source, value in given.items())
    raise ScaleMismatchError(
        f"the spatial scale of this run is not one: {listed}; {model_name} makes {space.describe()}. Give every "
        "source the same factor, one the model makes"
    )
