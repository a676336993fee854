"""Shared random crop and flips for frame stacks (one draw applied to every frame, LR and GT alike).

Random numbers come from Python's ``random`` module, as in the official code: PyTorch seeds it per
DataLoader worker, so workers draw different crops, and ``random.seed`` makes a run repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from .io import DataError


@dataclass(frozen=True)
class Crop:
    """An LR window (top, left, size) and the scale that maps it to the GT window."""

    top: int
    left: int
    size: int
    scale: int

    def lq(self, img: np.ndarray) -> np.ndarray:
        return img[self.top : self.top + self.size, self.left : self.left + self.size]

    def gt(self, img: np.ndarray) -> np.ndarray:
        s = self.scale
        return img[s * self.top : s * (self.top + self.size), s * self.left : s * (self.left + self.size)]


def random_crop(lq_shape: tuple[int, ...], lq_size: int, scale: int, where: str) -> Crop:
    """A uniformly random ``lq_size`` square inside an LR frame of ``lq_shape`` (H, W, ...)."""
    h, w = lq_shape[:2]
    if lq_size > h or lq_size > w:
        raise DataError(f"{where}: LR frame is {w}x{h} (W x H), smaller than LQ_size {lq_size}: lower LQ_size/GT_size")
    return Crop(random.randint(0, h - lq_size), random.randint(0, w - lq_size), lq_size, scale)


@dataclass(frozen=True)
class Flips:
    """Horizontal flip, then vertical flip, then H<->W transpose (the official ``augment`` order)."""

    hflip: bool = False
    vflip: bool = False
    transpose: bool = False

    @classmethod
    def draw(cls, use_flip: bool, use_rot: bool) -> Flips:
        hflip = use_flip and random.random() < 0.5
        vflip = use_rot and random.random() < 0.5
        transpose = use_rot and random.random() < 0.5
        return cls(hflip, vflip, transpose)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Apply to an (H, W, C) or (T, H, W, C) array (returns a view)."""
        h_axis = img.ndim - 3
        if self.hflip:
            img = np.flip(img, axis=h_axis + 1)
        if self.vflip:
            img = np.flip(img, axis=h_axis)
        if self.transpose:
            img = np.swapaxes(img, h_axis, h_axis + 1)
        return img


def to_tensor(frames: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 RGB in [0, 1], exactly ``float32(x) / 255`` as the official code.

    The conversion runs in NumPy on purpose: a float conversion in PyTorch starts its intra-op thread pool,
    which on a small, busy CPU costs far more than the work (and DataLoader workers run single-threaded).
    """
    if bgr:
        frames = frames[..., ::-1]
    chw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).astype(np.float32)
    chw /= np.float32(255.0)
    return torch.from_numpy(chw)
