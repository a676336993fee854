"""Run a model over test clips under a :class:`~stvsr.eval.protocol.Protocol` and score it.

``check_clips`` validates everything a user can get wrong (clip too short, GT frames of different sizes, LR
frames that are not GT/scale) from image headers only, before any network call; ``evaluate_clips`` then
runs window by window (only the frames of the current window are in memory), quantises the output to uint8
as the official ``tensor2img`` does, and scores each frame once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from stvsr.archs import time_factor_models
from stvsr.data.io import DataError, image_shape, read_image, write_image
from stvsr.errors import StvsrError
from stvsr.metrics import calculate_psnr, calculate_ssim, quantize
from stvsr.outputs import describe_write_error
from stvsr.runner import ModelFacts, ScaleMismatchError, reconcile_scale, time_factor_forward, window_forward
from stvsr.signals import stop_exit_code, stop_name

from .protocol import Protocol, Results, plan_windows

logger = logging.getLogger(__name__)

SSIM_WINDOW = 11  # the side of SSIM's Gaussian window (stvsr.metrics): what a crop must leave

__all__ = [
    "EvalError",
    "EvaluationStopped",
    "check_clips",
    "check_frames_decode",
    "crop_border_problem",
    "evaluate_clips",
    "keep_scored",
    "protocol_forward",
    "score_frame",
]


class EvalError(StvsrError, RuntimeError):
    """A user-fixable problem with the test data or settings; the message says what and where."""


class EvaluationStopped(EvalError):
    """The evaluation stopped part-way (a frame that fails to decode, a write that fails, a stop signal):
    ``results`` holds what was scored; ``exit_code`` is 2 (data, disk) or 128 + the signal's number (130 for
    Ctrl-C / SIGINT, 143 for SIGTERM, 129 for SIGHUP); ``signal`` is the signal's name, '' for other causes."""

    def __init__(self, message: str, results: Results, exit_code: int = 2, signal: str = "") -> None:
        super().__init__(message)
        self.results = results
        self.exit_code = exit_code
        self.signal = signal


def check_frames_decode(clips: Sequence[Any], progress: bool = True, shown: int = 10) -> None:
    """Decode every GT and LR frame of ``clips`` once (headers are not enough: a PNG cut after a valid header
    passes :func:`check_clips`), with a progress bar; one :class:`EvalError` names every frame that fails."""
    paths = [p for clip in clips for p in [*clip.gt_paths, *(clip.lq_paths or [])]]
    bad = []
    items = paths
    if progress:
        items = tqdm(paths, desc="checking frames", unit="frame", leave=False)
    for path in items:
        try:
            read_image(path)
        except DataError as exc:
            bad.append(str(exc))
    if bad:
        more = f"\n  ... and {len(bad) - shown} more" if len(bad) > shown else ""
        raise EvalError(
            f"{len(bad)} of {len(paths)} frames cannot be read (nothing was run):\n  " + "\n  ".join(bad[:shown]) + more
        )


