"""Running a model on LR windows: its facts, padding to its size multiple, tiles, self-ensemble.

- :class:`ModelFacts`: what the runner needs to know about a model (size multiple, upscale, a fixed number of
  input frames, time factors), read from the architecture's class (:class:`stvsr.archs.base.StvsrArch`) in one
  place; any other callable gets the defaults.
- :func:`pad_frames` / :func:`crop_output` / :func:`run_padded`: pad LR frames bottom/right to a multiple (zero,
  as the official scripts, or replicate), run, crop the output back.
- :func:`self_ensemble`: the x8 geometric self-ensemble (flips and transposition).
- :func:`window_forward`: one LR window (B, N, 3, h, w) -> the output, padded, on tiles
  (:mod:`stvsr.runner.tiling`) and self-ensembled as asked. Evaluation, inference, validation during training
  and the benchmarks all run models through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .scale import SpaceScale
from .tiling import DEFAULT_OVERLAP, tiled_forward

PAD_MODES = ("zero", "replicate")
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelFacts:
    """A model's facts as the runner uses them.

    ``size_multiple``: LR height and width must be multiples of it (the runner pads); ``upscale``: the spatial
    factor of the common contract; ``space_scale``: every factor the model makes (:class:`SpaceScale`);
    ``input_frames``: the exact number of LR frames per call, or None for any N >= 2 (RSTT takes 4);
    ``supports_time_factor``: ``forward_times(lqs, k)`` exists; ``takes_time``: ``forward(lqs, t)`` takes time
    stamps (B, n).
    """

    size_multiple: int = 1
    upscale: int = 4
    input_frames: int | None = None
    supports_time_factor: bool = False
    takes_time: bool = False
    space_scale: SpaceScale | None = None  # None: exactly ``upscale``

    @property
    def scales(self) -> SpaceScale:
        return self.space_scale if self.space_scale is not None else SpaceScale(fixed=self.upscale)

    @classmethod
    def of(cls, model: Any) -> ModelFacts:
        """The facts an architecture declares (class attributes, or instance ones where settings change them)."""
        default = cls()
        upscale = int(getattr(model, "upscale", default.upscale))
        space = getattr(model, "space_scale", None)
        return cls(
            size_multiple=int(getattr(model, "size_divisor", default.size_multiple)),
            upscale=upscale,
            input_frames=getattr(model, "input_frames", default.input_frames),
            supports_time_factor=bool(getattr(model, "supports_time_factor", default.supports_time_factor)),
            takes_time=bool(getattr(model, "takes_time", default.takes_time)),
            space_scale=None if space == SpaceScale(fixed=upscale) else space,  # None: exactly upscale
        )


def time_factor_forward(model: Any, time_factor: int = 2) -> Forward:
    """The model contract at ``time_factor`` k: ``model`` itself for k = 2 (one frame between each pair), else
    ``model.forward_times(x, k)`` (k - 1 frames at t = 1/k .. (k-1)/k; callers check ``supports_time_factor``)."""
    if time_factor == 2:
        return model
    return lambda x: model.forward_times(x, time_factor)


def pad_frames(x: torch.Tensor, multiple: int, mode: str = "zero") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (..., h, w) bottom/right to multiples of ``multiple``; returns the padded tensor and (h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x, (h, w)
    if mode == "zero":
        return F.pad(x, (0, pw, 0, ph)), (h, w)
    if mode != "replicate":
        raise ValueError(f"pad mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    return F.pad(flat, (0, pw, 0, ph), mode="replicate").reshape(*lead, x.shape[-3], h + ph, w + pw), (h, w)


def crop_output(y: torch.Tensor, size: tuple[int, int], scale: int) -> torch.Tensor:
    """Crop a model output (..., H, W) back to ``scale * size``."""
    return y[..., : scale * size[0], : scale * size[1]]


def run_padded(forward: Forward, x: torch.Tensor, multiple: int, scale: int, mode: str = "zero") -> torch.Tensor:
    """Pad the LR window (B, N, 3, h, w) to ``multiple``, run ``forward``, crop the output to ``scale`` x (h, w)."""
    padded, size = pad_frames(x, multiple, mode)
    return crop_output(forward(padded), size, scale)


_TRANSFORMS = [(False, False, False), (True, False, False), (False, True, False), (True, True, False)]
_TRANSFORMS += [(h, v, True) for h, v, _ in _TRANSFORMS]


def _apply(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    return x.transpose(-1, -2) if transpose else x


def _invert(y: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if transpose:
        y = y.transpose(-1, -2)
    if vflip:
        y = y.flip(-2)
    return y.flip(-1) if hflip else y


def self_ensemble(run: Forward, x: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble: mean of the outputs for the 8 flips/transpositions of the input, each
    mapped back (``run`` pads each orientation on its own)."""
    total = None
    for t in _TRANSFORMS:
        y = _invert(run(_apply(x, *t)), *t)
        total = y if total is None else total + y
    return total / len(_TRANSFORMS)


def window_forward(
    forward: Forward,
    scale: int,
    multiple: int = 1,
    model_multiple: int = 1,
    pad_mode: str = "zero",
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    ensemble: bool = False,
) -> Forward:
    """One LR window (B, N, 3, h, w) -> ``forward``'s output cropped to (..., scale*h, scale*w): padded to
    ``multiple`` (which must be a multiple of the model's own ``model_multiple``), on overlapping ``tile`` x
    ``tile`` LR tiles when ``tile`` is set, x8 self-ensembled with ``ensemble``. ``forward`` is any callable with
    the model contract (inference passes a time-factor forward)."""
    if multiple % max(model_multiple, 1):
        raise ValueError(f"pad multiple {multiple} is not a multiple of the model's size multiple {model_multiple}")

    def run_tile(x: torch.Tensor) -> torch.Tensor:
        return run_padded(forward, x, multiple, scale, pad_mode)

    def run(x: torch.Tensor) -> torch.Tensor:
        return run_tile(x) if tile is None else tiled_forward(run_tile, x, tile, tile_overlap, scale)

    if not ensemble:
        return run
    return lambda x: self_ensemble(run, x)
