"""ImageNet RGB statistics: the input normalisation of ImageNet-trained networks (VGG19 of the perceptual loss)
and of the models that adopted it (STARnet's inputs and targets, SAFA's ``MeanShift``)."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (..., 3, H, W) -> ImageNet-normalised (torchvision ``Normalize`` semantics)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`; no clamp."""
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return x * std + mean
