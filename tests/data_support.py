"""Helpers for the data tests: the real data in ``../shared/data`` (skip with the reason when absent)
and tiny synthetic Vimeo trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stvsr.data.degrade import bi_downscale
from stvsr.data.io import write_image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path inside ../shared/data; skips the test, saying why, when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (see shared/data/README.md); this test needs it")
    return path


def make_vimeo_tree(
    root: Path, clips: list[str], height: int = 32, width: int = 48, frames: int = 7, seed: int = 0
) -> tuple[Path, Path]:
    """Random GT frames ``root/gt/<clip>/im<n>.png`` and their BI x4 LR under ``root/lr``."""
    rng = np.random.default_rng(seed)
    for clip in clips:
        base = rng.integers(0, 256, size=(height, width, 3)).astype(np.float64)
        for n in range(1, frames + 1):
            frame = np.clip(base + rng.normal(0, 20, size=base.shape), 0, 255).astype(np.uint8)
            write_image(root / "gt" / clip / f"im{n}.png", frame)
            write_image(root / "lr" / clip / f"im{n}.png", bi_downscale(frame, 4))
    return root / "gt", root / "lr"


def to_uint8(frames) -> np.ndarray:
    """(T, 3, H, W) float tensor in [0, 1] -> (T, H, W, 3) uint8 (exact for values that came from uint8)."""
    return np.rint(frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def synthetic_clips(root: Path, lengths: dict[str, int], size: tuple[int, int]) -> tuple[Path, Path]:
    """Clip folders root/GT/<clip>/000.png.. (a noisy texture moving 1 px per frame) and their BI x4 LR in root/LR."""
    rng = np.random.default_rng(0)
    for clip, n in lengths.items():
        base = rng.integers(0, 256, (*size, 3)).astype(np.float64)
        for t in range(n):
            frame = np.clip(np.roll(base, t, 1) + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)
            write_image(root / "GT" / clip / f"{t:03d}.png", frame)
            write_image(root / "LR" / clip / f"{t:03d}.png", bi_downscale(frame))
    return root / "GT", root / "LR"
