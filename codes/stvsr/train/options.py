"""Training options: a YAML file in the Zooming Slow-Mo schema -> a validated, resolved dict.

- :data:`SCHEMA` declares every key (:mod:`stvsr.schema`: type, default, required, choices, help); ``network_G``
  is checked by the architecture (:func:`stvsr.archs.arch_arguments`) and each ``datasets.<phase>`` block by
  the schema its dataset class declares (``OPTIONS``). :func:`validate` checks everything before anything is
  read or written and raises one :class:`OptionsError` listing every problem with its key path.
- ``--set train.lr_G=1e-4`` overrides (values parsed as YAML) are applied before validation.
- Relative paths follow the one rule of :func:`stvsr.schema.resolve_path`: the options file's folder, then the
  repository root (the first that exists; outputs go under the repository root), never the current directory.
- The experiment folder follows the one rule of :func:`stvsr.model.runs.experiment_folder`; a run's saved options
  (``experiments/<name>/options.yml``, with its ``run_id``) read back are the run of the folder that holds them.
  :mod:`stvsr.train.experiment` makes the folder and saves the resolved options there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stvsr.archs import ARCHS, arch_arguments
from stvsr.data import DATASETS
from stvsr.data.options import dataset_schema
from stvsr.model.runs import experiment_folder, is_saved_run
from stvsr.registry import LOSSES
from stvsr.schema import (
    Key,
    OptionsError,
    check,
    folder_name_problem,
    read_mapping,
    repo_root,
    resolve_path,
    resolve_paths,
)

from .losses import DEFAULT_LOSSES, FLAT_KEYS, entry_schema, losses_from_flat_keys
from .optimizers import OPTIMIZERS

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA", "OptionsError", "dump", "load", "repo_root", "validate"]

NONE = type(None)
OPT_STR, OPT_LIST, OPT_INT, OPT_FLOAT = (str, NONE), (list, NONE), (int, NONE), (float, NONE)

# float keys accept ints and numeric strings ('4e-4': PyYAML reads it as a string); int keys accept integral
# floats (the official configs write `!!float 5e3`).
SCHEMA: dict[str, Any] = {
    "name": Key(str, required=True, help="the experiment: experiments/<name>/"),
    "run_id": Key(OPT_STR, help="written by the trainer: the run these options and their checkpoints belong to"),
    "ignored_options": Key(OPT_LIST, help="set when validated: the keys given that have no effect here"),
    "use_tb_logger": Key(bool, True),
    "model": Key(str, "VideoSR_base"),
    "distortion": Key(str, "sr"),
    "scale": Key(int, 4, minimum=1),
    "gpu_ids": Key(OPT_LIST),
    "dist": Key(bool, False),
    "device": Key(str, "auto", help="auto | cpu | cuda | cuda:N"),
    "datasets": {
        "train": Key(dict, required=True, help="a dataset block with its mode"),
        "val": Key((dict, NONE)),
    },
    "network_G": Key(dict, required=True, help="which_model_G and the architecture's keys"),
    "path": {
        "root": Key(OPT_STR, path=True),
        "pretrain_model_G": Key(OPT_STR, path=True),
        "strict_load": Key(bool, True),
        "resume_state": Key(OPT_STR, path=True, help="a checkpoint, or auto"),
        "experiments_root": Key(OPT_STR),
        "demo_data": Key(OPT_STR, path=True, help="build the demo set there first (stvsr.data.demo)"),
    },
    "train": {
        "lr_G": Key(float, required=True, minimum=0),
        "lr_scheme": Key(str, "CosineAnnealingLR_Restart"),
        "optim": Key(str, "Adam", help="a registered optimiser: Adam, AdamW, Adamax"),
        "beta1": Key(float, 0.9),
        "beta2": Key(float, 0.99),
        "weight_decay_G": Key(float, 0.0),
        "niter": Key(int, required=True),
        "warmup_iter": Key(int, -1),
        "T_period": Key(OPT_LIST),
        "restarts": Key(OPT_LIST),
        "restart_weights": Key(OPT_LIST),
        "eta_min": Key(float, 1e-7, minimum=0),
        "lr_steps": Key(OPT_LIST),
        "lr_gamma": Key(float, 0.5),
        "clear_state": Key(OPT_LIST),
        "losses": Key(OPT_LIST, help="weighted loss entries: [{type: cb, weight: 1}, {type: vgg, ...}]"),
        "grad_clip": Key(OPT_FLOAT, minimum=0),
        "val_freq": Key(OPT_INT, minimum=1),
        "manual_seed": Key(OPT_INT, 0),
        "ft_tsa_only": Key(int, 0),
        "max_bad_steps": Key(int, 5, minimum=1),
        "scheduler_order": Key(str, "before", choices=("before", "after")),
        "ema_decay": Key(OPT_FLOAT, help="e.g. 0.999: keep an EMA of the weights, validate it"),
        "amp": Key(OPT_STR, choices=(None, "bf16", "fp16"), help="mixed precision (CUDA)"),
        "channels_last": Key(bool, False),
        "deterministic": Key(bool, False),
        "find_unused_parameters": Key(bool, False, help="DDP: models with parameters that get no gradient"),
        "trainable": Key(OPT_LIST, help="name patterns: train only these parameters (TMNet stage 2: [TMB])"),
        "freeze": Key(OPT_LIST, help="name patterns: parameters kept fixed (after trainable)"),
        "dcn_lr_mul": Key(float, 1.0, help="lr multiplier of the deformable offset convs (BasicSR's dcn_lr_mul)"),
        "compile": Key(bool, False, help="torch.compile the model for training (same results, faster steps)"),
    },
    "logger": {
        "print_freq": Key(int, 100, minimum=1),
        "save_checkpoint_freq": Key(int, 5000, minimum=1),
        "keep_checkpoints": Key(int, 5, minimum=0),
        "val_images": Key(int, 3, minimum=0, help="validation samples shown in TensorBoard as [bicubic | output | GT]"),
    },
}

# keys that validate() derives and writes into experiments/<name>/options.yml: read back, they are derived again
DERIVED_PATH_KEYS = ("models", "log", "options_file")
# keys of the official configs that have no effect here (accepted so that those files load; listed in the log)
NO_EFFECT = ("model", "distortion", "gpu_ids", "dist", "train.ft_tsa_only")


def _given_without_effect(raw: Mapping[str, Any]) -> list[str]:
    """The keys of :data:`NO_EFFECT` and the architecture's ignored ``network_G`` keys that ``raw`` gives."""
    given = []
    for dotted in NO_EFFECT:
        section, _, key = dotted.rpartition(".")
        block = raw.get(section) if section else raw
        if isinstance(block, Mapping) and key in block:
            given.append(dotted)
    net = raw.get("network_G")
    if isinstance(net, Mapping) and str(net.get("which_model_G")) in ARCHS:
        cls = ARCHS.get(str(net["which_model_G"]))
        given += [f"network_G.{key}" for key in cls.config_ignored if key in net]
    return given


