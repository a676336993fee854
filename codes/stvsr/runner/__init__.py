"""Running a model on frames: window planning, padding to the model's size multiple, tiling, self-ensemble, on
batches of windows. The one place for these: evaluation (:mod:`stvsr.eval`), inference (:mod:`stvsr.infer`),
validation during training and the benchmarks call it. It takes tensors, callables and numbers, not options.

- :mod:`stvsr.runner.windows`: which frames each call sees (:func:`window_starts`, :func:`stream_windows`);
- :mod:`stvsr.runner.forward`: :class:`ModelFacts`, padding, self-ensemble, :func:`window_forward` (any number
  of windows at once, as a batch);
- :mod:`stvsr.runner.tiling`: overlapping spatial tiles, blended;
- :mod:`stvsr.runner.scale`: the spatial factors a model makes, and the one place a run reconciles its scale.

Imports torch only (no data, training or evaluation code).
"""

from __future__ import annotations

from .forward import (
    PAD_MODES,
    ModelFacts,
    crop_output,
    pad_frames,
    run_padded,
    self_ensemble,
    time_factor_forward,
    window_forward,
)
from .scale import ScaleMismatchError, SpaceScale, reconcile_scale
from .tiling import DEFAULT_OVERLAP, tile_starts, tiled_forward
from .windows import HR_WINDOW, HR_WINDOW_STRIDE, stream_windows, window_starts

__all__ = [
    "DEFAULT_OVERLAP",
    "HR_WINDOW",
    "HR_WINDOW_STRIDE",
    "PAD_MODES",
    "ModelFacts",
    "ScaleMismatchError",
    "SpaceScale",
    "crop_output",
    "pad_frames",
    "reconcile_scale",
    "run_padded",
    "self_ensemble",
    "stream_windows",
    "tile_starts",
    "tiled_forward",
    "time_factor_forward",
    "window_forward",
    "window_starts",
]
