"""Worker processes that a stop signal never leaves half-done: :class:`WorkerMap`, used by the data scripts."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from .signals import ignore_stop_signals, stop_signals_deferred, stop_signals_ignored


class WorkerMap:
    """``fn`` over ``items`` in ``workers`` processes, at most ``4 * workers`` items handed out at a time; iterate
    for the results (in item order when ``ordered``, else as they finish; an exception of ``fn`` is raised here).

    Used as a context manager. Workers ignore the stop signals (:func:`stvsr.signals.ignore_stop_signals`) and
    are never killed: on leaving the block (normally, by an exception or by a stop signal in the parent) the
    items not started are cancelled and the workers finish the item in hand, so a frame being written is
    completed, never half-written. (``multiprocessing.Pool`` stops its workers with SIGTERM, which they ignore:
    its ``terminate()`` would wait for ever.) :meth:`leftovers` gives the results that finished after the
    iteration stopped.
    """

    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ordered: bool = True) -> None:
        self.fn, self.items, self.workers, self.ordered = fn, items, workers, ordered
        self._executor: ProcessPoolExecutor | None = None
        self._futures: deque[Future] = deque()

    def __enter__(self) -> WorkerMap:
        self._executor = ProcessPoolExecutor(self.workers, initializer=ignore_stop_signals)
        return self

    def __iter__(self) -> Iterator[Any]:
        window = 4 * self.workers
        pending = self._futures
        for item in self.items:
            with stop_signals_deferred():  # a submit may fork a worker
                pending.append(self._executor.submit(self.fn, item))
            while len(pending) >= window:
                yield self._next()
        while pending:
            yield self._next()

    def _next(self) -> Any:
        pending = self._futures
        if self.ordered:
            result = pending[0].result()
            pending.popleft()
            return result
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        future = next(f for f in pending if f in done)
        pending.remove(future)
        return future.result()

    def __exit__(self, *exc: object) -> None:
        with stop_signals_ignored():
            for future in self._futures:
                future.cancel()
            self._executor.shutdown(wait=True, cancel_futures=True)

    def leftovers(self) -> list[Any]:
        """Results of the items that finished but were not taken (after the block ended early)."""
        return [f.result() for f in self._futures if f.done() and not f.cancelled() and f.exception() is None]
