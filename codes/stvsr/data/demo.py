"""A small Vimeo-format dataset made from the photographs inside scikit-image (no download).

    python data_scripts/make_demo_data.py --root datasets/vimeo_demo [--seed 0]
    root = stvsr.data.demo.ensure_demo_data("datasets/vimeo_demo")   # builds it only when absent

Layout (the Vimeo-90K septuplet layout, so every tool and dataset works on it unchanged)::

    ROOT/sequences/00001/0001/im1.png .. im7.png     GT, 448x256 (64 training clips in 00001)
    ROOT/sequences/00002/0001/...                     8 validation clips
    ROOT/sequences_LR/...                             BI x4 LR frames (112x64), same tree
    ROOT/sep_trainlist.txt, ROOT/sep_testlist.txt     clip lists
    ROOT/vimeo7_train_GT.lmdb, vimeo7_train_LR7.lmdb  LMDBs of the training clips
    ROOT/demo_info.json                               how it was made; written last

Each clip is a 7-frame camera path over one photograph (pan, zoom and rotation at constant rates) with a
second photograph's disc, or the scikit-image logo, moving and turning over it: camera and object motion
with occlusion, as in real video. The photograph is resampled at or above its resolution (no aliasing).
Everything is drawn from ``numpy.random.default_rng(seed)`` and rendered by deterministic OpenCV calls, so
a seed gives the same PNG files on every machine with the same OpenCV and scikit-image. The set is built in a
temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from ..signals import raise_on_stop_signals, stop_exit_code, stop_name
from .degrade import bi_downscale
from .io import DataError, write_image
from .make_lmdb import build_lmdb

logger = logging.getLogger(__name__)

DEMO_VERSION = 1
INFO_NAME = "demo_info.json"
# Photographs bundled with scikit-image (loaded from its package data, never downloaded).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
)


@dataclass(frozen=True)
class DemoSpec:
    """What to build: clip counts, GT frame size (multiple of ``scale``), frames per clip, seed."""

    n_train: int = 64
    n_val: int = 8
    height: int = 256
    width: int = 448
    frames: int = 7
    scale: int = 4
    seed: int = 0

    def check(self) -> None:
        if self.height % self.scale or self.width % self.scale:
            raise DataError(
                f"demo frame size {self.width}x{self.height} (W x H) must be a multiple of scale {self.scale}"
            )
        if self.n_train < 1 or self.n_val < 0 or self.frames < 3:
            raise DataError("demo needs n_train >= 1, n_val >= 0 and frames >= 3")


def load_photos() -> list[np.ndarray]:
    """The bundled photographs as uint8 RGB arrays (grey ones replicated to 3 channels)."""
    import skimage.data  # imported here: only the demo needs scikit-image

    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(img[:, :, :3].astype(np.uint8)))
    return photos


def load_logo(size: int = 96) -> np.ndarray:
    """The scikit-image logo, RGBA uint8 reduced to ``size`` pixels (its alpha channel cuts out its shape)."""
    import skimage.data  # imported here: only the demo needs scikit-image

    return cv2.resize(np.ascontiguousarray(skimage.data.logo()), (size, size), interpolation=cv2.INTER_AREA)


def _fit(photo: np.ndarray, height: int, width: int, margin: float) -> np.ndarray:
    """Resize ``photo`` so that it is ``margin`` times larger than the frame in both directions."""
    ph, pw = photo.shape[:2]
    f = max(margin * height / ph, margin * width / pw)
    size = (max(1, round(pw * f)), max(1, round(ph * f)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def _camera(rng: np.random.Generator, spec: DemoSpec, src_shape: tuple[int, ...]) -> dict[str, float]:
    """Random camera path: start centre, pan velocity, zoom rate, rotation rate (per frame)."""
    speed = rng.uniform(0.0, 6.0)  # HR pixels per frame: up to 1.5 LR pixels, as in Vimeo-90K
    angle = rng.uniform(0, 2 * math.pi)
    ph, pw = src_shape[:2]
    return {
        "cx": pw / 2 + rng.uniform(-0.1, 0.1) * pw,
        "cy": ph / 2 + rng.uniform(-0.1, 0.1) * ph,
        "vx": speed * math.cos(angle),
        "vy": speed * math.sin(angle),
        "zoom": rng.uniform(0.75, 1.0),  # source pixels per frame pixel (< 1: magnified, never aliased)
        "zoom_rate": rng.uniform(-0.015, 0.015),
        "angle": rng.uniform(-5.0, 5.0),
        "spin": rng.uniform(-0.8, 0.8),  # degrees per frame
    }


def _camera_matrix(cam: dict[str, float], t: int, spec: DemoSpec) -> np.ndarray:
    """2x3 map from frame pixel to source pixel at frame ``t``."""
    s = cam["zoom"] * (1 + cam["zoom_rate"]) ** t
    a = math.radians(cam["angle"] + cam["spin"] * t)
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = np.array([cam["cx"] + cam["vx"] * s * t, cam["cy"] + cam["vy"] * s * t])
    frame_centre = np.array([(spec.width - 1) / 2, (spec.height - 1) / 2])
    return np.hstack([rot, (centre - rot @ frame_centre)[:, None]])


def _disc_sprite(rng: np.random.Generator, photo: np.ndarray, spec: DemoSpec) -> np.ndarray:
    """An RGBA disc (radius 11-22 % of the frame height) cut from ``photo``, with an antialiased edge."""
    short = min(spec.height, spec.width)
    radius = int(rng.integers(max(2, round(0.11 * short)), max(3, round(0.22 * short))))
    size = 2 * radius
    ph, pw = photo.shape[:2]
    top, left = int(rng.integers(0, ph - size)), int(rng.integers(0, pw - size))
    rgb = photo[top : top + size, left : left + size]
    yy, xx = np.mgrid[:size, :size] + 0.5 - radius
    alpha = np.clip(radius - np.hypot(yy, xx), 0.0, 1.0)
    return np.dstack([rgb, np.round(alpha * 255).astype(np.uint8)])


def _object(rng: np.random.Generator, spec: DemoSpec) -> dict[str, float]:
    """Random object path: start position, velocity (HR px/frame), spin (deg/frame), size."""
    speed = rng.uniform(2.0, 10.0)
    angle = rng.uniform(0, 2 * math.pi)
    return {
        "x": rng.uniform(0.25, 0.75) * spec.width,
        "y": rng.uniform(0.25, 0.75) * spec.height,
        "vx": speed * math.cos(angle),
        "vy": speed * math.sin(angle),
        "angle": rng.uniform(0, 360),
        "spin": rng.uniform(-6.0, 6.0),
        "scale": rng.uniform(0.8, 1.2),
    }


def _paste(frame: np.ndarray, sprite: np.ndarray, obj: dict[str, float], t: int) -> np.ndarray:
    """Composite the RGBA ``sprite`` over ``frame`` (float32) at the object's pose at time ``t``."""
    h, w = sprite.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), obj["angle"] + obj["spin"] * t, obj["scale"])
    m[:, 2] += [obj["x"] + obj["vx"] * t - (w - 1) / 2, obj["y"] + obj["vy"] * t - (h - 1) / 2]
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpAffine(sprite.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = warped[:, :, 3:] / 255.0
    return frame * (1 - alpha) + warped[:, :, :3] * alpha


def render_clip(rng: np.random.Generator, photos: list[np.ndarray], logo: np.ndarray, spec: DemoSpec) -> list:
    """``spec.frames`` uint8 RGB frames of one synthetic clip."""
    background = _fit(photos[int(rng.integers(len(photos)))], spec.height, spec.width, margin=1.6)
    other = _fit(photos[int(rng.integers(len(photos)))], spec.height, spec.width, margin=1.0)
    sprite = logo if rng.random() < 0.25 else _disc_sprite(rng, other, spec)
    cam, obj = _camera(rng, spec, background.shape), _object(rng, spec)
    src = background.astype(np.float32)
    frames = []
    for t in range(spec.frames):
        m = _camera_matrix(cam, t, spec)
        flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
        frame = cv2.warpAffine(src, m, (spec.width, spec.height), flags=flags, borderMode=cv2.BORDER_REFLECT_101)
        frame = _paste(frame, sprite, obj, t)
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return frames


def clip_names(spec: DemoSpec) -> tuple[list[str], list[str]]:
    """Training clips 00001/0001.., validation clips 00002/0001.."""
    train = [f"00001/{i:04d}" for i in range(1, spec.n_train + 1)]
    val = [f"00002/{i:04d}" for i in range(1, spec.n_val + 1)]
    return train, val


def make_demo_data(root: str | Path, spec: DemoSpec = DemoSpec(), progress: bool = False) -> Path:
    """Build the demo set into ``root`` (which must not exist yet); returns ``root``."""
    spec.check()
    root = Path(root)
    if root.exists():
        raise DataError(f"{root} already exists: remove it or choose another --root")
    start = time.time()
    rng = np.random.default_rng(spec.seed)
    photos, logo = load_photos(), load_logo(max(8, round(0.375 * min(spec.height, spec.width))))
    train, val = clip_names(spec)
    for clip in tqdm(train + val, desc="demo clips", unit="clip", disable=not progress):
        for n, frame in enumerate(render_clip(rng, photos, logo, spec), start=1):
            write_image(root / "sequences" / clip / f"im{n}.png", frame)
            write_image(root / "sequences_LR" / clip / f"im{n}.png", bi_downscale(frame, spec.scale))
    (root / "sep_trainlist.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "sep_testlist.txt").write_text("\n".join(val) + ("\n" if val else ""), encoding="utf-8")
    trainlist = root / "sep_trainlist.txt"
    build_lmdb(root / "sequences", root / "vimeo7_train_GT.lmdb", trainlist, progress=progress)
    build_lmdb(root / "sequences_LR", root / "vimeo7_train_LR7.lmdb", trainlist, progress=progress)
    info = {"version": DEMO_VERSION, **asdict(spec), "seconds": round(time.time() - start, 1)}
    (root / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root


def is_complete(root: Path, spec: DemoSpec) -> bool:
    """True when ``root`` holds a finished demo set made with ``spec`` by this version of the code."""
    try:
        info = json.loads((root / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("version") == DEMO_VERSION and all(info.get(k) == v for k, v in asdict(spec).items())


def ensure_demo_data(root: str | Path, spec: DemoSpec = DemoSpec(), progress: bool = False) -> Path:
    """``root`` with a complete demo set, building it first when absent (atomically: temporary folder,
    then rename). A folder at ``root`` that is not a complete demo set of ``spec`` is an error."""
    root = Path(root).expanduser()
    if is_complete(root, spec):
        return root
    if root.exists():
        raise DataError(f"{root} exists but is not a complete demo set for {spec}: delete it, or use another root")
    logger.info("Building the demo set in %s (seed %d; first use only, about 10 s)", root, spec.seed)
    try:
        with atomic_path(root, folder=True, replace_folder=False) as tmp:
            make_demo_data(tmp, spec, progress)
    except OSError:  # another process (e.g. another DDP rank) finished first
        if not is_complete(root, spec):
            raise
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the demo Vimeo-format dataset from scikit-image photographs.")
    p.add_argument("--root", default="datasets/vimeo_demo", help="where to build it (default datasets/vimeo_demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=64, help="training clips (default 64)")
    p.add_argument("--val", type=int, default=8, help="validation clips (default 8)")
    args = p.parse_args(argv)
    spec = DemoSpec(n_train=args.train, n_val=args.val, seed=args.seed)
    start = time.time()
    try:
        with raise_on_stop_signals():
            root = ensure_demo_data(args.root, spec, progress=True)
    except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP: the temporary folder is removed by atomic_path
        print(
            f"make_demo_data: stopped by {stop_name(exc)}: nothing was kept (the partial set was removed): "
            "run the same command again to build it",
            file=sys.stderr,
        )
        return stop_exit_code(exc)
    except DataError as exc:
        print(f"make_demo_data: {exc}", file=sys.stderr)
        return 2
    print(f"make_demo_data: {root} ready ({time.time() - start:.1f} s)")
    return 0
