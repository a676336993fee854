"""Generate LR frames from HR frames with the BI or BD degradation (``data_scripts/generate_LR.py``).

    python data_scripts/generate_LR.py --mode BI --scale 4 --src HR_DIR --dst LR_DIR [--workers N]

``--src`` may be a folder of frames, a folder of clips (Vid4) or the Vimeo ``sequences/`` tree: every image
under it is degraded and written as PNG at the same relative path under ``--dst``. Files that already exist
are skipped, so an interrupted run continues where it stopped (each file is written to a temporary name
and renamed, so no half-written image is ever taken as done); ``--overwrite`` redoes them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from .degrade import bd_downscale, bi_downscale
from .io import DataError, is_image, natural_key, read_image, require_dir, walk_folders, write_image

logger = logging.getLogger(__name__)


def find_jobs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(HR image, LR PNG) pairs for every image under ``src`` (``dst`` itself is never read, if inside)."""
    src, dst = src.resolve(), dst.resolve()
    jobs = []
    for here, _, filenames in walk_folders(src, skip=dst):
        for name in sorted(filenames, key=natural_key):
            if is_image(name) and not name.startswith("."):
                rel = (here / name).relative_to(src)
                jobs.append((here / name, (dst / rel).with_suffix(".png")))
    return jobs


def degrade_file(job: tuple[Path, Path], mode: str, scale: int, sigma: float, phase: int) -> str | None:
    """Degrade one file; returns None, or a one-line error naming the file."""
    src, dst = job
    try:
        img = read_image(src)
        lr = bi_downscale(img, scale) if mode == "BI" else bd_downscale(img, scale, sigma=sigma, phase=phase)
        write_image(dst, lr)
    except (DataError, ValueError, OSError) as exc:
        return f"{src}: {exc}"
    return None


def generate(
    src: str | Path,
    dst: str | Path,
    mode: str = "BI",
    scale: int = 4,
    workers: int = 1,
    overwrite: bool = False,
    sigma: float = 1.6,
    phase: int = 0,
    progress: bool = True,
) -> dict[str, int | list[str]]:
    """Degrade every image under ``src`` into ``dst``; returns counts and the failures (one line each)."""
    mode = mode.upper()
    if mode not in ("BI", "BD"):
        raise DataError(f"--mode must be BI or BD, got '{mode}'")
    src_dir = require_dir(src, "--src")
    jobs = find_jobs(src_dir, Path(dst))
    if not jobs:
        raise DataError(f"no image found under --src {src_dir}: check the path")
    todo = jobs if overwrite else [job for job in jobs if not job[1].is_file()]
    work = functools.partial(degrade_file, mode=mode, scale=scale, sigma=sigma, phase=phase)
    bar = tqdm(total=len(todo), desc=f"{mode} x{scale}", unit="frame", disable=not progress)
    failures = []
    if workers > 1 and len(todo) > 1:
        with Pool(workers) as pool:
            for error in pool.imap_unordered(work, todo, chunksize=4):
                failures += [error] if error else []
                bar.update()
    else:
        for job in todo:
            error = work(job)
            failures += [error] if error else []
            bar.update()
    bar.close()
    return {
        "total": len(jobs),
        "skipped": len(jobs) - len(todo),
        "written": len(todo) - len(failures),
        "failures": failures,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", default="BI", type=str.upper, choices=["BI", "BD"], help="degradation (default BI)")
    p.add_argument("--scale", type=int, default=4, help="downscaling factor (default 4)")
    p.add_argument("--src", required=True, help="HR frames: a folder of frames, of clips, or a sequences/ tree")
    p.add_argument("--dst", required=True, help="where to write the LR PNGs (same relative layout)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="redo files that already exist")
    p.add_argument("--sigma", type=float, default=1.6, help="BD: Gaussian sigma (default 1.6)")
    p.add_argument("--phase", type=int, default=0, help="BD: pixel kept in each scale x scale block (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = generate(
            args.src,
            args.dst,
            args.mode,
            args.scale,
            args.workers,
            args.overwrite,
            args.sigma,
            args.phase,
            progress=not args.quiet,
        )
    except DataError as exc:
        print(f"generate_LR: {exc}", file=sys.stderr)
        return 2
    for line in result["failures"]:
        print(f"generate_LR: failed: {line}", file=sys.stderr)
    print(
        f"generate_LR: {result['written']} written, {result['skipped']} already done, "
        f"{len(result['failures'])} failed, of {result['total']} frames -> {args.dst}"
    )
    return 1 if result["failures"] else 0
