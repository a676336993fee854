"""Losses, registered in :data:`stvsr.registry.LOSSES`, and the training objective built from ``train.losses``.

``cb`` is the Zooming Slow-Mo Charbonnier loss (docs/training.md): the **sum** over every element of
``sqrt((x - y)^2 + eps)`` with ``eps = 1e-6`` under the square root; ``reduction='mean'`` is an option.
``l1`` and ``l2`` default to the mean, as ``nn.L1Loss`` / ``nn.MSELoss`` in the official code. ``vgg`` is the
VGG19 perceptual loss (:mod:`stvsr.train.perceptual`).

``train.losses`` is a list of weighted registry entries, e.g.::

    losses:
      - {type: cb, weight: 1.0}                        # keys: type, weight and the loss's own OPTIONS
      - {type: vgg, weight: 0.1, weights_path: experiments/pretrained_models/vgg19-dcbb9e9d.pth, layer: relu5_4}

Each loss class declares ``kind`` (``pixel``: compares the output with the GT as they are; ``feature``: in a
feature space) and its keyword arguments as an ``OPTIONS`` schema (:mod:`stvsr.schema`). :func:`build_losses`
gives the sum of the weighted pixel entries and that of the feature entries (or None), the ``pixel`` and
``feature`` of an architecture's ``training_objective(lqs, gt, pixel, feature)``: ``pixel(out, gt) + feature(out,
gt)`` by default; a pair model applies them to its own outputs (STARnet: pixel terms on normalised tensors).

The flat keys of the official configs (``pixel_criterion``, ``pixel_weight``, ``pixel_reduction``,
``feature_criterion``, ``feature_weight``, ``feature_weights_path``) still load: :func:`losses_from_flat_keys`
translates them into the list (the only place that knows them); the objective is the same, to the bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from stvsr.registry import LOSSES
from stvsr.schema import Key

REDUCTIONS = ("sum", "mean")


def _check_reduction(reduction: str, name: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    return reduction


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    return x.sum() if reduction == "sum" else x.mean()


@LOSSES.register("cb", aliases=("CharbonnierLoss", "charbonnier"))
class CharbonnierLoss(nn.Module):
    """sum (or mean) of sqrt((x - y)^2 + eps), eps under the square root (official: 1e-6, sum)."""

    kind: ClassVar[str] = "pixel"
    OPTIONS: ClassVar[dict[str, Key]] = {
        "eps": Key(float, 1e-6, help="under the square root"),
        "reduction": Key(str, "sum", choices=REDUCTIONS),
    }

    def __init__(self, eps: float = 1e-6, reduction: str = "sum") -> None:
        super().__init__()
        self.eps = eps
        self.reduction = _check_reduction(reduction, "CharbonnierLoss")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        return _reduce(torch.sqrt(diff * diff + self.eps), self.reduction)


@LOSSES.register("l1", aliases=("L1Loss",))
class L1Loss(nn.Module):
    kind: ClassVar[str] = "pixel"
    OPTIONS: ClassVar[dict[str, Key]] = {"reduction": Key(str, "mean", choices=REDUCTIONS)}

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction, "L1Loss")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _reduce((x - y).abs(), self.reduction)


@LOSSES.register("l2", aliases=("MSELoss", "L2Loss"))
class L2Loss(nn.Module):
    kind: ClassVar[str] = "pixel"
    OPTIONS: ClassVar[dict[str, Key]] = {"reduction": Key(str, "mean", choices=REDUCTIONS)}

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction, "L2Loss")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        return _reduce(diff * diff, self.reduction)


def build_loss(criterion: str, reduction: str | None = None) -> nn.Module:
    """The loss named ``criterion`` ('cb', 'l1', 'l2'); ``reduction`` None keeps the loss's own default."""
    try:
        cls = LOSSES.get(criterion)
    except KeyError as exc:
        raise ValueError(f"train.pixel_criterion: {exc.args[0]}") from None
    return cls() if reduction is None else cls(reduction=reduction)


# ------------------------------------------------------------------------------------------ train.losses
ENTRY: dict[str, Key] = {
    "type": Key(str, required=True, help="a registered loss: cb, l1, l2, vgg"),
    "weight": Key(float, 1.0),
}
DEFAULT_LOSSES = ({"type": "cb", "weight": 1.0, "reduction": "sum"},)  # the Zooming Slow-Mo objective
FLAT_KEYS = (
    "pixel_criterion",
    "pixel_weight",
    "pixel_reduction",
    "feature_criterion",
    "feature_weight",
    "feature_weights_path",
)


def entry_schema(cls: type) -> dict[str, Key]:
    """The keys of a ``train.losses`` entry of loss class ``cls``: type, weight and its OPTIONS."""
    return {**ENTRY, **cls.OPTIONS}


def losses_from_flat_keys(flat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``train.losses`` list for the flat keys of the official schema (those of :data:`FLAT_KEYS` given):
    ``pixel_weight * pixel_criterion`` (reduction ``pixel_reduction``, default sum) and, with
    ``feature_criterion: vgg19``, ``feature_weight * vgg`` from ``feature_weights_path``."""
    losses = [
        {
            "type": flat.get("pixel_criterion", "cb"),
            "weight": flat.get("pixel_weight", 1.0),
            "reduction": flat.get("pixel_reduction", "sum"),
        }
    ]
    if flat.get("feature_criterion") is not None:
        feature = {"type": flat["feature_criterion"], "weight": flat.get("feature_weight", 1.0)}
        if flat.get("feature_weights_path") is not None:
            feature["weights_path"] = flat["feature_weights_path"]
        losses.append(feature)
    return losses


class WeightedSum(nn.Module):
    """``sum_i weight_i * loss_i(x, y)``, in list order (one term: ``weight * loss(x, y)``)."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one loss")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList([loss for _, loss in terms])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, loss in zip(self.weights, self.losses):
            term = weight * loss(x, y)
            total = term if total is None else total + term
        return total

    @property
    def sums(self) -> bool:
        """True when a term reduces by summing (its value grows with the batch)."""
        return any(getattr(loss, "reduction", None) == "sum" for loss in self.losses)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def build_losses(entries: Sequence[Mapping[str, Any]]) -> tuple[WeightedSum, WeightedSum | None]:
    """The pixel and the feature objective (None without feature entries) of validated ``train.losses``
    entries."""
    groups: dict[str, list[tuple[float, nn.Module]]] = {"pixel": [], "feature": []}
    for i, entry in enumerate(entries):
        try:
            cls = LOSSES.get(str(entry["type"]))
        except KeyError as exc:
            raise ValueError(f"train.losses[{i}].type: {exc.args[0]}") from None
        loss = cls(**{key: entry[key] for key in cls.OPTIONS if key in entry})
        groups[cls.kind].append((entry.get("weight", 1.0), loss))
    if not groups["pixel"]:
        raise ValueError("train.losses: needs at least one pixel loss (cb, l1 or l2)")
    return WeightedSum(groups["pixel"]), WeightedSum(groups["feature"]) if groups["feature"] else None
