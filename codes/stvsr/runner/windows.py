"""Which frames each model call sees: windows of ``size`` frames, ``stride`` apart, and a tail window.

:func:`window_starts` is the one rule: starts 0, ``stride``, ``2 * stride``, ... while a window fits, then
(``cover_tail``) one window ending on the last frame when frames are left over; it may overlap its predecessor
more. The evaluation protocol plans a clip's HR windows with it (7 frames, stride 6), ``VideoFolder`` its
windowed items, and inference a stream's LR windows (:func:`stream_windows`: 4 LR frames, stride 3, the same
windows as the protocol's 7 / 6 on the HR frames).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["HR_WINDOW", "HR_WINDOW_STRIDE", "stream_windows", "window_starts"]

HR_WINDOW = 7  # the field's test window: 7 HR frames (LR frames 0, 2, 4, 6 in at x2 time) ...
HR_WINDOW_STRIDE = 6  # ... successive windows sharing one frame

T = TypeVar("T")


def window_starts(length: int, size: int, stride: int, cover_tail: bool = True) -> list[int]:
    """Start indices of the ``size``-frame windows over ``length`` frames (see the module docstring); none when
    ``length < size``. Without ``cover_tail`` frames after the last full stride are left uncovered."""
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be >= 1, got size {size}, stride {stride}")
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if cover_tail and starts[-1] + size < length:
        starts.append(length - size)
    return starts


def stream_windows(frames: Iterable[T], size: int, stride: int | None = None) -> Iterator[tuple[int, list[T]]]:
    """``(start, frames)`` of the windows :func:`window_starts` gives for a stream of N ``frames`` whose length is
    known only at its end, holding at most ``size`` frames; ``stride`` defaults to ``size - 1`` (consecutive
    windows share one frame). A stream shorter than ``size`` is one window of all its frames."""
    stride = size - 1 if stride is None else stride
    if size < 2 or not 1 <= stride < size:
        raise ValueError(f"window must be >= 2 frames with a stride in 1 .. size - 1, got size {size}, stride {stride}")
    held: deque[T] = deque(maxlen=size)
    next_start, last, n = 0, -1, 0
    for n, frame in enumerate(frames, 1):
        held.append(frame)
        if n == next_start + size:  # the window starting at next_start is complete
            yield next_start, list(held)
            last, next_start = next_start, next_start + stride
    if n == 0:
        return
    for start in window_starts(n, min(size, n), stride):
        if start > last:  # the tail window (or the whole of a short stream)
            yield start, list(held)[start - n :]
