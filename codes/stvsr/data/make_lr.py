"""Generate LR frames from HR frames with the BI or BD degradation (``data_scripts/generate_LR.py``).

    python data_scripts/generate_LR.py --mode BI --scale 4 --src HR_DIR --dst LR_DIR [--workers N]

``--src`` may be a folder of frames, a folder of clips (Vid4) or the Vimeo ``sequences/`` tree: every image
under it is degraded and written as PNG at the same relative path under ``--dst``. Files that already exist
are skipped, so an interrupted run continues where it stopped (each file is written to a temporary name
and renamed, so no half-written image is ever taken as done); ``--overwrite`` redoes them.

Refused before any work (exit 2): ``--dst`` overlapping ``--src`` (the same folder, inside it, or holding it),
a ``--scale`` BI cannot use (below 2) or BD cannot (below 1), a BD ``--phase`` outside ``0..scale-1``, a
``--dst`` that cannot be written, and a degradation that fails on the first frame (a ``--scale`` larger than
the frames): one message, not one per frame. During the work, a failed write (a full disk) stops at once, and
so does a problem that hits many frames the same way; frames that cannot be read are listed at the end (exit 1).
SIGINT, SIGTERM and SIGHUP stop the run: the frames written are kept, no temporary is left, and running the
same command again continues (exit 128 + the signal's number).
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import discard
from ..errors import StvsrError
from ..outputs import check_writable_folder, describe_write_error, refuse_overlap
from ..signals import raise_on_stop_signals, stop_exit_code, stop_name
from ..workers import WorkerMap
from .degrade import bd_downscale, bi_downscale
from .io import DataError, is_image, natural_key, read_image, require_dir, walk_folders, write_image

logger = logging.getLogger(__name__)

SAME_FAILURES_STOP = 20  # a reason that fails this many frames, and at least as many as were written, stops the run
FAILURES_SHOWN = 20  # failure lines printed at the end; the rest are counted
BD_KERNEL = 13


class GenerationStopped(DataError):
    """The run stopped early (a failed write, or one problem hitting many frames); the message says why and how
    to continue. The counts are in the dict that :func:`generate` was given."""


class Failure(NamedTuple):
    """One frame that failed: ``kind`` 'read' (the HR image), 'degrade' or 'write'; ``reason`` without the
    path (to count frames failing the same way); ``line`` with it; ``errno`` of a failed write."""

    kind: str
    reason: str
    line: str
    errno: int | None = None


# --- processes --------------------------------------------------------------------------------------------------


# --- the work ---------------------------------------------------------------------------------------------------


def check_settings(mode: str, scale: int, sigma: float = 1.6, phase: int = 0, workers: int = 1) -> None:
    """DataError for settings no frame could be degraded with (checked before any file is touched).

    BI needs ``scale >= 2`` (x1 would copy the frames); BD takes ``scale >= 1`` (x1 is the blur alone, a
    blurred-HR set) with ``0 <= phase < scale`` and ``sigma > 0``."""
    if mode not in ("BI", "BD"):
        raise DataError(f"--mode must be BI or BD, got '{mode}'")
    lowest = 2 if mode == "BI" else 1
    if scale < lowest:
        why = "x1 would only copy the frames" if mode == "BI" and scale == 1 else "a downscaling factor"
        raise DataError(f"--scale {scale}: {mode} needs an integer >= {lowest} ({why}); 4 is the usual")
    if mode == "BD" and not 0 <= phase < scale:
        raise DataError(f"--phase {phase}: BD at --scale {scale} needs a phase in 0..{scale - 1}")
    if mode == "BD" and not sigma > 0:
        raise DataError(f"--sigma {sigma}: the BD blur needs a sigma > 0 (1.6 is the usual)")
    if workers < 1:
        raise DataError(f"--workers {workers}: give 1 or more processes")


def find_jobs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(HR image, LR PNG) pairs for every image under ``src``; ``dst`` must not overlap ``src`` (refused here:
    LR frames written among the HR ones would be read as HR frames by the next run, or replace them)."""
    refuse_overlap(src, dst, "--src", "--dst")
    src, dst = src.resolve(), dst.resolve()
    jobs = []
    for here, _, filenames in walk_folders(src):
        for name in sorted(filenames, key=natural_key):
            if is_image(name) and not name.startswith("."):
                rel = (here / name).relative_to(src)
                jobs.append((here / name, (dst / rel).with_suffix(".png")))
    return jobs


