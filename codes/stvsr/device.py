"""The default device: the first CUDA GPU when there is one, else the CPU."""

from __future__ import annotations

import torch


def default_device() -> str:
    """``'cuda'`` when PyTorch sees a CUDA GPU, else ``'cpu'`` (what ``device: auto`` and a missing
    ``--device`` mean)."""
    return "cuda" if torch.cuda.is_available() else "cpu"
