"""Choosing a model and building it with its weights: the model part of the evaluation and inference YAML
schemas, reading such a YAML (or the model a training YAML or a run's saved options name), choosing the network
from the YAML, ``--model`` and ``--checkpoint``, and building it.

``codes/test.py`` (:mod:`stvsr.eval.cli`), ``codes/test_vimeo.py`` (:mod:`stvsr.eval.vimeo_cli`) and
``stvsr-infer`` (:mod:`stvsr.infer.cli`) use these; every problem is a :class:`ModelChoiceError` (or an error of
the layers below) that says what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stvsr import schema as schema_mod
from stvsr.archs import ARCHS, build_arch, official_network
from stvsr.errors import StvsrError
from stvsr.schema import Blocks, Key, OptionsError, read_mapping

from .runs import is_training_options, run_model
from .weights import CheckpointMismatchError, NonFiniteWeightsError, NotACheckpointError, load_official, saved_network

logger = logging.getLogger("stvsr.test")

__all__ = [
    "MODEL_SCHEMA",
    "ModelChoiceError",
    "NONE",
    "OPT_STR",
    "TEST_SCHEMA",
    "build_model",
    "checkpoint_network",
    "choose_network",
    "load_yaml",
    "model_settings",
    "model_help",
]


class ModelChoiceError(StvsrError, RuntimeError):
    """A model that cannot be chosen or built as asked (no model named, a checkpoint that is missing, damaged or
    for another network); the message says what to do."""


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


def load_yaml(path: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML options file checked against ``schema`` (:func:`stvsr.schema.load_yaml`: every problem with its
    key path, relative paths by the one rule). A training YAML or a saved experiments/<name>/options.yml gives
    its model (:func:`stvsr.model.runs.run_model`)."""
    file = Path(path)
    if not file.is_file():
        raise ModelChoiceError(f"-opt {path}: no such file")
    try:
        if is_training_options(read_mapping(file)):
            return run_model(file)
        return schema_mod.load_yaml(file, schema)
    except OptionsError as exc:
        raise ModelChoiceError(f"-opt {exc}") from None


def model_help() -> str:
    """The --model help: every registered architecture (from the registry) with its aliases."""
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
                raise ModelChoiceError(f"--model: {exc.args[0]}") from None
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
        raise ModelChoiceError("no model: give --model (e.g. bicubic, zsm, stdan) or -opt with network_G.which_model_G")
    return network


def model_settings(opt: dict[str, Any], model: str | None, checkpoint: str | None) -> dict[str, Any]:
    """The model part of a command's settings from its YAML ``opt`` and the flags ``--model`` / ``--checkpoint``:
    ``network`` (:func:`choose_network`; ``opt``'s run name is dropped when ``--model`` names another model),
    ``checkpoint`` (the flag, else the YAML's) and ``strict``."""
    paths = dict(opt.get("path") or {})
    network = choose_network(
        dict(opt.get("network_G") or {}), paths, opt, model, checkpoint or paths.get("pretrain_model_G")
    )
    if checkpoint is not None:
        paths["pretrain_model_G"] = checkpoint
    return {
        "network": network,
        "checkpoint": paths.get("pretrain_model_G"),
        "strict": bool(paths.get("strict_load", True)),
    }


def checkpoint_network(checkpoint: str) -> dict[str, Any] | None:
    """Probe the ``checkpoint`` file once, before anything is built: the ``network_G`` a trainer checkpoint
    carries (None for other checkpoints); :class:`ModelChoiceError` when it does not exist or is not a PyTorch
    checkpoint (empty, truncated, text, ...)."""
    file = Path(checkpoint).expanduser()
    if not file.exists():
        raise ModelChoiceError(f"checkpoint {checkpoint}: no such file")
    if not file.is_file():
        raise ModelChoiceError(f"checkpoint {checkpoint}: not a file (give the .pth file, not its folder)")
    try:
        return saved_network(file)
    except NotACheckpointError as exc:
        raise ModelChoiceError(str(exc)) from None


def build_model(settings: Mapping[str, Any]) -> torch.nn.Module:
    try:
        model = build_arch(settings["network"])
    except (ValueError, TypeError) as exc:
        raise ModelChoiceError(str(exc)) from None
    arch = type(model).__name__
    ckpt = settings["checkpoint"]
    n_params = sum(p.numel() for p in model.parameters())
    if ckpt:
        checkpoint_network(ckpt)  # no such file, or not a checkpoint: said as every command says it
        try:
            load_official(model, ckpt, strict=settings["strict"])
        except CheckpointMismatchError as exc:
            raise ModelChoiceError(
                f"checkpoint {ckpt} does not fit {arch} with this network_G (a checkpoint for another "
                f"architecture or other settings?):\n{exc}"
            ) from None
        except NonFiniteWeightsError as exc:
            raise ModelChoiceError(f"checkpoint {exc}") from None
        except ValueError as exc:  # no state_dict in it, or it loads only with weights_only=False
            raise ModelChoiceError(f"checkpoint {exc}") from None
    elif n_params:
        raise ModelChoiceError(f"{arch} has {n_params:,} parameters but no checkpoint was given: use --checkpoint")
    return model