def degrade_image(img: np.ndarray, mode: str, scale: int, sigma: float, phase: int) -> np.ndarray:
    """The LR frame of a uint8 RGB frame; ValueError when the frame is too small for ``scale`` (or the blur)."""
    h, w = img.shape[:2]
    smallest = scale if mode == "BI" else scale * (BD_KERNEL // 2 // scale + 1)
    if min(h, w) < smallest:
        raise ValueError(
            f"the frame is {w}x{h}: too small for {mode} x{scale} (it needs at least {smallest} pixels a side)"
        )
    return bi_downscale(img, scale) if mode == "BI" else bd_downscale(img, scale, sigma=sigma, phase=phase)


def degrade_file(job: tuple[Path, Path], mode: str, scale: int, sigma: float, phase: int) -> Failure | None:
    """Degrade one file; returns None, or the :class:`Failure` (never raises for a bad file or a failed write)."""
    src, dst = job
    try:
        img = read_image(src)
    except DataError as exc:
        return Failure("read", str(exc).replace(str(src), "<frame>"), f"{src}: {exc}")
    try:
        lr = degrade_image(img, mode, scale, sigma, phase)
    except (ValueError, TypeError, cv2.error) as exc:
        reason = str(exc).strip().splitlines()[-1] if isinstance(exc, cv2.error) else str(exc)
        return Failure("degrade", reason, f"{src}: {reason}")
    try:
        write_image(dst, lr)
    except OSError as exc:
        return Failure("write", exc.strerror or str(exc), describe_write_error(exc, dst), exc.errno)
    except (DataError, cv2.error) as exc:
        return Failure("write", str(exc).replace(str(dst), "<file>"), f"cannot write {dst}: {exc}")
    return None


def _remove_own_temporaries(path: Path) -> None:
    """Temporaries of ``path`` made by this process (an image being written when a stop signal came)."""
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.tmp-{os.getpid()}-*"):
            discard(tmp)


def _count(counts: dict, failure: Failure | None, same: Counter) -> None:
    """Book one outcome; GenerationStopped when it shows the run cannot go on (a failed write, or one problem
    hitting many frames)."""
    if failure is None:
        counts["written"] += 1
        return
    counts["failures"].append(failure.line)
    if failure.kind == "write":
        full = failure.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        what = "free space" if full else "fix the destination"
        raise GenerationStopped(
            f"{failure.line}: stopped after {counts['written']} frames written (of {counts['total']}, "
            f"{counts['skipped']} already done); {what} (or choose another --dst) and run the same command again: "
            "the frames already written are skipped"
        )
    same[failure.reason] += 1
    if same[failure.reason] >= SAME_FAILURES_STOP and same[failure.reason] >= counts["written"]:
        raise GenerationStopped(
            f"stopped: {same[failure.reason]} frames failed the same way ({failure.reason}), e.g. {failure.line}; "
            f"{counts['written']} frames written: fix the cause, then run the same command again (the frames "
            "already written are skipped)"
        )


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
    counts: dict | None = None,
) -> dict[str, int | list[str]]:
    """Degrade every image under ``src`` into ``dst``; returns counts (total, skipped, written) and the failures
    (one line each). ``counts``, when given, is that dict, kept up to date during the run (so that a caller
    interrupted by a stop signal can tell how far it got).

    Every check that needs no frame written is made first (settings, ``--src``, overlap, a writable ``--dst``);
    then the first frame is degraded in this process, so a problem that would hit every frame is one error
    (:class:`DataError`) instead of one line per frame. :class:`GenerationStopped` when a write fails or one
    problem hits many frames."""
    mode = mode.upper()
    check_settings(mode, scale, sigma, phase, workers)
    src_dir = require_dir(src, "--src")
    dst = Path(dst).expanduser()
    refuse_overlap(src_dir, dst, "--src", "--dst")
    existed = dst.exists()
    check_writable_folder(dst, "--dst")
    try:
        jobs = find_jobs(src_dir, dst)
        if not jobs:
            raise DataError(f"no image found under --src {src_dir}: check the path")
        todo = jobs if overwrite else [job for job in jobs if not job[1].is_file()]
        counts = {} if counts is None else counts
        counts.update(total=len(jobs), skipped=len(jobs) - len(todo), written=0, failures=[])
        if todo:
            try:
                _degrade_all(todo, mode, scale, sigma, phase, workers, progress, counts)
            except KeyboardInterrupt:
                if not overwrite:  # exact whenever the signal came (a second one leaves the running count)
                    counts["written"] = sum(1 for _, lr in todo if lr.is_file())  # every one there now is new
                raise
    except BaseException:
        if not existed and dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()  # made by this run, and nothing written into it
        raise
    return counts


