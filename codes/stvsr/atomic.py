"""Atomic writes: a file or folder appears under its final name complete, or not at all.

Everything is first written under a temporary name in the same folder (same file system, so the final rename
is atomic), flushed to disk with ``fsync`` (files), then renamed onto the final name with ``os.replace``. If the
writer raises (or the process is killed), the final name is untouched: no truncated checkpoint, image, report
or LMDB is ever left under it, so code that skips existing outputs can trust what it finds.

- :func:`atomic_write`: text or bytes into a file.
- :func:`atomic_path`: a context manager that yields the temporary path for writers that need a path
  (``torch.save``, an LMDB environment, a folder of frames with ``folder=True``).
- :func:`temporary_sibling`, :func:`commit`, :func:`discard`: the three steps, for writers whose output stays
  open across calls (a video container).

Temporary folders are named ``.NAME.tmp-PID``; :func:`remove_stale_temporaries` deletes those left by killed
processes. Temporary files are ``.NAME.tmp-XXXXXXXX<suffix>`` (the suffix kept: some writers choose the format
from it).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the ``.NAME.tmp-PID`` folders next to ``path`` left by killed runs (their PID is gone).

    PIDs are those of this machine: on a folder shared between machines, give each run its own ``path``."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if tmp.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            logger.warning("removing %s, left by an interrupted run", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def temporary_sibling(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if needed); with ``folder``, the name
    ``.NAME.tmp-PID`` of a temporary folder, which does not exist yet (the writer creates it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        remove_stale_temporaries(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        if not directory:
            raise
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike, replace_folder: bool = True) -> Path:
    """Move the finished ``tmp`` onto ``path``: a file is fsynced and replaces any file there; a folder
    replaces an existing folder when ``replace_folder`` (the old one is moved aside, then deleted), else
    ``os.replace`` fails (``OSError``) if a non-empty folder is already there."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir():
        old = None
        if replace_folder and path.is_dir():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        _fsync(tmp)
        os.replace(tmp, path)
    _fsync(path.parent, directory=True)
    return path


def discard(tmp: str | os.PathLike) -> None:
    """Delete a temporary file or folder (no error if it is gone)."""
    tmp = Path(tmp)
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False, replace_folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; write there. When the block ends normally the result is
    committed to ``path`` (:func:`commit`); when it raises, the temporary is deleted and ``path`` is untouched."""
    tmp = temporary_sibling(path, folder)
    try:
        yield tmp
        commit(tmp, path, replace_folder)
    except BaseException:
        discard(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
