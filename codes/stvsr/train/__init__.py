"""Training: losses (``LOSSES``), schedulers (``SCHEDULERS``) and the trainer.

Importing this package registers the losses and schedulers (explicit imports, no folder scanning).
"""

from __future__ import annotations

from .losses import CharbonnierLoss, L1Loss, L2Loss, build_loss
from .schedulers import CosineAnnealingLR_Restart, MultiStepLR_Restart, build_scheduler

__all__ = [
    "CharbonnierLoss",
    "CosineAnnealingLR_Restart",
    "L1Loss",
    "L2Loss",
    "MultiStepLR_Restart",
    "build_loss",
    "build_scheduler",
]
