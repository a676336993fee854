"""``Adobe240``: windows of consecutive high-frame-rate frames with time stamps (TMNet stage 2).

TMNet's second stage (docs/models.md, TMNet) trains on Adobe240fps: 7 consecutive 240-fps frames, the first
and the last as the low-resolution inputs, all 7 as GT, and the time stamps of the 5 frames between them,
t = 1/6 .. 5/6. The official code reads pre-grouped 7-frame LMDBs (HR 360x640, LR 90x160, both BI from the
raw frames); this dataset reads folders of frames directly::

    mode: Adobe240
    dataroot_GT: datasets/adobe240/frame_HR     # one folder of consecutive frames per clip (any depth)
    dataroot_LQ: datasets/adobe240/frame_LR     # the same tree at 1/scale; ~: made from GT (degradation)
    list_file: ~                                # optional clip list (one clip folder per line); or clips: [...]
    N_frames: 7                                 # GT frames per sample (>= 3): inputs first and last
    window_stride: ~                            # first frames of the windows: every frame (train), N-1 (val)
    random_reverse: true                        # reverse the window in time (p 0.5; the stamps stay 1/6 .. 5/6)
    GT_size: 128
    LQ_size: 32
    use_flip: true
    use_rot: true

A sample is ``{'LQs': (2, 3, h, w), 'GT': (N_frames, 3, H, W), 'key': '<clip>/<first frame>', 'time': (N-2,)}``,
RGB float32 in [0, 1], with ``time = [1, ..., N-2] / (N-1)`` (float32): the common training sample plus the time
stamps, which the trainer passes to the model (``model(LQs, time)``; ``N`` LR frames -> ``N + (N-1)n`` frames).
Frames are read in natural order ('frame_2' before 'frame_10'); GT is mod-cropped to the scale. In phase
``train`` each sample is a random ``LQ_size`` crop with the official flips; otherwise whole frames.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import DATASETS
from ..runner import window_starts
from .augment import Flips, random_crop, to_tensor
from .io import DataError, list_clips, read_clip_list, require_dir
from .options import NONE, PATH, Key, resolve_options
from .video_folder import Clip, _build_clip


@DATASETS.register()
class Adobe240(Dataset):
    """Windows of ``N_frames`` consecutive frames: LR first and last -> all GT frames at t = k/(N-1)."""

    NAME = "Adobe240"
    provides_time = True
    OPTIONS: ClassVar[dict[str, Key]] = {
        "phase": Key(str, "train", choices=("train", "val", "test")),
        "dataroot_GT": Key(str, required=True, path=True, help="one folder of consecutive frames per clip"),
        "dataroot_LQ": PATH,
        "degradation": Key(str, "BI", choices=("BI", "BD"), casefold=True, help="LR made from GT (no dataroot_LQ)"),
        "scale": Key((int, NONE), minimum=1),
        "clips": Key((list, NONE)),
        "list_file": PATH,
        "N_frames": Key(int, 7, minimum=2),
        "window_stride": Key((int, NONE), minimum=1),
        "random_reverse": Key(bool, True),
        "GT_size": Key(int, 128, minimum=1),
        "LQ_size": Key(int, 32, minimum=1),
        "use_flip": Key(bool, True),
        "use_rot": Key(bool, True),
        "use_time": Key(bool, True, choices=(True,), help="the official flag: this dataset always gives time stamps"),
        "color": Key(str, "RGB", choices=("RGB",)),
        "data_type": Key(str, "img", choices=("img",)),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        o = resolve_options(opt, type(self), self.NAME)
        self.opt = o
        self.train = o["phase"] == "train"
        self.n_frames = int(o["N_frames"])
        if self.n_frames < 3:
            raise DataError(f"{self.NAME}: N_frames must be >= 3 (2 LR inputs and at least one frame between)")
        self.scale = self._scale(o)
        gt_root = require_dir(o["dataroot_GT"], "dataroot_GT")
        lq_root = None if o["dataroot_LQ"] is None else require_dir(o["dataroot_LQ"], "dataroot_LQ")
        if o["clips"] is not None and o["list_file"] is not None:
            raise DataError(f"{self.NAME}: give either clips or list_file, not both")
        if o["clips"] is not None:
            names = [str(c) for c in o["clips"]]
        elif o["list_file"] is not None:
            names = read_clip_list(Path(o["list_file"]))
        else:
            names = list_clips(gt_root)
        if not names:
            raise DataError(f"{self.NAME}: no clip (folder of frames) found under dataroot_GT {gt_root}")
        degradation = str(o["degradation"]).upper()
        self.clips: list[Clip] = [_build_clip(n, gt_root, lq_root, self.scale, degradation) for n in names]
        short = [c.name for c in self.clips if len(c) < self.n_frames]
        if short:
            shown = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
            raise DataError(f"{self.NAME}: {len(short)} clip(s) shorter than N_frames {self.n_frames}: {shown}")
        stride = o["window_stride"]
        stride = int(stride) if stride is not None else (1 if self.train else self.n_frames - 1)
        if stride < 1:
            raise DataError(f"{self.NAME}: window_stride must be >= 1, got {stride}")
        self.items = [
            (i, s)
            for i, clip in enumerate(self.clips)
            for s in window_starts(len(clip), self.n_frames, stride, cover_tail=False)
        ]
        n = self.n_frames - 1
        self.time = torch.tensor([k / n for k in range(1, n)], dtype=torch.float32)

    def _scale(self, o: Mapping[str, Any]) -> int:
        gt_size, lq_size = int(o["GT_size"]), int(o["LQ_size"])
        scale = o["scale"]
        if scale is None:
            if not self.train:
                return 4
            if gt_size % lq_size:
                raise DataError(f"{self.NAME}: GT_size {gt_size} must be LQ_size {lq_size} x scale")
            return gt_size // lq_size
        if self.train and gt_size != lq_size * int(scale):
            raise DataError(f"{self.NAME}: GT_size {gt_size} must equal LQ_size {lq_size} x scale {scale}")
        return int(scale)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip_index, start = self.items[index]
        clip = self.clips[clip_index]
        frames = list(range(start, start + self.n_frames))
        if self.train and self.opt["random_reverse"] and random.random() < 0.5:
            frames.reverse()
        gts = [clip.gt(t) for t in frames]
        lqs = [clip.lq(t) for t in (frames[0], frames[-1])]
        if self.train:
            crop = random_crop(lqs[0].shape, int(self.opt["LQ_size"]), self.scale, f"clip {clip.name}")
            flips = Flips.draw(bool(self.opt["use_flip"]), bool(self.opt["use_rot"]))
            lqs = [flips(crop.lq(x)) for x in lqs]
            gts = [flips(crop.gt(x)) for x in gts]
        key = f"{clip.name}/{clip.frame_names[start]}"
        return {
            "LQs": to_tensor(np.stack(lqs)),
            "GT": to_tensor(np.stack(gts)),
            "key": key,
            "time": self.time.clone(),
        }
