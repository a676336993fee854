"""Reading and writing frames, listing folders of frames and clips, natural sort.

Frames are uint8 RGB (H, W, 3) arrays everywhere in ``stvsr.data`` except inside LMDBs, which keep the
official layout (raw BGR bytes). Every user-caused failure (missing folder, unreadable or non-8-bit image)
raises a :class:`DataError` whose one-line message names the path and what to do.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write
from ..errors import StvsrError

MISSING_SHOWN = 5  # missing clips named in an error message
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


class DataError(StvsrError, RuntimeError):
    """A problem with the user's data or data options; the message says what and where."""


class MissingClipsError(DataError):
    """Clips of a list are not on disk: ``missing`` their names, ``left`` how many listed clips are present
    (0: nothing to read at all)."""

    def __init__(self, message: str, missing: tuple[str, ...] = (), left: int = 0) -> None:
        super().__init__(message)  # defaults: a DataLoader worker re-raises it with the message alone
        self.missing = tuple(missing)
        self.left = left


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: 'Frame 2' < 'Frame 10', 'im2' < 'im10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a Path if it is a folder; otherwise a DataError that names it and the option to fix."""
    p = Path(path).expanduser()
    if not p.is_dir():
        state = "is not a folder" if p.exists() else "does not exist"
        raise DataError(f"{what} {p} {state}: check the path (or create the data, see docs/data.md)")
    return p


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, naturally sorted by name."""
    folder = require_dir(folder, "frame folder")
    files = [p for p in folder.iterdir() if p.is_file() and is_image(p)]
    return sorted(files, key=lambda p: natural_key(p.name))


def walk_folders(root: Path, skip: Path | None = None):
    """``os.walk(root)`` top-down, subfolders in natural order, following links to folders (a data root made of
    links to clip folders is common; not following them would drop those clips silently) but never into a folder
    that holds the current one (a link cycle), nor into ``skip`` (a resolved path, e.g. an output folder inside
    ``root``). Yields (folder, subfolder names, file names)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath).resolve()
        kept = []
        for d in dirnames:
            target = Path(dirpath, d).resolve()
            if target != skip and not _holds(target, here):
                kept.append(d)
        dirnames[:] = sorted(kept, key=natural_key)
        yield Path(dirpath), dirnames, filenames


def _holds(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def list_clips(root: str | Path) -> list[str]:
    """Relative paths ('calendar', '00001/0001', or '.') of every folder under ``root`` that holds images (links to
    folders followed)."""
    root = require_dir(root, "data root")
    clips = []
    for folder, _, filenames in walk_folders(root):
        if any(is_image(name) for name in filenames):
            clips.append(folder.relative_to(root).as_posix())
    return sorted(clips, key=natural_key)


def read_image(path: str | Path) -> np.ndarray:
    """An 8-bit image as uint8 RGB (H, W, 3); grey is replicated, an alpha channel dropped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist: check the data root and the clip list")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"image {path} cannot be decoded (corrupt or not an image): replace or regenerate it")
    if img.dtype != np.uint8:
        raise DataError(f"image {path} is {img.dtype}, not 8-bit: convert it to 8-bit PNG")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])


def read_image_bgr(path: str | Path) -> np.ndarray:
    """As :func:`read_image` but in OpenCV's BGR order (the order LMDB values are stored in)."""
    return np.ascontiguousarray(read_image(path)[:, :, ::-1])


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 RGB (or grey) image atomically: a temporary file in the same folder, then rename.

    A run killed in the middle never leaves a truncated image under the final name, so a later run that
    skips existing files (``generate_LR.py``) can trust every file it finds.
    """
    path = Path(path)
    img = rgb[:, :, ::-1] if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(img))
    if not ok:
        raise DataError(f"cannot encode image for {path}: unsupported extension '{path.suffix}'")
    atomic_write(path, buf.tobytes())


def image_shape(path: str | Path) -> tuple[int, int, int]:
    """(H, W, 3) of an image as :func:`read_image` returns it; PNG headers are read without decoding."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        with open(path, "rb") as f:
            head = f.read(24)
        if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width, 3
    return read_image(path).shape


def read_clip_list(path: str | Path) -> list[str]:
    """Clip names ('00001/0001') of a Vimeo list file; blank lines, spaces, CRLF and a missing final
    newline are all fine. Order and duplicates are kept as in the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"clip list {path} does not exist: check the list_file / cache_keys option")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
