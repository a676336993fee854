"""Video in, video out: ``stvsr-infer`` (``codes/infer.py``) and its Python API.

- :mod:`stvsr.infer.media`: frames in and out as streams (PyAV for video files, with audio copy and colour
  metadata; folders of images through ``stvsr.data.io``), and why PyAV rather than OpenCV;
- :mod:`stvsr.infer.engine`: the protocol's windows over a stream (every frame used, the tail included,
  ``(N-1)*t+1`` outputs for N inputs), run through :mod:`stvsr.runner` as the evaluator does, :func:`infer_video`;
- :mod:`stvsr.infer.cli`: the command line and ``-opt`` YAML.

Importing this package imports torch and numpy, not PyAV (loaded on first use).
"""

from __future__ import annotations

from .engine import DEFAULT_WINDOW, InferReport, WindowRunner, infer_video, upsample_stream
from .media import InferError, MediaInfo

__all__ = [
    "DEFAULT_WINDOW",
    "InferError",
    "InferReport",
    "MediaInfo",
    "WindowRunner",
    "infer_video",
    "upsample_stream",
]