def _check_network(net: Mapping[str, Any], problems: list[str]) -> None:
    """The model's own checks (stvsr.archs.arch_arguments)."""
    try:
        arch_arguments(net)
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))


def _dataset_class(block: Mapping[str, Any], where: str, problems: list[str]) -> type | None:
    if "mode" not in block:
        problems.append(f"{where}.mode: required option is missing (one of {', '.join(DATASETS)})")
        return None
    try:
        return DATASETS.get(str(block["mode"]))
    except KeyError as exc:
        problems.append(f"{where}.mode: {exc.args[0]}")
        return None


def _check_datasets(datasets: dict[str, Any], problems: list[str]) -> dict[str, type]:
    """Each block checked against its dataset's schema (in place, defaults filled in); phase -> class."""
    classes = {}
    for phase, block in datasets.items():
        if not isinstance(block, Mapping):  # None (no such phase) or a mistake that check() has reported
            continue
        cls = _dataset_class(block, f"datasets.{phase}", problems)
        if cls is not None:
            datasets[phase] = check(block, dataset_schema(cls), f"datasets.{phase}", problems)
            classes[phase] = cls
    return classes


def _check_train(tr: dict[str, Any], problems: list[str]) -> None:
    """Rules between the keys of ``train`` (each key's own type and choices are checked by the schema)."""
    if isinstance(tr["niter"], int) and tr["niter"] < 1:
        problems.append("train.niter: must be >= 1")
    if isinstance(tr["dcn_lr_mul"], float) and not tr["dcn_lr_mul"] > 0:
        problems.append(f"train.dcn_lr_mul: {tr['dcn_lr_mul']} must be > 0 (e.g. 0.1 for a 10x smaller step)")
    if isinstance(tr["ema_decay"], float) and not 0.0 < tr["ema_decay"] < 1.0:
        problems.append(f"train.ema_decay: {tr['ema_decay']} is not in (0, 1)")
    for key in ("trainable", "freeze"):
        if tr[key] is not None and not all(isinstance(p, str) and p for p in tr[key]):
            problems.append(f"train.{key}: expected a list of parameter-name patterns (strings), got {tr[key]!r}")
    if tr["lr_scheme"] == "CosineAnnealingLR_Restart" and not tr["T_period"]:
        problems.append("train.T_period: required by lr_scheme CosineAnnealingLR_Restart")
    if tr["lr_scheme"] == "MultiStepLR_Restart" and tr["lr_steps"] is None:
        problems.append("train.lr_steps: required by lr_scheme MultiStepLR_Restart")
    try:
        OPTIMIZERS.canonical(str(tr["optim"]))
    except KeyError as exc:
        problems.append(f"train.optim: {exc.args[0]}")


def _losses(train: Any, problems: list[str]) -> Any:
    """``train`` with its loss keys as one ``losses`` list: the flat keys of the official schema translated
    (:func:`stvsr.train.losses.losses_from_flat_keys`), the default objective when neither is given."""
    if not isinstance(train, Mapping):
        return train
    train = dict(train)
    flat = {key: train.pop(key) for key in FLAT_KEYS if key in train}
    if flat and "losses" in train:
        problems.append(f"train.losses: give either losses or the flat keys ({', '.join(flat)}), not both")
    elif flat:
        train["losses"] = losses_from_flat_keys(flat)
    elif train.get("losses") is None:
        train["losses"] = [dict(entry) for entry in DEFAULT_LOSSES]
    return train


