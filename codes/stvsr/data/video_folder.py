"""``VideoFolder``: test clips (Vid4, SPMC, any folder of clips) with GT and LR frames.

Layout: ``dataroot_GT`` holds one folder per clip (any depth: 'calendar', '00001/0001'), or the frames
themselves (one clip named '.'). Frames are taken in natural order ('Frame 2' before 'Frame 10'), whatever
their names. LR frames come from ``dataroot_LQ`` (same clip folders, same number of frames, each GT/scale)
or are made from GT on the fly with ``degradation`` (BI or BD).

Two ways to read:

- ``dataset.clip(i)`` returns a :class:`Clip` that reads single frames on demand, so an evaluator holds only
  the frames of the current window (long clips never sit in memory whole);
- ``dataset[i]`` returns one item as a sample dict. Without ``window`` an item is a whole clip
  (``LQs`` and ``GT`` hold every frame); with ``window: 7`` an item is a 7-frame window of the full protocol
  (docs/evaluation.md: starts 0, 6, 12, ... and a final window ending on the last frame),
  ``LQs`` its frames 0, 2, 4, 6 and ``GT`` all 7, plus ``'start'`` (the first frame's index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import DATASETS
from ..runner import window_starts
from .augment import to_tensor
from .degrade import degrade, modcrop
from .io import DataError, image_shape, list_clips, list_images, read_image, require_dir
from .options import NONE, PATH, Key, resolve_options


@dataclass
class Clip:
    """The frames of one clip, read one at a time; uint8 RGB (H, W, 3), GT mod-cropped to the scale."""

    name: str
    gt_paths: list[Path]
    lq_paths: list[Path] | None
    scale: int
    degradation: str = "BI"

    def __len__(self) -> int:
        return len(self.gt_paths)

    @property
    def frame_names(self) -> list[str]:
        return [p.name for p in self.gt_paths]

    def gt(self, t: int) -> np.ndarray:
        return modcrop(read_image(self.gt_paths[t]), self.scale)

    def lq(self, t: int) -> np.ndarray:
        if self.lq_paths is None:
            return degrade(self.gt(t), self.degradation, self.scale)
        img = read_image(self.lq_paths[t])
        self._check_lq(t, img.shape)
        return img

    def _check_lq(self, t: int, shape: tuple[int, ...]) -> None:
        h, w = image_shape(self.gt_paths[t])[:2]
        expected = (h // self.scale, w // self.scale)
        if tuple(shape[:2]) != expected:
            raise DataError(
                f"clip '{self.name}' frame {self.lq_paths[t].name}: LR is {shape[1]}x{shape[0]} (W x H) "
                f"({self.lq_paths[t]}) but GT {self.gt_paths[t]} is {w}x{h}, so LR must be "
                f"{expected[1]}x{expected[0]} at x{self.scale}: regenerate the LR frames with generate_LR.py"
            )

    def gt_frames(self, indices: list[int]) -> torch.Tensor:
        """(T, 3, H, W) float32 RGB in [0, 1]."""
        return to_tensor(np.stack([self.gt(t) for t in indices]))

    def lq_frames(self, indices: list[int]) -> torch.Tensor:
        """(T, 3, h, w) float32 RGB in [0, 1]."""
        return to_tensor(np.stack([self.lq(t) for t in indices]))


def _build_clip(name: str, gt_root: Path, lq_root: Path | None, scale: int, degradation: str) -> Clip:
    gt_paths = list_images(gt_root / name)
    if not gt_paths:
        raise DataError(f"clip '{name}': no image in {gt_root / name}: check the clips option or the folder")
    if lq_root is None:
        return Clip(name, gt_paths, None, scale, degradation)
    lq_dir = lq_root / name
    if not lq_dir.is_dir():
        raise DataError(f"clip '{name}' has GT frames in {gt_root / name} but no LR folder {lq_dir}: create it")
    lq_paths = list_images(lq_dir)
    if len(lq_paths) != len(gt_paths):
        raise DataError(
            f"clip '{name}': {len(gt_paths)} GT frames in {gt_root / name} but {len(lq_paths)} LR frames in "
            f"{lq_dir}: both folders must hold the same frames; regenerate LR with generate_LR.py"
        )
    return Clip(name, gt_paths, lq_paths, scale, degradation)


@DATASETS.register()
class VideoFolder(Dataset):
    """Test clips from folders; see the module docstring."""

    OPTIONS: ClassVar[dict[str, Key]] = {
        "phase": Key(str, "test"),
        "dataroot_GT": Key(str, required=True, path=True, help="a folder of clip folders (or of frames)"),
        "dataroot_LQ": PATH,
        "degradation": Key(str, "BI", choices=("BI", "BD"), casefold=True, help="LR made from GT (no dataroot_LQ)"),
        "scale": Key(int, 4, minimum=1),
        "clips": Key((list, NONE), help="clip folders to use; default: all"),
        "window": Key((int, NONE), minimum=1, help="frames per item; default: whole clips"),
        "window_stride": Key((int, NONE), minimum=1),
        "color": Key(str, "RGB"),
        "data_type": Key(str, "img", choices=("img",)),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        o = resolve_options(opt, type(self), "VideoFolder")
        self.opt = o
        self.scale = int(o["scale"])
        gt_root = require_dir(o["dataroot_GT"], "dataroot_GT")
        lq_root = None if o["dataroot_LQ"] is None else require_dir(o["dataroot_LQ"], "dataroot_LQ")
        names = list_clips(gt_root) if o["clips"] is None else [str(c) for c in o["clips"]]
        if not names:
            raise DataError(f"no image found under dataroot_GT {gt_root}: check the path")
        self.clips = [_build_clip(n, gt_root, lq_root, self.scale, str(o["degradation"]).upper()) for n in names]
        self.window = None if o["window"] is None else int(o["window"])
        self.items = self._index(o["window_stride"])

    def _index(self, stride: int | None) -> list[tuple[int, int]]:
        """(clip index, first frame) of every item."""
        if self.window is None:
            return [(i, 0) for i in range(len(self.clips))]
        if self.window < 3 or self.window % 2 == 0:
            raise DataError(f"VideoFolder: window must be odd and >= 3, got {self.window}")
        short = [c.name for c in self.clips if len(c) < self.window]
        if short:
            raise DataError(f"VideoFolder: clips shorter than window {self.window}: {', '.join(short)}")
        step = int(stride or self.window - 1)
        return [(i, s) for i, clip in enumerate(self.clips) for s in window_starts(len(clip), self.window, step)]

    def __len__(self) -> int:
        return len(self.items)

    def clip(self, index: int) -> Clip:
        return self.clips[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_index, start = self.items[index]
        clip = self.clips[clip_index]
        if self.window is None:
            frames = list(range(len(clip)))
            return {"LQs": clip.lq_frames(frames), "GT": clip.gt_frames(frames), "key": clip.name}
        frames = list(range(start, start + self.window))
        return {"LQs": clip.lq_frames(frames[::2]), "GT": clip.gt_frames(frames), "key": clip.name, "start": start}
