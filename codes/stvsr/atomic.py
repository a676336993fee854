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

Temporaries are named after the process that writes them: folders ``.NAME.tmp-PID``, files
``.NAME.tmp-PID-XXXXXXXX<suffix>`` (the suffix kept: some writers choose the format from it);
:func:`remove_stale_temporaries` deletes those left by killed processes. A committed file gets the permissions
a newly created file gets under the process's umask (usually 0644), not the 0600 of a private temporary: a
team reads each other's checkpoints, reports and videos.
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


def _writer_pid(tmp: Path, name: str) -> int | None:
    """The PID in a temporary's name (``.NAME.tmp-PID`` or ``.NAME.tmp-PID-XXXXXXXX<suffix>``), else None."""
    pid = tmp.name[len(f".{name}.tmp-") :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporaries next to ``path`` left by killed runs (their PID is gone).

    PIDs are those of this machine: on a folder shared between machines, give each run its own ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = _writer_pid(tmp, path.name)
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            logger.warning("removing %s, left by an interrupted run", tmp)
            discard(tmp)


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it; Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only read once per file)
    os.umask(mask)
    return mask


def temporary_sibling(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if needed); with ``folder``, the name
    ``.NAME.tmp-PID`` of a temporary folder, which does not exist yet (the writer creates it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if folder:
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private (0600); the file is for others to read too
    finally:
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
