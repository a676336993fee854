"""Where a training run's records go: the console, ``experiments/<name>/train_<name>_<time>.log`` and TensorBoard.

The console and the log file hold the records of every stvsr module (data warnings, the model built, the
deformable offsets' divergence warning), not only the trainer's: the handlers go on the package's logger. Until
the experiment folder exists (it is made only once every check has passed), records wait in a buffer.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("stvsr.train")
log_root = logging.getLogger("stvsr")


def setup_logging() -> list[logging.Handler]:
    """The console, and a buffer that keeps the records until the experiment folder (and its log file) exists
    (:func:`attach_log_file`)."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    buffer = logging.handlers.MemoryHandler(capacity=10**6, flushLevel=logging.CRITICAL + 1)
    for handler in (console, buffer):
        log_root.addHandler(handler)
    log_root.setLevel(logging.INFO)
    log_root.propagate = False
    return [console, buffer]


def quiet_logging() -> list[logging.Handler]:
    """Processes other than rank 0 under torchrun: warnings and errors only, through the application's handlers."""
    log_root.setLevel(logging.WARNING)
    return []


def attach_log_file(handlers: list[logging.Handler], log_dir: Path, name: str) -> None:
    """A log file in the experiment folder, starting with the records buffered so far."""
    log_dir.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(log_dir / f"train_{name}_{time.strftime('%Y%m%d_%H%M%S')}.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for buffer in [h for h in handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        buffer.setTarget(file)
        buffer.flush()
        log_root.removeHandler(buffer)
        handlers.remove(buffer)
        buffer.close()
    log_root.addHandler(file)
    handlers.append(file)


def close_logging(handlers: list[logging.Handler]) -> None:
    """Remove the run's handlers; the package logger is as before the run (records propagate to the
    application's handlers)."""
    for handler in handlers:
        log_root.removeHandler(handler)
        handler.close()
    log_root.setLevel(logging.NOTSET)
    log_root.propagate = True


def open_tensorboard(log_dir: Path, enabled: bool) -> Any:
    """A SummaryWriter in ``log_dir/tb_logger``, or None (off, or tensorboard not installed: said once)."""
    if not enabled:
        return None
    try:
        import tensorboard  # noqa: F401 -- optional: imported only when a run asks for TensorBoard
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard logging off: the 'tensorboard' package is not installed (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(log_dir / "tb_logger"))
