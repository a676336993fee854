"""Where Vimeo-style frames come from: a folder tree (``ROOT/00001/0001/im1.png``) or an LMDB
(key ``00001_0001_1``). Both give the same uint8 frames; the LMDB ones are in its stored BGR order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import DataError, list_clips, natural_key, read_image, require_dir
from .lmdb_store import LmdbStore


def clip_key(clip: str) -> str:
    """'00001/0001' -> '00001_0001' (the official LMDB key prefix)."""
    return clip.replace("/", "_")


def clip_name(key: str) -> str:
    """'00001_0001' -> '00001/0001' (the form of the split lists and of the folder tree)."""
    return key.replace("_", "/")


def is_lmdb(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix == ".lmdb" or (p / "data.mdb").is_file()


class FolderFrames:
    """Frames ``ROOT/<clip>/im<n>.png`` (n from 1)."""

    bgr = False

    def __init__(self, root: str | Path, what: str, pattern: str = "im{}.png") -> None:
        self.root = require_dir(root, what)
        self.pattern = pattern

    def path(self, clip: str, n: int) -> Path:
        return self.root / clip / self.pattern.format(n)

    def has_clip(self, clip: str, frames: range) -> bool:
        """Every frame file is there (checked up front, so that a run never stops on a missing frame)."""
        return all(self.path(clip, n).is_file() for n in frames)

    def read(self, clip: str, n: int) -> np.ndarray:
        return read_image(self.path(clip, n))

    def clips(self) -> list[str]:
        return [c for c in list_clips(self.root) if c != "."]


class LmdbFrames:
    """Frames stored under keys ``<seq>_<clip>_<n>`` in an LMDB made by create_lmdb.py."""

    bgr = True

    def __init__(self, root: str | Path, what: str, verify: bool = True) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(f"{what} {self.root} does not exist: check the path (or build it with create_lmdb.py)")
        self.store = LmdbStore(self.root, verify=verify)

    @staticmethod
    def key(clip: str, n: int) -> str:
        return f"{clip_key(clip)}_{n}"

    def has_clip(self, clip: str, frames: range) -> bool:
        return all(self.key(clip, n) in self.store for n in frames)

    def read(self, clip: str, n: int) -> np.ndarray:
        return self.store.get(self.key(clip, n))

    def clips(self) -> list[str]:
        names = {clip_name(key.rsplit("_", 1)[0]) for key in self.store}
        return sorted(names, key=natural_key)


def open_frames(root: str | Path, data_type: str | None, what: str, verify: bool = True) -> FolderFrames | LmdbFrames:
    """A frame source for ``root``: an LMDB when ``data_type`` is 'lmdb' (or None and root looks like one);
    ``verify``: check each LMDB value against its CRC-32."""
    if data_type is None:
        data_type = "lmdb" if is_lmdb(root) else "img"
    if data_type == "lmdb":
        return LmdbFrames(root, what, verify)
    if data_type == "img":
        return FolderFrames(root, what)
    raise DataError(f"data_type '{data_type}' is not one of 'lmdb', 'img' (or leave it out to detect it)")
