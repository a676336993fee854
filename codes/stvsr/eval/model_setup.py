"""What the evaluation and inference commands share: the model part of their YAML schemas, reading a YAML (or
the model of a training one), choosing the network from the YAML, ``--model`` and ``--checkpoint``, and building
the model with its weights.

``codes/test.py`` (:mod:`stvsr.eval.cli`), ``codes/test_vimeo.py`` (:mod:`stvsr.eval.vimeo_cli`) and
``stvsr-infer`` (:mod:`stvsr.infer.cli`) use these; every problem is an :class:`EvalError` that says what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stvsr import schema as schema_mod
from stvsr.schema import Blocks, Key, OptionsError, read_mapping

from .evaluator import EvalError

logger = logging.getLogger("stvsr.test")

__all__ = [
    "MODEL_SCHEMA",
    "NONE",
    "OPT_STR",
    "TEST_SCHEMA",
    "build_model",
    "checkpoint_network",
    "choose_network",
    "load_yaml",
    "model_help",
]

NONE = type(None)
OPT_STR = (str, NONE)
# the model part of every evaluation / inference YAML (stvsr.schema; relative paths: the YAML's folder, then the
# repository root)
MODEL_SCHEMA: dict[str, Any] = {
    "name": Key(OPT_STR, help="the run's name in reports"),
    "model": Key(OPT_STR),
    "scale": Key(int, 4),
    "device": Key(OPT_STR, help="auto | cpu | cuda | cuda:N"),
    "network_G": Key((dict, NONE), help="which_model_G and the architecture's keys"),
    "path": {
        "pretrain_model_G": Key(OPT_STR, path=True, help="the weights"),
        "strict_load": Key(bool, True),
        "results_root": Key(OPT_STR, path=True, help="reports go under <results_root>/<name>/"),
    },
    "protocol": Key((dict, NONE), help="stvsr.eval.protocol.Protocol fields"),
}
TEST_DATASET_SCHEMA: dict[str, Any] = {
    "name": Key(OPT_STR),
    "mode": Key(str, "VideoFolder", help="a registered dataset of test clips (DATASETS)"),
    "dataroot_GT": Key(OPT_STR, path=True, help="a folder of clip folders"),
    "dataroot_LQ": Key(OPT_STR, path=True, help="the LR clip folders; empty: LR made from GT"),
    "degradation": Key(OPT_STR),
    "clips": Key((list, NONE)),
}
TEST_SCHEMA: dict[str, Any] = {
    **MODEL_SCHEMA,
    "datasets": Blocks(TEST_DATASET_SCHEMA, help="exactly one test set, e.g. datasets.test"),
    "save_images": Key(bool, False),
}


def is_training_options(opt: Mapping[str, Any]) -> bool:
    """A training YAML (options/train/*.yml) or the options a run saved (experiments/<name>/options.yml)."""
    datasets = opt.get("datasets")
    return "train" in opt or (isinstance(datasets, Mapping) and "train" in datasets)


def model_from_training_options(path: str | Path) -> dict[str, Any]:
    """Test options naming the model of a training YAML or of a saved experiments/<name>/options.yml: its
    ``name``, ``scale`` and ``network_G``, and as weights the latest checkpoint of that experiment (else its
    ``path.pretrain_model_G``). Test data, protocol and device come from the flags.

    A run's saved options are that run: its checkpoints are those in the folder that holds the file and carry
    its ``run_id``, and the run's name is that folder's (an archived or copied experiment is itself, not the
    experiment its ``name`` would give)."""
    from stvsr import options as options_mod
    from stvsr.model.checkpoints import latest_checkpoint_of_run

    try:
        opt = options_mod.load(path)
    except options_mod.OptionsError as exc:
        raise EvalError(f"-opt {exc}") from None
    saved_run = options_mod.is_saved_run(read_mapping(Path(path)))
    try:
        latest = latest_checkpoint_of_run(opt["path"]["models"], opt.get("run_id"))
    except ValueError as exc:
        raise EvalError(f"-opt {path}: {exc}") from None
    weights = str(latest) if latest is not None else opt["path"]["pretrain_model_G"]
    if latest is not None:
        logger.info("-opt %s: a training configuration; weights %s", path, latest)
    else:
        logger.info("-opt %s: a training configuration; no checkpoint in %s yet", path, opt["path"]["models"])
    return {
        "name": Path(opt["path"]["experiments_root"]).name if saved_run else opt["name"],
        "scale": opt["scale"],
        "network_G": opt["network_G"],
        "path": {"pretrain_model_G": weights, "strict_load": opt["path"]["strict_load"]},
    }


def load_yaml(path: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML options file checked against ``schema`` (:func:`stvsr.schema.load_yaml`: every problem with its
    key path, relative paths by the one rule). A training YAML or a saved experiments/<name>/options.yml gives
    its model (:func:`model_from_training_options`)."""
    file = Path(path)
    if not file.is_file():
        raise EvalError(f"-opt {path}: no such file")
    try:
        if is_training_options(read_mapping(file)):
            return model_from_training_options(file)
        return schema_mod.load_yaml(file, schema)
    except OptionsError as exc:
        raise EvalError(f"-opt {exc}") from None


def model_help() -> str:
    """The --model help: every registered architecture (from the registry) with its aliases."""
    from stvsr.archs import ARCHS

    return (
        "architecture, with the official settings (or those a --checkpoint of codes/train.py carries): "
        f"{ARCHS.describe()}"
    )


def choose_network(
    network: dict[str, Any],
    paths: dict[str, Any],
    opt: dict[str, Any],
    model: str | None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """The YAML's ``network_G``, or the one of ``--model`` (``model``) when that names another model: then the
    YAML's checkpoint (``paths``) and run name (``opt``) no longer apply and are dropped, in place. For ``--model``
    and for no model at all, a trainer ``checkpoint`` (which carries its ``network_G``) gives the settings; else
    ``--model`` takes the official ones."""
    from stvsr.archs import ARCHS, official_network

    if model and network and network.get("which_model_G") not in (None, model):
        network = {}  # another model than the YAML's: its network_G and checkpoint no longer apply
        if paths.pop("pretrain_model_G", None) == checkpoint:
            checkpoint = None  # the YAML's weights (a --checkpoint is kept)
        opt.pop("name", None)
    # probed once, now (a file that is not a checkpoint is said here); a missing one is said when it is loaded
    saved = checkpoint_network(checkpoint) if checkpoint and Path(checkpoint).expanduser().exists() else None
    if model:
        if not network:
            try:
                canonical = ARCHS.canonical(model)
            except KeyError as exc:
                raise EvalError(f"--model: {exc.args[0]}") from None
            if (
                saved is not None
                and saved["which_model_G"] in ARCHS
                and ARCHS.canonical(saved["which_model_G"]) == canonical
            ):
                network = saved  # the settings the checkpoint was trained with (e.g. a small demo model)
            else:
                network = official_network(canonical)
        network["which_model_G"] = model
    elif not network.get("which_model_G") and saved is not None:
        network = saved
    if not network.get("which_model_G"):
        if checkpoint:
            checkpoint_network(checkpoint)  # no such file: that, rather than "no model"
        raise EvalError("no model: give --model (e.g. bicubic, zsm, stdan) or -opt with network_G.which_model_G")
    return network


def checkpoint_network(checkpoint: str) -> dict[str, Any] | None:
    """Probe the ``checkpoint`` file once, before anything is built: the ``network_G`` a trainer checkpoint
    carries (None for other checkpoints); :class:`EvalError` when it does not exist or is not a PyTorch checkpoint
    (empty, truncated, text, ...)."""
    from stvsr.checkpoint import NotACheckpointError, saved_network

    file = Path(checkpoint).expanduser()
    if not file.exists():
        raise EvalError(f"checkpoint {checkpoint}: no such file")
    if not file.is_file():
        raise EvalError(f"checkpoint {checkpoint}: not a file (give the .pth file, not its folder)")
    try:
        return saved_network(file)
    except NotACheckpointError as exc:
        raise EvalError(str(exc)) from None


def build_model(settings: Mapping[str, Any]) -> torch.nn.Module:
    from stvsr.archs import build_arch
    from stvsr.checkpoint import CheckpointMismatchError, NonFiniteWeightsError, load_official

    try:
        model = build_arch(settings["network"])
    except (ValueError, TypeError) as exc:
        raise EvalError(str(exc)) from None
    arch = type(model).__name__
    ckpt = settings["checkpoint"]
    n_params = sum(p.numel() for p in model.parameters())
    if ckpt:
        checkpoint_network(ckpt)  # no such file, or not a checkpoint: said as every command says it
        try:
            load_official(model, ckpt, strict=settings["strict"])
        except CheckpointMismatchError as exc:
            raise EvalError(
                f"checkpoint {ckpt} does not fit {arch} with this network_G (a checkpoint for another "
                f"architecture or other settings?):\n{exc}"
            ) from None
        except NonFiniteWeightsError as exc:
            raise EvalError(f"checkpoint {exc}") from None
        except ValueError as exc:  # no state_dict in it, or it loads only with weights_only=False
            raise EvalError(f"checkpoint {exc}") from None
    elif n_params:
        raise EvalError(f"{arch} has {n_params:,} parameters but no checkpoint was given: use --checkpoint")
    return model
