"""The STVSR test protocol as data (docs/evaluation.md), and what follows from it.

- :class:`Protocol`: every setting that changes a published number (colour, crop_border, window, stride,
  tail rule, padding, self-ensemble, degradation, scale). Printed at the top of every report and written
  into the CSV header (:meth:`Protocol.describe`).
- :func:`plan_windows`: which LR frames each window feeds and which of its outputs are scored.
  ``tail='all'`` (default) scores every frame once (171 on Vid4, as STDAN, TMNet and RSTT);
  ``tail='official_zsm'`` reproduces the official Zooming Slow-Mo script (``test_index_generation`` after
  commit c86c6b9), whose tail window is never added: 160 of 171 Vid4 frames.
- :class:`Results`: per-frame metrics -> per-clip means -> mean over clips (the papers' number), plus the
  pooled mean over all frames; the report text and the per-frame CSV (written atomically).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stvsr.atomic import atomic_write
from stvsr.registry import did_you_mean
from stvsr.runner import DEFAULT_OVERLAP, HR_WINDOW, HR_WINDOW_STRIDE, PAD_MODES, window_starts
from stvsr.schema import OptionsError

__all__ = [
    "METRICS",
    "Protocol",
    "Results",
    "Window",
    "plan_windows",
]

COLORS = ("y", "rgb")
TAILS = ("all", "official_zsm")
DEGRADATIONS = ("BI", "BD", "folder")
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


@dataclass(frozen=True)
class Protocol:
    """Evaluation settings; the defaults are the full STVSR protocol (Y channel, border 0, 7/6 windows, every
    frame scored, zero padding to the model's multiple, no self-ensemble, BI x4).

    ``pad_multiple`` None means the model's ``size_divisor`` (STDAN's official script pads to 8 for every
    model it compared, see docs/evaluation.md: set 8 to reproduce that). ``degradation`` says
    where the LR frames come from: 'BI' or 'BD' made from GT by ``stvsr.data.degrade``, or 'folder' (read from
    ``dataroot_LQ``; then say in ``lr_source`` what made them). ``tile`` (LR pixels, None = whole frames) and
    ``tile_overlap`` run the model on overlapping spatial tiles (:mod:`stvsr.runner.tiling`) to bound memory;
    they change the output slightly and are printed only when set. ``time_factor`` k: the network sees every k-th
    frame of a window and makes the k - 1 between each pair (k = 2, the default, is x2 in time; TMNet's Adobe240
    protocol is window 7, stride 6, k = 6: the first and last frame in, t = 1/6 .. 5/6), which needs a model
    with ``forward_times``.
    """

    color: str = "y"
    crop_border: int = 0
    window: int = HR_WINDOW
    stride: int = HR_WINDOW_STRIDE
    tail: str = "all"
    pad_multiple: int | None = None
    pad_mode: str = "zero"
    self_ensemble: bool = False
    degradation: str = "BI"
    scale: int = 4
    lr_source: str = ""
    tile: int | None = None
    tile_overlap: int = DEFAULT_OVERLAP
    time_factor: int = 2

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise OptionsError(problems=problems)

    def problems(self) -> list[str]:
        """Every setting out of range, each as ``protocol.KEY = VALUE: why`` (a setting that depends on another
        one that is already wrong is not judged)."""
        problems: list[str] = []

        def bad(key: str, why: str) -> None:
            problems.append(f"protocol.{key} = {getattr(self, key)!r}: {why}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for key, choices in (("color", COLORS), ("tail", TAILS), ("pad_mode", PAD_MODES),
                             ("degradation", DEGRADATIONS)):  # fmt: skip
            if getattr(self, key) not in choices:
                bad(key, f"use one of {', '.join(choices)}")
        if not is_int(self.crop_border) or self.crop_border < 0:
            bad("crop_border", "expected a non-negative integer (pixels removed on each side before scoring)")
        window_ok = is_int(self.window) and self.window >= 3 and self.window % 2 == 1
        if not window_ok:
            bad("window", "expected an odd integer >= 3 (HR frames per window; the network sees its even frames)")
        if not is_int(self.time_factor) or self.time_factor < 2:
            bad("time_factor", "expected an integer >= 2 (the network sees every time_factor-th frame of a window)")
        elif window_ok and (self.window - 1) % self.time_factor:
            bad(
                "time_factor",
                f"must divide window - 1 = {self.window - 1} (the network sees every time_factor-th frame of a "
                "window, the first and the last included)",
            )
        if not is_int(self.stride) or self.stride < 1:
            bad("stride", "expected a positive integer (frames between the first frames of successive windows)")
        elif window_ok and self.stride > self.window - 1:
            bad("stride", f"must be between 1 and window - 1 = {self.window - 1}")
        if not is_int(self.scale) or self.scale < 1:
            bad("scale", "expected a positive integer")
        if self.pad_multiple is not None and (not is_int(self.pad_multiple) or self.pad_multiple < 1):
            bad("pad_multiple", "expected a positive integer or null (the model's size_divisor)")
        tile_ok = self.tile is None or (is_int(self.tile) and self.tile >= 1)
        if not tile_ok:
            bad("tile", "expected a positive number of LR pixels or null (no tiling)")
        if not is_int(self.tile_overlap) or self.tile_overlap < 0:
            bad("tile_overlap", "expected a non-negative integer (LR pixels)")
        elif self.tile is not None and tile_ok and self.tile_overlap >= self.tile:
            bad("tile_overlap", f"must be smaller than tile = {self.tile}")
        if not isinstance(self.self_ensemble, bool):
            bad("self_ensemble", "expected true or false")
        if not isinstance(self.lr_source, str):
            bad("lr_source", "expected a text")
        return problems

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> Protocol:
        """Build from an options mapping; one :class:`~stvsr.schema.OptionsError` (a ``ValueError``) lists every
        problem: unknown keys (each naming the nearest valid one) and values out of range."""
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        problems = []
        for key in list(options):
            if key not in names:
                hint = did_you_mean(key, names)
                problems.append(f"protocol.{key}: unknown key.{hint} Valid keys: {', '.join(names)}")
                del options[key]
        degradation = options.get("degradation")
        if isinstance(degradation, str):
            options["degradation"] = "folder" if degradation.lower() == "folder" else degradation.upper()
        try:
            protocol = cls(**options)
        except OptionsError as exc:
            problems += exc.problems
        if problems:
            raise OptionsError(problems=problems)
        return protocol

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_pad(self, size_divisor: int) -> int:
        return int(self.pad_multiple or size_divisor or 1)

    def describe(self, size_divisor: int | None = None) -> str:
        """One line: every setting, ``key=value``, with the padding multiple resolved when the model is known."""
        items = self.as_dict()
        if items["pad_multiple"] is None and size_divisor is not None:
            items["pad_multiple"] = f"{self.resolved_pad(size_divisor)} (model size_divisor)"
        if not items["lr_source"]:
            del items["lr_source"]
        if items["tile"] is None:
            del items["tile"], items["tile_overlap"]
        if items["time_factor"] == 2:  # the x2 of every STVSR table; printed only when another is asked
            del items["time_factor"]
        return ", ".join(f"{k}={v}" for k, v in items.items())


@dataclass(frozen=True)
class Window:
    """One network call: HR frames ``start .. start + window - 1``; ``inputs`` are the LR frames it sees
    (every other one; every ``time_factor``-th in general), ``scored`` the (output position, frame index) pairs
    that are scored from it."""

    start: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    scored: tuple[tuple[int, int], ...] = field(default=())


def with_lr_source(protocol: dict[str, Any], dataroot_lq: str | None, degradation: str | None) -> dict[str, Any]:
    """The protocol's ``degradation`` (and ``lr_source``) from where the LR frames come from: read from the
    ``dataroot_LQ`` folder ('folder'), or made from GT by ``degradation`` (BI by default)."""
    if dataroot_lq:
        protocol["degradation"] = "folder"
        protocol.setdefault("lr_source", str(dataroot_lq))
    else:
        protocol["degradation"] = str(degradation or "BI").upper()
    return protocol


def plan_windows(length: int, protocol: Protocol | None = None, name: str = "clip") -> list[Window]:
    """The windows of a clip of ``length`` frames; each frame is scored at most once (from the first window
    that covers it). ``official_zsm`` leaves uncovered tail frames unscored."""
    protocol = protocol or Protocol()
    if length < protocol.window:
        raise ValueError(
            f"clip '{name}' has {length} frames, fewer than the protocol's window of {protocol.window}: "
            f"remove the clip or set protocol.window to an odd number <= {length}"
        )
    seen: set[int] = set()
    plan = []
    for start in window_starts(length, protocol.window, protocol.stride, cover_tail=protocol.tail == "all"):
        outputs = tuple(range(start, start + protocol.window))
        scored = tuple((pos, t) for pos, t in enumerate(outputs) if t not in seen)
        seen.update(outputs)
        plan.append(Window(start, outputs[:: protocol.time_factor], outputs, scored))
    return plan


def scored_count(length: int, protocol: Protocol | None = None) -> int:
    return sum(len(w.scored) for w in plan_windows(length, protocol))


@dataclass
class FrameResult:
    clip: str
    index: int
    name: str
    window_start: int
    values: dict[str, float]


class Results:
    """Per-frame metrics and their averages: per clip, then the mean over clips (papers), and pooled."""

    def __init__(self, protocol: Protocol, model: str = "", size_divisor: int | None = None) -> None:
        self.protocol = protocol
        self.model = model
        self.size_divisor = size_divisor
        self.frames: list[FrameResult] = []
        self.clip_lengths: dict[str, int] = {}

    def add(self, clip: str, index: int, name: str, window_start: int, values: Mapping[str, float]) -> None:
        self.frames.append(FrameResult(clip, index, name, window_start, dict(values)))

    def clips(self) -> list[str]:
        return list(dict.fromkeys(f.clip for f in self.frames))

    def clip_mean(self, clip: str) -> dict[str, float]:
        rows = [f.values for f in self.frames if f.clip == clip]
        return {k: _mean(r[k] for r in rows) for k in METRICS}

    def overall(self) -> dict[str, float]:
        """Mean over clips of the clip means (the published number)."""
        means = [self.clip_mean(c) for c in self.clips()]
        return {k: _mean(m[k] for m in means) for k in METRICS}

    def pooled(self) -> dict[str, float]:
        """Mean over all scored frames (reported too; not what the papers average)."""
        return {k: _mean(f.values[k] for f in self.frames) for k in METRICS}

    def folder_mean(self) -> dict[str, float] | None:
        """Mean over sequence folders of their clips' means (clip '00001/0266' is in folder '00001'): the official
        RSTT Vimeo-90K-T averaging. None when no clip name has a folder part."""
        groups: dict[str, list[dict[str, float]]] = {}
        for clip in self.clips():
            if "/" not in clip:
                return None
            groups.setdefault(clip.split("/")[0], []).append(self.clip_mean(clip))
        if not groups:
            return None
        folders = [{k: _mean(m[k] for m in means) for k in METRICS} for means in groups.values()]
        return {k: _mean(f[k] for f in folders) for k in METRICS}

    def header_lines(self) -> list[str]:
        lines = [f"protocol: {self.protocol.describe(self.size_divisor)}"]
        if self.model:
            lines.insert(0, f"model: {self.model}")
        return lines

    def report(self) -> str:
        """The protocol, the per-clip table, the overall and pooled lines."""
        primary = self.protocol.color
        out = [*self.header_lines(), ""]
        head = f"{'clip':<16} {'scored':>9} {'PSNR-Y':>9} {'SSIM-Y':>8} {'PSNR-RGB':>9} {'SSIM-RGB':>9}"
        out.append(head)
        out.append("-" * len(head))
        total = 0
        for clip in self.clips():
            m = self.clip_mean(clip)
            n = sum(1 for f in self.frames if f.clip == clip)
            total += n
            of = self.clip_lengths.get(clip)
            count = f"{n}/{of}" if of else str(n)
            out.append(f"{clip:<16} {count:>9} {_row(m)}")
        out.append("-" * len(head))
        of_total = sum(self.clip_lengths.values()) if self.clip_lengths else None
        count = f"{total}/{of_total}" if of_total else str(total)
        out.append(f"{'mean of clips':<16} {count:>9} {_row(self.overall())}")
        out.append(f"{'mean of frames':<16} {count:>9} {_row(self.pooled())}")
        folders = self.folder_mean()
        if folders is not None:  # Vimeo: the official RSTT script's average (clip -> sequence folder -> mean)
            out.append(f"{'mean of folders':<16} {count:>9} {_row(folders)}")
        o = self.overall()
        out.append(
            f"overall ({primary.upper()}): PSNR {o['psnr_' + primary]:.4f} dB  SSIM {o['ssim_' + primary]:.4f} "
            f"(mean over {len(self.clips())} clips of the per-clip means; {total} frames scored)"
        )
        return "\n".join(out)

    def csv_text(self) -> str:
        buf = io.StringIO()
        for line in self.header_lines():
            buf.write(f"# {line}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["clip", "frame", "name", "window_start", *METRICS])
        for f in self.frames:
            writer.writerow([f.clip, f.index, f.name, f.window_start, *(_fmt(f.values[k]) for k in METRICS)])
        for clip in self.clips():
            writer.writerow([clip, "mean", "", "", *(_fmt(v) for v in self.clip_mean(clip).values())])
        writer.writerow(["ALL", "mean_of_clips", "", "", *(_fmt(v) for v in self.overall().values())])
        writer.writerow(["ALL", "mean_of_frames", "", "", *(_fmt(v) for v in self.pooled().values())])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        return atomic_write(path, self.csv_text())


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else float("nan")


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def _row(m: Mapping[str, float]) -> str:
    return f"{m['psnr_y']:>9.4f} {m['ssim_y']:>8.4f} {m['psnr_rgb']:>9.4f} {m['ssim_rgb']:>9.4f}"
