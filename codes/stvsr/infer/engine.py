"""Run a model over a whole sequence as a stream: overlapping windows of LR frames, outputs stitched in order.

Windows are those of the evaluation protocol (its default 7 HR frames / stride 6 and ``tail='all'``), planned
on the fly by :func:`stvsr.runner.stream_windows` because a stream's length is not known in advance:
``window`` LR frames (4 by default, the frames the official ZSM/STDAN test scripts feed), consecutive windows
sharing one LR frame, and a last window ending at the last frame (it may overlap its predecessor more). Each
output frame is taken from the first window that produces it, so N input frames give ``(N-1)*t+1`` output
frames (``t`` the time factor, 2: 2N-1). Only the current window's LR frames are held (a deque of ``window``
frames) and output frames are written as soon as a window is done, so memory does not grow with length.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from stvsr.archs import time_factor_models
from stvsr.metrics import quantize
from stvsr.runner import DEFAULT_OVERLAP, HR_WINDOW, ModelFacts, stream_windows, time_factor_forward, window_forward
from stvsr.signals import stop_exit_code, stop_name

from .media import FolderSink, InferError, MediaInfo, VideoSink, check_writable, is_video_path, open_source

logger = logging.getLogger(__name__)

__all__ = ["InferReport", "InferStopped", "WindowRunner", "infer_video", "upsample_stream"]

DEFAULT_WINDOW = (HR_WINDOW + 1) // 2  # 4 LR frames: the protocol's 7-frame window, every other frame
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class InferStopped(KeyboardInterrupt):
    """:func:`infer_video` stopped by a stop signal (SIGINT / Ctrl-C, SIGTERM, SIGHUP) while writing: a partial
    video was removed (its temporary file; the final name is untouched), frames already written to a folder stay.
    ``signal`` is the signal's name, ``exit_code`` 128 + its number, ``frames`` the output frames written."""

    def __init__(self, cause: BaseException, output: MediaInfo, frames: int) -> None:
        self.signal = stop_name(cause)
        self.exit_code = stop_exit_code(cause)
        self.output = output
        self.frames = frames
        super().__init__(self.describe())

    def describe(self) -> str:
        how = "Ctrl-C, SIGINT" if self.signal == "SIGINT" else self.signal
        if self.output.kind == "video":
            kept = f"nothing kept: the partial video ({self.frames} frames) was removed, {self.output.path} untouched"
        else:
            kept = f"the {self.frames} frames written are kept in {self.output.path}"
        return f"stopped by a signal ({how}) after {self.frames} output frames; {kept}"


class WindowRunner:
    """One window of uint8 RGB LR frames -> its uint8 RGB output frames ((N-1)*time_factor+1 of them).

    Pads to the model's size multiple and tiles (``tile``/``tile_overlap`` LR pixels) with
    :func:`stvsr.runner.window_forward`, as the evaluator does. ``time_factor`` other than 2 needs a model with
    ``supports_time_factor`` (its ``forward_times(lqs, time_factor)``). ``precision`` fp16/bf16 runs the model
    under CUDA autocast.
    """

    def __init__(
        self,
        model: nn.Module,
        time_factor: int = 2,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_OVERLAP,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        pad_mode: str = "zero",
    ) -> None:
        self.device = torch.device(device)
        if precision not in PRECISIONS:
            raise InferError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if PRECISIONS[precision] is not None and self.device.type != "cuda":
            raise InferError(f"--{precision} runs on CUDA only: add --device cuda (or drop --{precision})")
        if not isinstance(time_factor, int) or time_factor < 2:
            raise InferError(f"--time-factor {time_factor}: expected an integer >= 2 (e.g. 2, 4 or 8)")
        name = type(model).__name__
        facts = ModelFacts.of(model)
        if time_factor != 2 and not facts.supports_time_factor:
            raise InferError(
                f"--time-factor {time_factor}: {name} produces one intermediate frame per pair only (x2); "
                f"other time factors need a model with forward_times ({', '.join(time_factor_models())})"
            )
        if tile is not None and tile < 1:
            raise InferError(f"--tile {tile}: expected a positive number of LR pixels")
        if tile is not None and not 0 <= tile_overlap < tile:
            raise InferError(f"--tile-overlap {tile_overlap}: must be >= 0 and smaller than --tile {tile}")
        self.model = model.to(self.device).eval()
        self.time_factor = time_factor
        self.precision = precision
        self.scale = facts.upscale
        self.fixed_frames = facts.input_frames
        forward = time_factor_forward(self.model, time_factor)
        multiple = facts.size_multiple
        self._run = window_forward(forward, self.scale, multiple, multiple, pad_mode, tile, tile_overlap)

    def output_count(self, n: int) -> int:
        return (n - 1) * self.time_factor + 1

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        n = len(frames)
        if self.fixed_frames and n != self.fixed_frames:
            raise InferError(
                f"{type(self.model).__name__} takes exactly {self.fixed_frames} LR frames per call, got {n} "
                f"(an input shorter than {self.fixed_frames} frames cannot be upsampled by it)"
            )
        x = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2)[None].float().div_(255.0)
        dtype = PRECISIONS[self.precision]
        autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            y = self._run(x)
        h, w = frames[0].shape[:2]
        expected = (1, self.output_count(n), 3, self.scale * h, self.scale * w)
        if tuple(y.shape) != expected:
            raise InferError(
                f"{type(self.model).__name__} returned {tuple(y.shape)} for {n} frames; expected {expected}"
            )
        return quantize(y[0].float().permute(0, 2, 3, 1).cpu().numpy())


