"""Data: degradations (BI/BD), LMDB stores, and the registered datasets ``Vimeo7``, ``VimeoTest``,
``VideoFolder`` and ``Adobe240`` (windows of consecutive frames with time stamps, TMNet stage 2).

Importing this package registers the datasets in :data:`stvsr.registry.DATASETS` (explicit imports below;
nothing is discovered by scanning folders). :func:`build_dataset` makes one from an options block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import DATASETS
from .adobe240 import Adobe240
from .io import DataError
from .video_folder import VideoFolder
from .vimeo import Vimeo7, VimeoTest


def build_dataset(opt: Mapping[str, Any]):
    """The dataset named by ``opt['mode']`` (e.g. 'Vimeo7'), built from the whole options block."""
    if "mode" not in opt:
        raise DataError(f"dataset options need a 'mode' (one of {', '.join(DATASETS)})")
    try:
        cls = DATASETS.get(opt["mode"])
    except KeyError as exc:
        raise DataError(exc.args[0]) from None
    return cls(opt)


__all__ = ["Adobe240", "DataError", "VideoFolder", "Vimeo7", "VimeoTest", "build_dataset"]