def _check_losses(tr: dict[str, Any], problems: list[str]) -> list[type]:
    """Each ``train.losses`` entry checked against its loss's schema (in place, defaults filled in); the classes."""
    classes = []
    entries = tr["losses"] if isinstance(tr["losses"], list) else []
    if not entries:
        problems.append("train.losses: expected a non-empty list of loss entries, e.g. [{type: cb, weight: 1}]")
    for i, entry in enumerate(entries):
        where = f"train.losses[{i}]"
        if not isinstance(entry, Mapping) or "type" not in entry:
            problems.append(f"{where}: expected a mapping with a type (one of {', '.join(LOSSES)}), got {entry!r}")
            continue
        try:
            cls = LOSSES.get(str(entry["type"]))
        except KeyError as exc:
            problems.append(f"{where}.type: {exc.args[0]}")
            continue
        tr["losses"][i] = check(entry, entry_schema(cls), where, problems)
        classes.append(cls)
    if classes and all(cls.kind != "pixel" for cls in classes):
        problems.append("train.losses: needs at least one pixel loss (cb, l1 or l2)")
    return classes


def _resolve(
    opt: dict[str, Any], classes: dict[str, type], loss_classes: list[type], options_file: str | os.PathLike | None
) -> None:
    """Every path made absolute by the one rule; the experiment's folders derived."""
    base = Path(options_file).resolve().parent if options_file is not None else None
    root = repo_root()
    if opt["path"]["root"]:
        root = Path(resolve_path(opt["path"]["root"], base, root, "path.root"))
    opt["path"]["root"] = str(root)
    for phase, cls in classes.items():
        resolve_paths(opt["datasets"][phase], dataset_schema(cls), base, root, f"datasets.{phase}")
    resolve_paths(opt["train"], SCHEMA["train"], base, root, "train")
    for i, (entry, cls) in enumerate(zip(opt["train"]["losses"], loss_classes)):
        resolve_paths(entry, cls.OPTIONS, base, root, f"train.losses[{i}]")
    if opt["path"]["resume_state"] == "auto":
        resolve_paths(opt["path"], {k: v for k, v in SCHEMA["path"].items() if k != "resume_state"}, base, root, "path")
    else:
        resolve_paths(opt["path"], SCHEMA["path"], base, root, "path")
    opt["path"]["root"] = str(root)
    exp_root = experiment_folder(opt["name"], root, opt["path"]["experiments_root"])
    opt["path"]["experiments_root"] = str(exp_root)
    opt["path"]["models"] = str(exp_root / "models")
    opt["path"]["log"] = str(exp_root)
    opt["path"]["options_file"] = str(Path(options_file).resolve()) if options_file else None


def validate(raw: Mapping[str, Any], options_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """A validated, resolved options dict from the raw (YAML) mapping; one :class:`OptionsError` listing every
    problem otherwise. Reads nothing but the file system's answer to "does this path exist"; writes nothing."""
    problems: list[str] = []
    if isinstance(raw, Mapping):
        raw = {**raw, "train": _losses(raw.get("train") or {}, problems)}
    opt = check(raw, SCHEMA, "", problems)
    if "name" in opt and (problem := folder_name_problem(opt["name"])):
        problems.append(f"name: {problem} (the experiment's folder is experiments/<name>)")
    if isinstance(opt.get("network_G"), Mapping):
        _check_network(opt["network_G"], problems)
    classes = _check_datasets(opt["datasets"], problems) if isinstance(opt.get("datasets"), dict) else {}
    _check_train(opt["train"], problems)
    loss_classes = _check_losses(opt["train"], problems)
    if problems:
        raise OptionsError(problems=problems)
    _resolve(opt, classes, loss_classes, options_file)
    opt["ignored_options"] = _given_without_effect(raw)
    return opt


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(opt: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) in place; returns ``opt``."""
    for item in overrides:
        if "=" not in item:
            raise OptionsError(f"--set {item!r}: expected key.path=value (e.g. train.lr_G=1e-4)")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = opt
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise OptionsError(f"--set {dotted}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = parse_value(text)
    return opt


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, override (``--set``), validate and resolve an options file."""

    file = Path(path)
    if not file.is_file():
        raise OptionsError(f"options file not found: {file}")
    raw = read_mapping(file)
    if is_saved_run(raw):  # experiments/<name>/options.yml: the run's folder is the one that holds it
        paths = raw["path"] = dict(raw["path"]) if isinstance(raw.get("path"), dict) else {}
        for key in DERIVED_PATH_KEYS:
            paths.pop(key, None)
        paths["experiments_root"] = str(file.resolve().parent)
    apply_overrides(raw, overrides)
    try:
        return validate(raw, file)
    except OptionsError as exc:
        raise exc.within(f"{file}: ") from None


def dump(opt: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(opt), sort_keys=False, default_flow_style=None)