def upsample_stream(
    frames: Iterable[np.ndarray], runner: Callable[[list[np.ndarray]], np.ndarray], window: int, time_factor: int = 2
) -> Iterator[np.ndarray]:
    """Output frames, in order, of a stream of LR frames: ``(N-1)*time_factor+1`` for N inputs."""
    next_out = 0
    for start, batch in stream_windows(frames, window):
        if len(batch) < 2:
            raise InferError("the input has a single frame: at least 2 are needed to interpolate between them")
        out = runner(batch)
        for k in range(next_out - start * time_factor, len(out)):
            yield out[k]
        next_out = (start + len(batch) - 1) * time_factor + 1


def _same_size(frames: Iterable[np.ndarray], info: MediaInfo) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if frame.shape[:2] != (info.height, info.width):
            raise InferError(
                f"input {info.path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, the first is "
                f"{info.width}x{info.height}: every frame must have the same size"
            )
        yield frame


@dataclass
class InferReport:
    """What went in and what came out."""

    input: MediaInfo
    output: MediaInfo
    input_frames: int
    output_frames: int
    seconds: float
    audio: str  # 'copied (aac)', 'none', 'dropped (...)'
    windows: int

    def describe(self) -> str:
        fps = self.output_frames / self.seconds if self.seconds > 0 else float("nan")
        return "\n".join(
            [
                f"input:  {self.input.path}: {self.input.describe(self.input_frames)}",
                f"output: {self.output.path}: {self.output.describe(self.output_frames)}",
                f"audio:  {self.audio}",
                f"time:   {self.seconds:.1f} s, {self.windows} windows, {fps:.2f} output frames/s, "
                + f"{self.input_frames / max(self.seconds, 1e-9):.2f} input frames/s",
            ]
        )


def infer_video(
    model: nn.Module,
    input: str | Path,
    output: str | Path,
    *,
    window: int = DEFAULT_WINDOW,
    time_factor: int = 2,
    keep_frame_rate: bool = False,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    fps: float | Fraction | None = None,
    codec: str | None = None,
    crf: int | None = 18,
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> InferReport:
    """Upsample a video file or folder of frames into a video file or folder of PNG frames (see the module doc).

    The output rate is ``time_factor`` x the input rate (same duration), or the input rate with
    ``keep_frame_rate`` (slow motion; the audio track is then dropped, it would no longer fit). ``fps`` sets the
    input rate (folders: default 25). Every user-fixable problem raises :class:`InferError` before the first
    network call where it can be known then.
    """
    if window < 2:
        raise InferError(f"--window {window}: expected >= 2 LR frames")
    fixed = ModelFacts.of(model).input_frames  # a model that takes exactly this many LR frames (RSTT: 4)
    if fixed and window != fixed:
        raise InferError(
            f"--window {window}: {type(model).__name__} takes exactly {fixed} LR frames per call: use --window {fixed}"
        )
    runner = WindowRunner(model, time_factor, tile, tile_overlap, device, precision)
    in_path, out_path = Path(input).expanduser(), Path(output).expanduser()
    if in_path.exists() and out_path.exists() and in_path.resolve() == out_path.resolve():
        raise InferError(f"output {out_path} is the input: choose another path")
    source = open_source(in_path, Fraction(fps).limit_denominator(1001) if fps else None)
    try:
        check_writable(out_path, overwrite)
        info = source.info
        rate = info.rate if keep_frame_rate else info.rate * time_factor
        out_info = MediaInfo(
            str(out_path),
            "video" if is_video_path(out_path) else "frames",
            runner.scale * info.width,
            runner.scale * info.height,
            rate,
            runner.output_count(info.frames) if info.frames else None,
            color=dict(info.color),
            start_time=info.start_time,
        )
        copy_audio = None
        audio_note = "none in the input"
        if info.audio:
            if not audio:
                audio_note = f"dropped ({info.audio}; --no-audio)"
            elif out_info.kind != "video":
                audio_note = f"dropped ({info.audio}; the output is a folder of frames)"
            elif keep_frame_rate:
                audio_note = f"dropped ({info.audio}; slow motion: --keep-frame-rate changes the duration)"
            else:
                copy_audio = source.audio_stream
        if out_info.kind == "video":
            sink = VideoSink(out_path, out_info, codec, crf, pix_fmt, copy_audio, dict(source.container.metadata)
                             if hasattr(source, "container") else None)  # fmt: skip
            out_info.codec = sink.stream.codec_context.name
            if copy_audio is not None:
                audio_note = f"copied ({info.audio})"
                if sink.audio is None:
                    audio_note = f"dropped ({info.audio}; a {out_path.suffix} file cannot hold it)"
        else:
            sink = FolderSink(out_path, out_info)
            out_info.codec = "png"
        bar = None
        if progress:
            bar = tqdm(total=out_info.frames, unit="frame", desc="stvsr-infer", dynamic_ncols=True)
        counter = _Counter(runner)
        start = time.perf_counter()
        n_in = 0

        def counted(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal n_in
            for frame in frames:
                n_in += 1
                yield frame

        mux_audio = sink.mux_audio if copy_audio is not None and getattr(sink, "audio", None) is not None else None
        try:
            frames = counted(_same_size(source.frames(mux_audio), info))
            for hr in upsample_stream(frames, counter, window, time_factor):
                sink.write(hr)
                if bar is not None:
                    bar.update(1)
            if n_in == 0:
                raise InferError(f"input {in_path}: no frame could be decoded")
            sink.close()
        except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP (stvsr.signals): remove the temporary video
            sink.abort()
            raise InferStopped(exc, out_info, sink.count) from None
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
    finally:
        source.close()
    return InferReport(info, out_info, n_in, sink.count, seconds, audio_note, counter.calls)


class _Counter:
    """Counts the windows run (for the report)."""

    def __init__(self, runner: Callable[[list[np.ndarray]], np.ndarray]) -> None:
        self.runner, self.calls = runner, 0

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        return self.runner(frames)