def _degrade_all(
    todo: list[tuple[Path, Path]],
    mode: str,
    scale: int,
    sigma: float,
    phase: int,
    workers: int,
    progress: bool,
    counts: dict,
) -> None:
    work = functools.partial(degrade_file, mode=mode, scale=scale, sigma=sigma, phase=phase)
    same: Counter = Counter()
    bar = tqdm(total=len(todo), desc=f"{mode} x{scale}", unit="frame", disable=not progress)
    try:
        done = 0
        while done < len(todo) and counts["written"] == 0:  # in this process until one frame is written
            job = todo[done]
            try:
                failure = work(job)
            except KeyboardInterrupt:
                _remove_own_temporaries(job[1])
                raise
            done += 1
            bar.update()
            if failure is not None and failure.kind == "degrade":
                counts["failures"].append(failure.line)
                raise DataError(
                    f"{mode} x{scale} cannot be applied to {job[0]}: {failure.reason}; nothing was written: "
                    "check --scale (and --src: are these the HR frames?)"
                )
            _count(counts, failure, same)
        rest = todo[done:]
        if workers > 1 and len(rest) > 1:
            pool = WorkerMap(work, rest, workers, ordered=False)
            try:
                with pool:
                    for failure in pool:
                        _count(counts, failure, same)
                        bar.update()
            finally:
                counts["written"] += sum(1 for failure in pool.leftovers() if failure is None)
        else:
            for job in rest:
                try:
                    failure = work(job)
                except KeyboardInterrupt:
                    _remove_own_temporaries(job[1])
                    raise
                _count(counts, failure, same)
                bar.update()
    finally:
        bar.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", default="BI", type=str.upper, choices=["BI", "BD"], help="degradation (default BI)")
    p.add_argument("--scale", type=int, default=4, help="downscaling factor: BI >= 2, BD >= 1 (default 4)")
    p.add_argument("--src", required=True, help="HR frames: a folder of frames, of clips, or a sequences/ tree")
    p.add_argument("--dst", required=True, help="where to write the LR PNGs (same relative layout), outside --src")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="redo files that already exist")
    p.add_argument("--sigma", type=float, default=1.6, help="BD: Gaussian sigma (default 1.6)")
    p.add_argument("--phase", type=int, default=0, help="BD: pixel kept in each scale x scale block (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _report(result: dict, dst: str) -> None:
    failures = result.get("failures", [])
    for line in failures[:FAILURES_SHOWN]:
        print(f"generate_LR: failed: {line}", file=sys.stderr)
    if len(failures) > FAILURES_SHOWN:
        print(f"generate_LR: ... and {len(failures) - FAILURES_SHOWN} more failed frames", file=sys.stderr)
    print(
        f"generate_LR: {result.get('written', 0)} written, {result.get('skipped', 0)} already done, "
        f"{len(failures)} failed, of {result.get('total', 0)} frames -> {dst}"
    )


def main(argv: list[str] | None = None) -> int:
    """Exit 0: done; 1: some frames failed, or the run stopped early (a full disk); 2: refused before any work;
    128 + N: stopped by signal N (SIGINT, SIGTERM, SIGHUP)."""
    args = parse_args(argv)
    counts: dict = {}
    try:
        with raise_on_stop_signals():
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
                counts=counts,
            )
    except KeyboardInterrupt as exc:
        if "total" in counts:
            done = (
                f"{counts['written']} frames written to {args.dst} in this run ({counts['skipped']} were already "
                f"there, {counts['total']} in all); each frame is written to a temporary name and renamed, so none "
                "is half-written"
            )
        else:
            done = f"nothing was written to {args.dst} yet"
        print(
            f"generate_LR: stopped by {stop_name(exc)}: {done}: run the same command again to continue (the frames "
            "already written are skipped)",
            file=sys.stderr,
        )
        return stop_exit_code(exc)
    except GenerationStopped as exc:
        print(f"generate_LR: {exc}", file=sys.stderr)
        return 1
    except StvsrError as exc:
        print(f"generate_LR: {exc}", file=sys.stderr)
        return 2
    _report(result, args.dst)
    return 1 if result["failures"] else 0
