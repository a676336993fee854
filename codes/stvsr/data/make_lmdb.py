"""Build, check and describe Vimeo-style LMDBs (``data_scripts/create_lmdb.py``).

    python data_scripts/create_lmdb.py --src vimeo_septuplet/sequences --list sep_trainlist.txt \\
        --dst vimeo7_train_GT.lmdb
    python data_scripts/create_lmdb.py --src vimeo_septuplet_LR/sequences --list sep_trainlist.txt \\
        --dst vimeo7_train_LR7.lmdb
    python data_scripts/create_lmdb.py --check vimeo7_train_GT.lmdb
    python data_scripts/create_lmdb.py --write-meta official_GT.lmdb --shape 256,448,3

Keys are ``<sequence>_<clip>_<n>`` (``00001_0001_1`` .. ``_7``, n counting the clip's frames in natural
order from 1), values raw uint8 HWC BGR bytes as in the official LMDBs, described by ``meta_info.txt``
(key, shape, CRC-32). The database appears under ``--dst`` only once complete.

Refused before any frame is read (exit 2): a ``--dst`` overlapping ``--src`` (the same folder, inside it, or
holding it); a ``--dst`` that exists and is not an LMDB this tool could have written (a file, a link, a folder
holding anything but ``data.mdb``, ``lock.mdb``, ``meta_info.txt``), with or without ``--overwrite``; an existing
LMDB without ``--overwrite``; a folder for ``--dst`` that cannot be written; less free space than the frames
need. A write that fails during the build (a full disk) is one message, and the partial database is removed.
SIGINT, SIGTERM and SIGHUP stop the build: nothing is written (an existing ``--dst`` is left as it was), the
temporary is removed, exit 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ..atomic import discard
from ..errors import StvsrError
from ..outputs import OutputError, check_writable_folder, describe_write_error, free_space, refuse_overlap
from ..signals import raise_on_stop_signals, stop_exit_code, stop_name, stop_signals_ignored
from ..workers import WorkerMap
from .frames import clip_key
from .io import (
    MISSING_SHOWN,
    DataError,
    image_shape,
    list_clips,
    list_images,
    read_clip_list,
    read_image_bgr,
    require_dir,
)
from .lmdb_store import LmdbStore, LmdbWriter, check_lmdb_destination, map_size_for, meta_from_database


def frame_jobs(src: Path, clips: list[str], skip_missing: bool = False) -> list[tuple[str, Path]]:
    """(key, image path) for every frame of the clips, in list order."""
    missing = [c for c in clips if not (src / c).is_dir()]
    skipped = set(missing)  # a set: lists have 64k clips, and a list lookup per clip took 42 s
    if missing and not skip_missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > MISSING_SHOWN else "")
        raise DataError(
            f"{len(missing)} of {len(clips)} listed clips are not under {src} ({shown}): fix --src/--list, "
            "or pass --skip-missing"
        )
    jobs = []
    for clip in clips:
        if clip in skipped:
            continue
        frames = list_images(src / clip)
        if not frames:
            raise DataError(f"clip folder {src / clip} holds no image")
        jobs += [(f"{clip_key(clip)}_{n}", path) for n, path in enumerate(frames, start=1)]
    return jobs


def build_lmdb(
    src: str | Path,
    dst: str | Path,
    list_file: str | Path | None = None,
    workers: int = 1,
    batch: int = 256,
    overwrite: bool = False,
    checksum: bool = True,
    skip_missing: bool = False,
    progress: bool = True,
) -> int:
    """Write every frame of the listed clips (all clips under ``src`` without a list) into ``dst``.

    Checked before any frame is read: ``src`` is a folder, ``dst`` does not overlap it, ``dst`` may be written
    (:func:`stvsr.data.lmdb_store.check_lmdb_destination`: only an LMDB is replaced, and only with ``overwrite``),
    its folder is writable; then, from the image headers, that its file system has room for the values."""
    src = require_dir(src, "--src")
    dst = Path(dst).expanduser()
    refuse_overlap(src, dst, "--src", "--dst")
    check_lmdb_destination(dst, overwrite)
    check_writable_folder(dst.parent, f"--dst {dst}: its folder")
    clips = read_clip_list(list_file) if list_file else [c for c in list_clips(src) if c != "."]
    if not clips:
        raise DataError(f"no clip found under --src {src}")
    jobs = frame_jobs(src, clips, skip_missing)
    sizes = [int(h * w * c) for h, w, c in (image_shape(p) for _, p in jobs)]
    free = free_space(dst.parent)
    if free is not None and free < sum(sizes):
        raise OutputError(
            f"--dst {dst}: the {len(jobs)} frames need {sum(sizes) / 2**20:.1f} MB and its file system has "
            f"{free / 2**20:.1f} MB free: free space or choose another --dst"
        )
    with LmdbWriter(dst, map_size_for(sizes), batch=batch, overwrite=overwrite, checksum=checksum) as writer:
        paths = [p for _, p in jobs]
        bar = tqdm(total=len(jobs), desc=f"LMDB {dst.name}", unit="frame", disable=not progress)
        try:
            if workers > 1 and len(jobs) > 1:
                with WorkerMap(read_image_bgr, paths, workers, ordered=True) as images:
                    for (key, _), img in zip(jobs, images):
                        writer.put(key, img)
                        bar.update()
            else:
                for key, path in jobs:
                    writer.put(key, read_image_bgr(path))
                    bar.update()
        finally:
            bar.close()
    return len(jobs)


def check_lmdb(path: str | Path, progress: bool = True) -> list[str]:
    """One line per problem of the LMDB (empty when every key decodes to its shape and checksum).

    A damaged file (truncated ``data.mdb``, unreadable header) is one problem line, found before any value is
    read (:func:`stvsr.data.lmdb_store.open_environment`)."""
    try:
        store = LmdbStore(path, verify=False)
    except DataError as exc:
        return [str(exc)]
    problems = []
    for key, problem in tqdm(store.check(), total=len(store), desc=f"check {store.path.name}", disable=not progress):
        if problem:
            problems.append(f"{key}: {problem}")
    problems += [f"{key}: stored but not listed in meta_info.txt" for key in store.extra_keys()]
    return problems


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must be H,W,C (e.g. 256,448,3), got '{text}'") from None
    return h, w, c


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dst", help="LMDB folder to create (e.g. vimeo7_train_GT.lmdb); needs --src")
    what.add_argument("--check", nargs="+", metavar="LMDB", help="verify that every key decodes to its shape")
    what.add_argument("--write-meta", metavar="LMDB", help="write meta_info.txt for an existing (official) LMDB")
    p.add_argument("--src", help="folder of clips, e.g. vimeo_septuplet/sequences (GT) or its LR copy")
    p.add_argument("--list", help="clip list, e.g. sep_trainlist.txt (default: every clip under --src)")
    p.add_argument("--shape", type=parse_shape, help="with --write-meta: H,W,C of every value")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image-reading processes")
    p.add_argument("--batch", type=int, default=256, help="values per LMDB transaction (default 256)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --dst that is an LMDB (nothing else is replaced)"
    )
    p.add_argument("--skip-missing", action="store_true", help="leave out listed clips that are not under --src")
    p.add_argument("--no-checksum", action="store_true", help="do not store CRC-32 checksums in meta_info.txt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.dst and not args.src:
        p.error("--dst needs --src")
    if args.write_meta and not args.shape:
        p.error("--write-meta needs --shape H,W,C")
    return args


def _remove_own_temporary(dst: Path) -> None:
    """The temporary database of this process next to ``dst`` (normally already removed by the writer)."""
    with stop_signals_ignored():
        discard(dst.parent / f".{dst.name}.tmp-{os.getpid()}")


def main(argv: list[str] | None = None) -> int:
    """Exit 0: done (``--check``: no problem); 1: ``--check`` found problems; 2: refused, or the build failed
    (nothing written); 128 + N: stopped by signal N (SIGINT, SIGTERM, SIGHUP)."""
    args = parse_args(argv)
    try:
        with raise_on_stop_signals():
            return _run(args)
    except KeyboardInterrupt as exc:
        if args.dst:
            dst = Path(args.dst).expanduser()
            _remove_own_temporary(dst)
            state = "left as it was" if dst.exists() else "not created"
            done = (
                f"nothing was written ({args.dst} is {state}; the partial database was removed): run the same "
                "command again to build it"
            )
        elif args.write_meta:
            done = f"{Path(args.write_meta) / 'meta_info.txt'} is unchanged (it is written in one step)"
        else:
            done = "the check was not finished"
        print(f"create_lmdb: stopped by {stop_name(exc)}: {done}", file=sys.stderr)
        return stop_exit_code(exc)
    except StvsrError as exc:
        print(f"create_lmdb: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write outside the checked paths (e.g. meta_info.txt of --write-meta)
        print(f"create_lmdb: {describe_write_error(exc, exc.filename or args.dst or args.write_meta)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.check:
        bad = 0
        for path in args.check:
            problems = check_lmdb(path, progress=not args.quiet)
            for line in problems:
                print(f"create_lmdb: {path}: {line}", file=sys.stderr)
            print(f"create_lmdb: {path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
            bad += len(problems)
        return 1 if bad else 0
    if args.write_meta:
        n = meta_from_database(args.write_meta, args.shape)
        print(f"create_lmdb: wrote {Path(args.write_meta) / 'meta_info.txt'} ({n} keys)")
        return 0
    if args.workers < 1:
        raise DataError(f"--workers {args.workers}: give 1 or more processes")
    if args.batch < 1:
        raise DataError(f"--batch {args.batch}: give 1 or more values per transaction")
    n = build_lmdb(
        args.src,
        args.dst,
        args.list,
        args.workers,
        args.batch,
        args.overwrite,
        not args.no_checksum,
        args.skip_missing,
        progress=not args.quiet,
    )
    print(f"create_lmdb: wrote {n} frames to {args.dst}")
    return 0
