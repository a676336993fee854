"""Stop signals, handled the same way by every command: SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, Slurm
before its time limit) and SIGHUP (the SSH session or terminal went away).

- :func:`raise_on_stop_signals`: inside the block each of the three raises :class:`StopSignal` (a
  ``KeyboardInterrupt``) in the main thread, as Ctrl-C does; the command's ``except KeyboardInterrupt`` path then
  keeps what is done (a partial report, the finished frames), removes its temporaries and says what was kept.
- :class:`DeferredStop`: for the training loop, which must not stop in the middle of a step: a signal only
  sets :attr:`DeferredStop.signum`; the loop finishes its step, saves and stops. A second Ctrl-C stops at once.
- :func:`stop_signals_ignored` / :func:`stop_signals_deferred`: blocks where a stop must not cut a cleanup
  short, or must wait until a worker process has been forked.
- :func:`ignore_stop_signals`: for worker processes (DataLoader, :class:`stvsr.workers.WorkerMap`), which leave the
  decision to their parent (Ctrl-C reaches the whole process group; a worker killed by it would only add a
  traceback).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopSignal(KeyboardInterrupt):
    """A stop signal turned into an exception; ``signum``, its ``name`` and the conventional ``exit_code``
    (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def stop_name(exc: BaseException) -> str:
    """The signal behind an interruption: ``SIGTERM``, ... (a plain KeyboardInterrupt is Ctrl-C: ``SIGINT``)."""
    return exc.name if isinstance(exc, StopSignal) else "SIGINT"


def stop_exit_code(exc: BaseException) -> int:
    """128 + the signal's number (130 for a plain KeyboardInterrupt)."""
    return exc.exit_code if isinstance(exc, StopSignal) else 128 + signal.SIGINT


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise(signum: int, _frame: Any) -> None:
    raise StopSignal(signum)


@contextmanager
def raise_on_stop_signals() -> Iterator[None]:
    """Inside the block, SIGINT, SIGTERM and SIGHUP raise :class:`StopSignal` (main thread only; elsewhere the
    block runs unchanged). The previous handlers come back afterwards."""
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(*_args: Any) -> None:
    """Worker processes ignore the stop signals (their parent stops them); a DataLoader ``worker_init_fn``, or the
    ``initializer`` of :class:`stvsr.workers.WorkerMap`. Not for ``multiprocessing.Pool``: its ``terminate()``
    stops workers with SIGTERM, which they would ignore, and waits for ever."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class DeferredStop:
    """Between :meth:`install` and :meth:`restore` (main thread only): a stop signal sets :attr:`signum`
    instead of stopping the process; the caller finishes its unit of work, saves and stops. A second SIGINT
    raises :class:`StopSignal` at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if _in_main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise StopSignal(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        message = f"\n{name}: finishing the current step, then saving a checkpoint (Ctrl-C again stops at once)\n"
        try:
            os.write(sys.stderr.fileno(), message.encode())  # not logging: it takes locks, unsafe in a handler
        except OSError:  # SIGHUP: the terminal may be gone
            pass

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP are ignored inside the block (main thread only): a cleanup that a second Ctrl-C
    (or a ``timeout`` forwarding it) would cut short runs to its end. Keep such blocks short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Inside the block a stop signal is only noted; it is delivered again (to whatever handler is then in place)
    when the block ends. Around ``fork()``: Python runs its at-fork hooks (e.g. ``logging``'s lock release) as
    callbacks whose exceptions are printed and dropped, so a StopSignal raised there would be lost (seen: a
    Ctrl-C that came while a worker was being started did not stop the run)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])
