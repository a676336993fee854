"""The experiment folder of a training run: made (or archived, or reused) and locked, one run at a time.

:func:`prepare_experiment` creates ``experiments/<name>/`` and saves the resolved options there as
``options.yml``; an existing folder of another run is archived with a timestamp suffix (never silently
overwritten); one that holds no checkpoint (a run that failed before its first save) is reused.

One training run per experiment folder at a time:
A run holds an exclusive ``flock`` on ``.<name>.lock`` beside its folder ``experiments/<name>/`` (beside, not
inside: the folder may be archived and recreated while the lock stands) from before it looks at the folder
until it ends. A second run of the same experiment, resumed or not, is refused at once with the holder's PID,
host and start time, instead of archiving the live run's folder and writing checkpoints where it writes. The
kernel drops the lock when the process dies, however it dies, so a stale lock file never blocks anyone; the
file is removed when the run ends normally.

``flock`` is local to a machine on some network file systems: runs of one experiment started on two machines
at once are not told apart there.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

from stvsr.atomic import atomic_write
from stvsr.errors import StvsrError
from stvsr.model.checkpoints import list_checkpoints

from .options import dump


class ExperimentBusyError(StvsrError, RuntimeError):
    """Another process is training this experiment now."""


class ExperimentLock:
    """The lock of the experiment folder ``exp``; :meth:`acquire` or raise, :meth:`release` (idempotent)."""

    def __init__(self, exp: str | os.PathLike) -> None:
        exp = Path(exp)
        self.exp = exp
        self.path = exp.parent / f".{exp.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> ExperimentLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ExperimentBusyError(
                    f"experiment {self.exp} is in use by another training run ({holder}): wait for it to end, or "
                    f"give this run another name (--set name=...)"
                ) from None
            if self._same_file(fd):  # not a file that its previous holder removed while we opened it
                break
            os.close(fd)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}".encode(), 0)
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody can be between open and flock on it
        os.close(self._fd)
        self._fd = None


def holds_checkpoints(exp: Path) -> bool:
    """Whether the experiment folder ``exp`` holds a checkpoint of the trainer (``models/iter_*.pth``)."""
    return bool(list_checkpoints(exp / "models"))


def prepare_experiment(opt: dict[str, Any], resume: bool = False) -> Path:
    """Create ``experiments/<name>/`` and save the resolved options into it as ``options.yml``. Unless resuming,
    an existing folder with checkpoints is archived with a timestamp suffix; one without (a run that stopped
    before its first checkpoint) is reused. The caller holds the experiment's lock
    (:class:`stvsr.train.experiment.ExperimentLock`), so the folder is no live run's."""
    exp = Path(opt["path"]["experiments_root"])
    if exp.exists() and not resume and holds_checkpoints(exp):
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        archived = exp.with_name(f"{exp.name}_archived_{stamp}")
        n = 1
        while archived.exists():
            archived = exp.with_name(f"{exp.name}_archived_{stamp}_{n}")
            n += 1
        exp.rename(archived)
        # once: printed (the trainer's log file does not exist yet; a logger.warning as well printed it twice)
        print(f"Experiment folder {exp} exists: archived to {archived}", flush=True)
    (exp / "models").mkdir(parents=True, exist_ok=True)
    atomic_write(exp / "options.yml", dump(opt))
    return exp
