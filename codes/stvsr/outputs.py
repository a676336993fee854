"""Where a command may write, checked before the work: a folder that can be written, a destination that does
not overlap its source, and a failed write said in one line.

Every command that writes (training, evaluation, inference, the data scripts) calls these before its first
computation, so that a read-only or full results folder, or a destination that would overwrite the frames it
reads, is found in a second instead of after hours, and never destroys data.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from stvsr.errors import StvsrError

PROBE_BYTES = 4096  # written and removed by the probe: a full file system refuses it


class OutputError(StvsrError, OSError):
    """An output that cannot or must not be written; the message names it and says what to do."""


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free on the file system of ``path`` (its nearest existing folder); None when unknown."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def describe_write_error(exc: OSError, path: str | os.PathLike) -> str:
    """One line for a failed write of ``path``: the reason, and for a full disk how much is free."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = free_space(path)
        if free is not None:
            reason += f" ({free / 2**20:.1f} MB free on its file system)"
    return f"cannot write {path}: {reason}"


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if needed and write (then remove) a small probe file in it; :class:`OutputError`
    naming ``what`` (e.g. ``'--results_root'``) when it is a file, read-only, or full."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: exists and is not a folder: give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot create the folder ({exc.strerror}): choose another") from None
    probe = folder / f".stvsr-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{what}: {describe_write_error(exc, folder)}: choose another folder or free space") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:  # a read-only file system: there is nothing to remove
            pass
    return folder


def _holds(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def refuse_overlap(src: str | os.PathLike, dst: str | os.PathLike, src_flag: str, dst_flag: str) -> None:
    """:class:`OutputError` when ``dst`` is ``src``, lies inside it, or holds it (links resolved): a tool
    writing ``dst`` would then overwrite or delete the data it reads."""
    s, d = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if s == d:
        relation = "is the same folder as"
    elif _holds(s, d):
        relation = "is inside"
    elif _holds(d, s):
        relation = "holds"
    else:
        return
    raise OutputError(
        f"{dst_flag} {dst} {relation} {src_flag} {src}: the output would overwrite or remove the input; "
        f"give {dst_flag} a folder outside {src_flag} (e.g. next to it)"
    )
