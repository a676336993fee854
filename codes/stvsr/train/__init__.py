"""Training: losses (``LOSSES``), optimisers (``OPTIMIZERS``), schedulers (``SCHEDULERS``) and the trainer.

Importing this package registers the losses, optimisers and schedulers (explicit imports, no folder scanning).
"""

from __future__ import annotations

from .losses import CharbonnierLoss, L1Loss, L2Loss, WeightedSum, build_loss, build_losses
from .optimizers import build_optimizer
from .perceptual import VGGFeatureLoss
from .schedulers import CosineAnnealingLR_Restart, MultiStepLR_Restart, build_scheduler

__all__ = [
    "CharbonnierLoss",
    "CosineAnnealingLR_Restart",
    "L1Loss",
    "L2Loss",
    "MultiStepLR_Restart",
    "VGGFeatureLoss",
    "WeightedSum",
    "build_loss",
    "build_losses",
    "build_optimizer",
    "build_scheduler",
]