def check_clips(clips: Sequence[Any], protocol: Protocol) -> None:
    """Check every clip (length, GT sizes, LR sizes) from file headers; raise one :class:`EvalError` that
    lists every problem found."""
    problems = []
    cropped: dict[tuple[int, int], list[str]] = {}  # frame size -> the clips that crop_border does not fit
    for clip in clips:
        if len(clip) < protocol.window:
            problems.append(f"clip '{clip.name}': {len(clip)} frames, fewer than the window of {protocol.window}")
            continue
        shapes = {}
        for path in clip.gt_paths:
            shapes.setdefault(image_shape(path)[:2], path)
        if len(shapes) > 1:
            listed = "; ".join(f"{w}x{h} ({p.name})" for (h, w), p in shapes.items())
            problems.append(f"clip '{clip.name}': GT frames of different sizes: {listed}")
            continue
        (h, w), _ = next(iter(shapes.items()))
        if h < clip.scale or w < clip.scale:
            problems.append(f"clip '{clip.name}': GT {w}x{h} (W x H) is smaller than the scale {clip.scale}")
            continue
        if crop_border_problem(protocol.crop_border, h, w):
            cropped.setdefault((h, w), []).append(clip.name)
        expected = (h // clip.scale, w // clip.scale)
        for path in clip.lq_paths or []:
            got = image_shape(path)[:2]
            if got != expected:
                problems.append(
                    f"clip '{clip.name}' frame {path.name}: LR is {got[1]}x{got[0]} (W x H) ({path}) but GT is "
                    f"{w}x{h}, so LR must be {expected[1]}x{expected[0]} at x{clip.scale}"
                )
                break
    for (h, w), names in cropped.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        problems.append(f"clip(s) {shown}: {crop_border_problem(protocol.crop_border, h, w)}")
    if problems:
        if len(problems) == 1:
            raise EvalError(f"test data is not usable: {problems[0]}")
        raise EvalError("test data is not usable:\n  " + "\n  ".join(problems))


def crop_border_problem(crop_border: int, height: int, width: int) -> str | None:
    """Why ``crop_border`` cannot be used on HR frames of ``height`` x ``width`` (what is left after cropping
    must hold SSIM's 11 x 11 window), or None."""
    if crop_border <= 0:
        return None
    left_h, left_w = height - 2 * crop_border, width - 2 * crop_border
    if min(left_h, left_w) >= SSIM_WINDOW:
        return None
    largest = max((min(height, width) - SSIM_WINDOW) // 2, 0)
    return (
        f"protocol.crop_border {crop_border} leaves {max(left_w, 0)}x{max(left_h, 0)} (W x H) of the {width}x{height} "
        f"GT frames; SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW}: use a crop_border <= {largest}"
    )


def score_frame(output: np.ndarray, gt: np.ndarray, crop_border: int = 0) -> dict[str, float]:
    """PSNR/SSIM on Y and RGB of a uint8 (H, W, 3) output against its uint8 GT."""
    return {
        "psnr_y": calculate_psnr(output, gt, crop_border, test_y_channel=True),
        "ssim_y": calculate_ssim(output, gt, crop_border, test_y_channel=True),
        "psnr_rgb": calculate_psnr(output, gt, crop_border),
        "ssim_rgb": calculate_ssim(output, gt, crop_border),
    }


def protocol_forward(
    model: Callable[[torch.Tensor], torch.Tensor], protocol: Protocol
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One LR window (B, N, 3, h, w) -> ``model``'s output, padded to the protocol's multiple, tiled and
    self-ensembled as ``protocol`` says (:func:`stvsr.runner.window_forward`)."""
    facts = ModelFacts.of(model)
    multiple = facts.size_multiple
    if protocol.time_factor != 2 and not facts.supports_time_factor:
        raise EvalError(
            f"protocol.time_factor {protocol.time_factor}: {type(model).__name__} makes one intermediate frame "
            f"per pair only; other time factors need a model with forward_times ({', '.join(time_factor_models())})"
        )
    try:
        return window_forward(
            time_factor_forward(model, protocol.time_factor),
            protocol.scale,
            protocol.resolved_pad(multiple),
            multiple,
            protocol.pad_mode,
            protocol.tile,
            protocol.tile_overlap,
            protocol.self_ensemble,
        )
    except ValueError as exc:  # a pad_multiple that does not fit the model
        raise EvalError(f"protocol.pad_multiple: {exc}") from None


@torch.no_grad()
def evaluate_clips(
    model: nn.Module,
    clips: Sequence[Any],
    protocol: Protocol,
    device: torch.device | str = "cpu",
    save_dir: str | Path | None = None,
    model_name: str = "",
    progress: bool = True,
) -> Results:
    """Evaluate ``model`` on ``clips`` (objects like :class:`stvsr.data.video_folder.Clip`)."""
    facts = ModelFacts.of(model)
    try:  # the one place a run's scale is reconciled (the protocol's carries the options' and the data's)
        scale = int(reconcile_scale(facts.scales, type(model).__name__, **{"protocol.scale": protocol.scale}))
    except ScaleMismatchError as exc:
        raise EvalError(str(exc)) from None
    fixed = facts.input_frames  # a model that takes exactly this many LR frames (RSTT: 4)
    k = protocol.time_factor
    fed = (protocol.window - 1) // k + 1
    if fixed and fed != fixed:
        raise EvalError(
            f"{type(model).__name__} takes exactly {fixed} LR frames per call, but protocol.window {protocol.window} "
            f"feeds {fed}: set protocol.window to {k * (fixed - 1) + 1}"
        )
    check_clips(clips, protocol)
    results = Results(protocol, model_name, facts.size_multiple)
    model.eval()
    device = torch.device(device)
    run = protocol_forward(model, protocol)
    bar = None
    if progress:
        bar = tqdm(total=sum(len(plan_windows(len(c), protocol, c.name)) for c in clips), unit="window")
    try:
        with keep_scored(results, len(clips)):
            _evaluate(clips, protocol, results, run, device, scale, save_dir, bar)
    finally:
        if bar is not None:
            bar.close()
    return results


@contextlib.contextmanager
def keep_scored(results: Results, total: int) -> Iterator[None]:
    """A stop signal (SIGINT / Ctrl-C, SIGTERM, SIGHUP: :mod:`stvsr.signals`), a frame that fails to decode or a
    write that fails (``--save_images`` on a full disk) inside the block becomes :class:`EvaluationStopped`
    carrying ``results`` (what was scored so far, out of ``total`` clips), so that the caller writes a partial
    report."""
    try:
        yield
    except KeyboardInterrupt as exc:
        done, name = len(results.clips()), stop_name(exc)
        how = "Ctrl-C, SIGINT" if name == "SIGINT" else name
        raise EvaluationStopped(
            f"stopped by a signal ({how}) after {done} of {total} clips", results, stop_exit_code(exc), name
        ) from None
    except DataError as exc:  # keep what was scored, name the frame
        raise EvaluationStopped(str(exc), results, 2) from None
    except SavedImageError as exc:
        raise EvaluationStopped(str(exc), results, 2) from None


class SavedImageError(EvalError):
    """An output frame of ``--save_images`` could not be written (a full disk, ...); the message says which."""


def _save_image(path: Path, rgb: np.ndarray) -> None:
    """Write one output frame (atomically: a failed write leaves no temporary); :class:`SavedImageError`."""
    try:
        write_image(path, rgb)
    except OSError as exc:
        raise SavedImageError(f"--save_images: {describe_write_error(exc, path)}") from None


def _evaluate(
    clips: Sequence[Any],
    protocol: Protocol,
    results: Results,
    run: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    scale: int,
    save_dir: str | Path | None,
    bar: Any,
) -> None:
    """The loop of :func:`evaluate_clips`: every window of every clip, each scored frame into ``results``."""
    for clip in clips:
        results.clip_lengths[clip.name] = len(clip)
        names = clip.frame_names
        for window in plan_windows(len(clip), protocol, clip.name):
            x = clip.lq_frames(list(window.inputs)).unsqueeze(0).to(device)
            y = run(x)
            expected = (1, len(window.outputs), 3, scale * x.shape[-2], scale * x.shape[-1])
            if tuple(y.shape) != expected:
                raise EvalError(f"model output {tuple(y.shape)} for input {tuple(x.shape)}; expected {expected}")
            out = quantize(y[0].float().cpu().permute(0, 2, 3, 1).numpy())
            for pos, t in window.scored:
                gt = clip.gt(t)
                if gt.shape != out[pos].shape:
                    raise EvalError(f"clip '{clip.name}' frame {names[t]}: output {out[pos].shape} vs GT {gt.shape}")
                results.add(clip.name, t, names[t], window.start, score_frame(out[pos], gt, protocol.crop_border))
                if save_dir is not None:
                    _save_image(Path(save_dir) / clip.name / f"{Path(names[t]).stem}.png", out[pos])
            if bar is not None:
                bar.update(1)
        m = results.clip_mean(clip.name)
        logger.info("%s: PSNR-Y %.4f SSIM-Y %.4f", clip.name, m["psnr_y"], m["ssim_y"])
