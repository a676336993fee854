"""Pixel losses, registered in :data:`stvsr.registry.LOSSES` by the official ``pixel_criterion`` names.

``cb`` is the Zooming Slow-Mo Charbonnier loss (``specs/models.md`` 2.7): the **sum** over every element of
``sqrt((x - y)^2 + eps)`` with ``eps = 1e-6`` under the square root; ``reduction='mean'`` is an option.
``l1`` and ``l2`` default to the mean, as ``nn.L1Loss`` / ``nn.MSELoss`` in the official code.
"""

from __future__ import annotations

import torch
from torch import nn

from stvsr.registry import LOSSES

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

    def __init__(self, eps: float = 1e-6, reduction: str = "sum") -> None:
        super().__init__()
        self.eps = eps
        self.reduction = _check_reduction(reduction, "CharbonnierLoss")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        return _reduce(torch.sqrt(diff * diff + self.eps), self.reduction)


@LOSSES.register("l1", aliases=("L1Loss",))
class L1Loss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction, "L1Loss")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _reduce((x - y).abs(), self.reduction)


@LOSSES.register("l2", aliases=("MSELoss", "L2Loss"))
class L2Loss(nn.Module):
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
