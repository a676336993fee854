"""A training run as the rest of the package sees it: where its folder is, and what model and weights it names.

The one rule for the experiment folder (the trainer writes there, evaluation and inference read there):
``path.experiments_root`` when absolute, else ``<root>/<path.experiments_root>``, else ``<root>/experiments/<name>``
(``root``: ``path.root`` or the repository root); for the options a run saved in its folder
(``experiments/<name>/options.yml``), the folder that holds the file. The run's checkpoints are its folder's
``models/`` (:mod:`stvsr.model.checkpoints`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stvsr.errors import StvsrError
from stvsr.schema import Key, OptionsError, check, read_mapping, repo_root, resolve_path

from .checkpoints import latest_checkpoint_of_run

logger = logging.getLogger("stvsr.model")

# what choosing a model reads from a training YAML; the rest of the file is the trainer's
RUN_MODEL_SCHEMA: dict[str, Any] = {
    "name": Key(str, required=True),
    "scale": Key(int, 4, minimum=1),
    "run_id": Key((str, type(None))),
    "network_G": Key(dict, required=True),
    "path": {
        "root": Key((str, type(None)), path=True),
        "pretrain_model_G": Key((str, type(None)), path=True),
        "strict_load": Key(bool, True),
        "experiments_root": Key((str, type(None))),
    },
}


class RunError(StvsrError, RuntimeError):
    """A training YAML or a run's saved options that do not name a usable model; the message says why."""


def is_training_options(raw: Mapping[str, Any]) -> bool:
    """A training YAML (options/train/*.yml) or the options a run saved (experiments/<name>/options.yml)."""
    datasets = raw.get("datasets")
    return "train" in raw or (isinstance(datasets, Mapping) and "train" in datasets)


def is_saved_run(raw: Mapping[str, Any]) -> bool:
    """Whether ``raw`` is the options file a run saved in its folder (it holds its ``run_id`` or the keys the
    trainer derives)."""
    return bool(raw.get("run_id")) or (isinstance(raw.get("path"), Mapping) and "models" in raw["path"])


def experiment_folder(name: str, root: str | Path | None, experiments_root: str | None) -> Path:
    """The run's folder by the rule above; ``root`` is ``path.root`` already resolved (or None)."""
    base = Path(root) if root else repo_root()
    if experiments_root and Path(experiments_root).is_absolute():
        return Path(experiments_root)
    return base / (experiments_root or Path("experiments") / name)


def _model_part(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of :data:`RUN_MODEL_SCHEMA` that ``raw`` holds (the trainer checks the others)."""
    part = {key: raw[key] for key in RUN_MODEL_SCHEMA if key in raw}
    if isinstance(part.get("path"), Mapping):
        part["path"] = {key: value for key, value in part["path"].items() if key in RUN_MODEL_SCHEMA["path"]}
    return part


def run_model(path: str | Path) -> dict[str, Any]:
    """What a training YAML or a run's saved ``options.yml`` names as a model, in the form of an evaluation YAML:
    ``name``, ``scale``, ``network_G``, and as weights the run's latest checkpoint (else ``path.pretrain_model_G``).

    A run's saved options are that run: its checkpoints are those in the folder that holds the file and carry its
    ``run_id`` (a folder whose newest checkpoint is another run's is an error), and the run's name is that
    folder's, so that an archived or copied experiment is itself, not the experiment its ``name`` would give."""
    file = Path(path)
    raw = read_mapping(file)
    problems: list[str] = []
    opt = check(_model_part(raw), RUN_MODEL_SCHEMA, "", problems)
    if problems:
        raise OptionsError(problems=problems).within(f"{file}: ")
    paths = opt["path"]
    base = file.resolve().parent
    for key in ("root", "pretrain_model_G"):
        paths[key] = resolve_path(paths[key], base, repo_root(), f"path.{key}")
    saved = is_saved_run(raw)
    folder = base if saved else experiment_folder(opt["name"], paths["root"], paths["experiments_root"])
    try:
        latest = latest_checkpoint_of_run(folder / "models", opt["run_id"] if saved else None)
    except ValueError as exc:
        raise RunError(f"-opt {path}: {exc}") from None
    if latest is not None:
        logger.info("-opt %s: a training configuration; weights %s", path, latest)
    else:
        logger.info("-opt %s: a training configuration; no checkpoint in %s yet", path, folder / "models")
    return {
        "name": folder.name if saved else opt["name"],
        "scale": opt["scale"],
        "network_G": opt["network_G"],
        "path": {
            "pretrain_model_G": str(latest) if latest is not None else paths["pretrain_model_G"],
            "strict_load": paths["strict_load"],
        },
    }
