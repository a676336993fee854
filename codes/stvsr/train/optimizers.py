"""Optimisers, registered in :data:`stvsr.registry.OPTIMIZERS` by their ``train.optim`` names.

Every one takes the parameter groups, ``lr``, ``weight_decay`` (``train.weight_decay_G``) and ``betas``
(``train.beta1``, ``train.beta2``): ``Adam`` (Zooming Slow-Mo, STDAN, TMNet, RSTT), ``AdamW`` and ``Adamax``
(STARnet). A new one is a registered class or function with that signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from stvsr.registry import OPTIMIZERS

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS.register("Adam")(torch.optim.Adam)
OPTIMIZERS.register("AdamW")(torch.optim.AdamW)
OPTIMIZERS.register("Adamax")(torch.optim.Adamax)


def build_optimizer(
    name: str, groups: Sequence[dict[str, Any]], lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    """The optimiser registered as ``name`` over the parameter ``groups``."""
    try:
        cls = OPTIMIZERS.get(name)
    except KeyError as exc:
        raise ValueError(f"train.optim: {exc.args[0]}") from None
    return cls(groups, lr=lr, weight_decay=weight_decay, betas=betas)
