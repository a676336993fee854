"""Vimeo-90K septuplet datasets: ``Vimeo7`` (training, the official pipeline) and ``VimeoTest`` (split lists).

``Vimeo7`` is the official Vimeo-90K septuplet pipeline (docs/data.md) and accepts the official
``datasets.train`` block::

    mode: Vimeo7
    dataroot_GT: .../vimeo7_train_GT.lmdb   # or the sequences/ folder
    dataroot_LQ: .../vimeo7_train_LR7.lmdb  # or the LR sequences/ folder
    cache_keys: sep_trainlist.txt           # optional: .txt list or official .pkl; default: every clip
    N_frames: 7                             # GT frames per sample (odd)
    interval_list: [1]
    random_reverse: true
    border_mode: false
    GT_size: 128
    LQ_size: 32
    use_flip: true
    use_rot: true
    checksum: error                         # LMDB values checked against meta_info.txt's CRC-32: error | skip | off

A corrupt LMDB value (its CRC-32 does not match ``meta_info.txt``) stops the run with a message naming the key
(``checksum: error``, the default); ``checksum: skip`` logs the key once and takes the next clip instead (a
fixed substitute, so runs stay reproducible); ``checksum: off`` reads without checking.

A sample is ``{'LQs': (N, 3, h, w), 'GT': (N_frames, 3, H, W), 'key': '00001_0001'}``, RGB float32 in [0, 1].
The LR inputs are the GT positions ``LQ_index_list`` (default 0, 2, 4, 6: im1, im3, im5, im7 before the
random reversal). Frame shapes come from the data (LMDB ``meta_info.txt`` or the images), never from code.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from ..registry import DATASETS
from .augment import Flips, random_crop, to_tensor
from .degrade import degrade
from .frames import clip_key, clip_name, open_frames
from .io import MISSING_SHOWN, DataError, MissingClipsError, read_clip_list
from .lmdb_store import CorruptValueError, read_keys_file
from .options import NONE, PATH, Key, resolve_options

logger = logging.getLogger(__name__)


def _resolve_list_path(value: str, dataroot: str) -> Path:
    """A list/key file given as a path, or as a name inside the GT data root (where the official one lives)."""
    for candidate in (Path(value).expanduser(), Path(dataroot) / value):
        if candidate.is_file():
            return candidate
    raise DataError(f"clip list '{value}' not found (looked at {Path(value)} and {Path(dataroot) / value})")


def _load_clip_names(o: Mapping[str, Any], gt) -> list[str]:
    if o["cache_keys"] and o["list_file"]:
        raise DataError("give either cache_keys or list_file, not both")
    source = o["cache_keys"] or o["list_file"]
    if source is None:
        names = gt.clips()
        if not names:
            raise DataError(f"no clips found under {o['dataroot_GT']}: check dataroot_GT")
        return names
    path = _resolve_list_path(str(source), o["dataroot_GT"])
    if path.suffix == ".pkl":
        return [clip_name(key) for key in read_keys_file(path)]
    return read_clip_list(path)


def _drop_missing(names: list[str], sources: list, frames: range, policy: str, dataset: str) -> list[str]:
    """Clips present in every source; the missing ones are an error or a warning (with a count)."""
    missing = [n for n in names if not all(src.has_clip(n, frames) for src in sources)]
    if not missing:
        return names
    roots = " and ".join(str(src.root) for src in sources)
    shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
    message = f"{dataset}: {len(missing)} of {len(names)} listed clips are missing under {roots} ({shown})"
    present = set(names) - set(missing)
    kept = [n for n in names if n in present]
    if policy == "error":
        raise MissingClipsError(
            f"{message}: fix the data or the list, or set missing: skip to use the others", missing, len(kept)
        )
    logger.warning("%s; skipping them", message)
    if not kept:
        raise MissingClipsError(f"{message}: no clip left", missing, 0)
    return kept


def _lq_index_list(value: list[int] | None, n_frames: int, dataset: str) -> list[int]:
    if n_frames < 3 or n_frames % 2 == 0:
        raise DataError(f"{dataset}: N_frames must be odd and >= 3 (N LR inputs -> 2N-1 frames), got {n_frames}")
    index = list(range(0, n_frames, 2)) if value is None else [int(i) for i in value]
    if not index or any(not 0 <= i < n_frames for i in index):
        raise DataError(f"{dataset}: LQ_index_list {value} must hold positions in 0..{n_frames - 1}")
    return index


def _check_shapes(key: str, scale: int, lqs: list[np.ndarray], gts: list[np.ndarray], lq_root, gt_root) -> None:
    """All GT frames alike, all LR frames alike, and LR x scale == GT; else one message naming the clip."""
    gt_shape, lq_shape = gts[0].shape, lqs[0].shape
    if any(g.shape != gt_shape for g in gts) or any(q.shape != lq_shape for q in lqs):
        raise DataError(f"clip {key}: frames of different sizes under {gt_root} or {lq_root}: regenerate the clip")
    if (lq_shape[0] * scale, lq_shape[1] * scale) != gt_shape[:2]:
        raise DataError(
            f"clip {key}: LR frames are {lq_shape[1]}x{lq_shape[0]} (W x H) in {lq_root} but GT frames are "
            f"{gt_shape[1]}x{gt_shape[0]} in {gt_root}: LR must be GT/{scale}; regenerate LR with generate_LR.py "
            f"--scale {scale}"
        )


VIMEO_OPTIONS: dict[str, Key] = {
    "dataroot_GT": Key(str, required=True, path=True, help="the GT LMDB or sequences/ folder"),
    "dataroot_LQ": PATH,
    "data_type": Key((str, NONE), help="lmdb | img; detected when left out"),
    "cache_keys": Key((str, NONE), path="list", help="clip list (.txt or .pkl): a path, or a name in dataroot_GT"),
    "list_file": Key((str, NONE), path="list", help="clip list: a path, or a file name inside dataroot_GT"),
    "scale": Key((int, NONE), minimum=1),
    "N_frames": Key(int, 7, minimum=1, help="GT frames per sample (odd)"),
    "LQ_index_list": Key((list, NONE), help="GT positions of the LR inputs; default 0, 2, 4, ..."),
    "frames_per_clip": Key(int, 7, minimum=1),
    "color": Key(str, "RGB", choices=("RGB",)),
    "missing": Key(str, "error", choices=("error", "skip"), help="listed clips not on disk"),
    "checksum": Key(str, "error", choices=("error", "skip", "off"), help="LMDB values against meta_info.txt"),
}


class _VimeoBase(Dataset):
    """Options, frame sources and clip list shared by the two Vimeo datasets."""

    NAME = "Vimeo"
    OPTIONS: ClassVar[dict[str, Key]] = VIMEO_OPTIONS

    def __init__(self, opt: Mapping[str, Any]) -> None:
        o = resolve_options(opt, type(self), self.NAME)
        self.opt = o
        self.n_frames = int(o["N_frames"])
        self.lq_index = _lq_index_list(o["LQ_index_list"], self.n_frames, self.NAME)
        self.clip_length = int(o["frames_per_clip"])
        if self.n_frames > self.clip_length:
            raise DataError(f"{self.NAME}: N_frames {self.n_frames} exceeds frames_per_clip {self.clip_length}")
        verify = o["checksum"] != "off"
        self.gt = open_frames(o["dataroot_GT"], o["data_type"], "dataroot_GT", verify)
        self.lq = (
            None if o["dataroot_LQ"] is None else open_frames(o["dataroot_LQ"], o["data_type"], "dataroot_LQ", verify)
        )
        self._reported: set[str] = set()
        names = _load_clip_names(o, self.gt)
        sources = [self.gt] if self.lq is None else [self.gt, self.lq]
        self.clips = _drop_missing(names, sources, range(1, self.clip_length + 1), o["missing"], self.NAME)

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, clip: str, numbers: list[int], lq_numbers: list[int]) -> tuple[list, list]:
        gts = [self.gt.read(clip, n) for n in numbers]
        if self.lq is None:
            lqs = [degrade(gts[numbers.index(n)], self.opt["degradation"], self.scale) for n in lq_numbers]
        else:
            lqs = [self.lq.read(clip, n) for n in lq_numbers]
        lq_root = self.lq.root if self.lq is not None else "(generated)"
        _check_shapes(clip, self.scale, lqs, gts, lq_root, self.gt.root)
        return lqs, gts

    def _sample(self, key: str, lqs: list, gts: list) -> dict[str, Any]:
        lq_bgr = self.gt.bgr if self.lq is None else self.lq.bgr
        return {"LQs": to_tensor(np.stack(lqs), lq_bgr), "GT": to_tensor(np.stack(gts), self.gt.bgr), "key": key}


@DATASETS.register()
class Vimeo7(_VimeoBase):
    """Vimeo-90K septuplets for training (LMDB or folder backend, the same samples from both)."""

    NAME = "Vimeo7"
    OPTIONS: ClassVar[dict[str, Key]] = {
        **VIMEO_OPTIONS,
        "phase": Key(str, "train", choices=("train", "val", "test")),
        "dataroot_LQ": Key(str, required=True, path=True, help="the LR LMDB or sequences/ folder"),
        "interval_list": Key(list, [1]),
        "random_reverse": Key(bool, True),
        "border_mode": Key(bool, False),
        "GT_size": Key(int, 128, minimum=1),
        "LQ_size": Key(int, 32, minimum=1),
        "use_flip": Key(bool, True),
        "use_rot": Key(bool, True),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__(opt)
        o = self.opt
        if o["border_mode"]:
            raise DataError("Vimeo7: border_mode: true is not supported (the official configs use false)")
        self.train = o["phase"] == "train"
        self.scale = self._scale(o["scale"], o["GT_size"], o["LQ_size"])
        self.intervals = [int(i) for i in o["interval_list"]]
        half = self.n_frames // 2
        if not self.intervals or any(i < 1 or 2 * half * i >= self.clip_length for i in self.intervals):
            raise DataError(
                f"Vimeo7: interval_list {o['interval_list']} with N_frames {self.n_frames} does not fit "
                f"in clips of {self.clip_length} frames"
            )

    @staticmethod
    def _scale(scale: int | None, gt_size: int, lq_size: int) -> int:
        """``scale`` if given, else GT_size / LQ_size; the two sizes must agree with it."""
        if scale is None and gt_size % lq_size == 0:
            scale = gt_size // lq_size
        if scale is None or gt_size != lq_size * int(scale):
            raise DataError(f"Vimeo7: GT_size {gt_size} must equal LQ_size {lq_size} x scale ({scale or 'not set'})")
        return int(scale)

    def frame_numbers(self) -> list[int]:
        """GT frame numbers (1-based) of one sample: a window around a random centre, maybe reversed."""
        half = self.n_frames // 2
        if not self.train:
            interval = self.intervals[0]
            centre = (self.clip_length + 1) // 2
            return list(range(centre - half * interval, centre + half * interval + 1, interval))
        interval = random.choice(self.intervals)
        centre = random.randint(1 + half * interval, self.clip_length - half * interval)
        numbers = list(range(centre - half * interval, centre + half * interval + 1, interval))
        if self.opt["random_reverse"] and random.random() < 0.5:
            numbers.reverse()
        return numbers

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The sample of clip ``index``; with ``checksum: skip``, a clip with a corrupt LMDB value is replaced by
        the next good one (its key logged once per process)."""
        for attempt in range(len(self.clips)):
            try:
                return self._item((index + attempt) % len(self.clips))
            except CorruptValueError as exc:
                if self.opt["checksum"] != "skip":
                    raise
                if exc.key not in self._reported:
                    self._reported.add(exc.key)
                    clip = self.clips[(index + attempt) % len(self.clips)]
                    logger.warning("%s: skipping clip %s: %s", self.NAME, clip, exc)
        raise DataError(f"{self.NAME}: every clip has a corrupt LMDB value: rebuild the LMDB with create_lmdb.py")

    def _item(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        key = clip_key(clip)
        numbers = self.frame_numbers()
        lqs, gts = self._read(clip, numbers, [numbers[i] for i in self.lq_index])
        if self.train:
            crop = random_crop(lqs[0].shape, self.opt["LQ_size"], self.scale, f"clip {key}")
            flips = Flips.draw(self.opt["use_flip"], self.opt["use_rot"])
            lqs = [flips(crop.lq(x)) for x in lqs]
            gts = [flips(crop.gt(x)) for x in gts]
        return self._sample(key, lqs, gts)


@DATASETS.register()
class VimeoTest(_VimeoBase):
    """Vimeo-90K-T clips of a split list (e.g. ``sep_fast_testset.txt``): whole frames, no randomness.

    ``dataroot_LQ`` may be left out: the LR frames are then made from GT with ``degradation`` (BI or BD).
    Clips of the list that are not on disk stop the construction with a count (``missing: error``, the
    default) or are skipped with a warning that gives the count (``missing: skip``); never mid-run.
    The key of a sample is the list entry, e.g. '00001/0001'.
    """

    NAME = "VimeoTest"
    OPTIONS: ClassVar[dict[str, Key]] = {
        **VIMEO_OPTIONS,
        "phase": Key(str, "test"),
        "degradation": Key(str, "BI", choices=("BI", "BD"), casefold=True, help="LR made from GT (no dataroot_LQ)"),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__(opt)
        if self.opt["checksum"] == "skip":
            raise DataError("VimeoTest: checksum: skip is for training; an evaluation scores every listed clip")
        self.scale = int(self.opt["scale"] or 4)
        half = self.n_frames // 2
        centre = (self.clip_length + 1) // 2
        self.numbers = list(range(centre - half, centre + half + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        lqs, gts = self._read(clip, self.numbers, [self.numbers[i] for i in self.lq_index])
        return self._sample(clip, lqs, gts)
