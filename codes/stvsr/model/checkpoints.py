"""The training checkpoint file format: what ``codes/train.py`` writes and what resuming, evaluation and inference
read.

A run writes one file per save, ``<experiment>/models/iter_<iteration, 8 digits>.pth`` (atomically), a dict with:
``params`` (the model's state_dict: :func:`stvsr.model.weights.load_official` reads it directly), ``params_ema``
(with an EMA), ``optimizer``, ``scheduler``, ``scaler`` (fp16), ``iter``, ``epoch``, ``rng`` / ``rng_ranks`` (every
process's RNG states), the resolved ``options``, and what the weights are: ``network_G``, ``scale`` and
``run_id`` (the run of the ``options.yml`` beside them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_RE = re.compile(r"^iter_(\d+)\.pth$")
REQUIRED_KEYS = ("params", "optimizer", "scheduler", "iter", "epoch", "rng")


def checkpoint_name(iteration: int) -> str:
    """The file name of the checkpoint of ``iteration``."""
    return f"iter_{iteration:08d}.pth"


def list_checkpoints(models_dir: str | os.PathLike) -> list[Path]:
    """The trainer's checkpoints ``iter_<n>.pth`` in ``models_dir``, newest (highest iteration) first."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def find_latest_checkpoint(models_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(models_dir)
    return found[0] if found else None


def checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The ``run_id`` a checkpoint of the trainer carries (None for older ones and other files); read lazily."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- a damaged file is reported by whoever loads its weights
        return None
    return str(state["run_id"]) if isinstance(state, dict) and state.get("run_id") else None


def latest_checkpoint_of_run(models_dir: str | os.PathLike, run_id: str | None) -> Path | None:
    """The newest checkpoint in ``models_dir``; with ``run_id``, it must belong to that run (older checkpoints
    carry no id and are taken as they are): a folder whose newest checkpoint is another run's is a ValueError,
    never silently another run's weights."""
    latest = find_latest_checkpoint(models_dir)
    if latest is None or run_id is None:
        return latest
    found = checkpoint_run_id(latest)
    if found not in (None, run_id):
        raise ValueError(
            f"{latest} belongs to run {found}, not to run {run_id} of the options beside it: the folder holds "
            f"another run's checkpoints; give the weights explicitly with --checkpoint"
        )
    return latest


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 -- any failure means: not usable
        return False
    return True


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint of the trainer, loaded; a damaged one (truncated, not a checkpoint) is one :class:`ValueError`
    that names it and the newest intact checkpoint beside it, to resume from instead."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch's zip reader raises several kinds, with unhelpful texts
        previous = next((p for p in list_checkpoints(path.parent) if p != path and _loads(p)), None)
        offer = (
            f"the previous checkpoint {previous.name} is intact: move {path.name} out of {path.parent} and run "
            f"again with --auto_resume"
            if previous is not None
            else "no intact checkpoint is left beside it: start again without --auto_resume"
        )
        raise ValueError(
            f"checkpoint {path} cannot be read (damaged or truncated, e.g. a save cut short: "
            f"{type(exc).__name__}); {offer}"
        ) from None
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if not isinstance(state, dict) or missing:
        raise ValueError(f"{path}: not a training checkpoint of stvsr (missing {', '.join(missing)})")
    return state
