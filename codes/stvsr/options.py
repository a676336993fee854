"""Training options: a YAML file in the Zooming Slow-Mo schema -> a validated, resolved dict.

- Every section has a schema (type, default or required); an unknown key is an :class:`OptionsError` naming it
  and the nearest valid key, a value of the wrong type names the key and the expected type, and required keys
  are checked before any work starts. ``network_G`` is checked against the architecture's keys and each
  ``datasets.<phase>`` block against its dataset's keys.
- ``--set train.lr_G=1e-4`` overrides (values parsed as YAML) are applied before validation.
- Relative paths are resolved against the options file's folder, then the repository root (the first that
  exists; outputs go under the repository root), never against the current directory by accident.
- :func:`prepare_experiment` creates ``experiments/<name>/`` and saves the resolved options there; an existing
  folder of another run is archived with a timestamp suffix (never silently overwritten).
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stvsr.atomic import atomic_write
from stvsr.errors import StvsrError
from stvsr.registry import did_you_mean

logger = logging.getLogger(__name__)

REQUIRED = object()


class OptionsError(StvsrError, ValueError):
    """A mistake in the options (file, key or value); the message says which and what to do."""


def repo_root() -> Path:
    """The repository root (``STVSR_ROOT`` overrides): the folder holding ``codes/``."""
    env = os.environ.get("STVSR_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


# key -> (types, default). float keys accept ints and numeric strings ('4e-4': PyYAML reads it as a string);
# int keys accept integral floats (the official configs write `!!float 5e3`).
Num = (int, float)
SCHEMA: dict[str, Any] = {
    "name": (str, REQUIRED),
    "use_tb_logger": (bool, True),
    "model": (str, "VideoSR_base"),
    "distortion": (str, "sr"),
    "scale": (int, 4),
    "gpu_ids": ((list, type(None)), None),
    "dist": (bool, False),
    "device": (str, "auto"),
    "datasets": {
        "train": (dict, REQUIRED),
        "val": ((dict, type(None)), None),
    },
    "network_G": (dict, REQUIRED),
    "path": {
        "root": ((str, type(None)), None),
        "pretrain_model_G": ((str, type(None)), None),
        "strict_load": (bool, True),
        "resume_state": ((str, type(None)), None),
        "experiments_root": ((str, type(None)), None),
        "demo_data": ((str, type(None)), None),  # build the demo set there first (stvsr.data.demo)
    },
    "train": {
        "lr_G": (float, REQUIRED),
        "lr_scheme": (str, "CosineAnnealingLR_Restart"),
        "optim": (str, "Adam"),
        "beta1": (float, 0.9),
        "beta2": (float, 0.99),
        "weight_decay_G": (float, 0.0),
        "niter": (int, REQUIRED),
        "warmup_iter": (int, -1),
        "T_period": ((list, type(None)), None),
        "restarts": ((list, type(None)), None),
        "restart_weights": ((list, type(None)), None),
        "eta_min": (float, 1e-7),
        "lr_steps": ((list, type(None)), None),
        "lr_gamma": (float, 0.5),
        "clear_state": ((list, type(None)), None),
        "pixel_criterion": (str, "cb"),
        "pixel_weight": (float, 1.0),
        "pixel_reduction": (str, "sum"),
        "grad_clip": ((float, type(None)), None),
        "val_freq": ((int, type(None)), None),
        "manual_seed": ((int, type(None)), 0),
        "ft_tsa_only": (int, 0),
        "max_bad_steps": (int, 5),
        "scheduler_order": (str, "before"),
        "feature_criterion": ((str, type(None)), None),  # 'vgg19': perceptual loss (STARnet), local weights
        "feature_weight": (float, 1.0),
        "feature_weights_path": ((str, type(None)), None),
        "ema_decay": ((float, type(None)), None),  # e.g. 0.999: keep an EMA of the weights, validate it
        "amp": ((str, type(None)), None),  # 'bf16' | 'fp16' mixed precision (CUDA)
        "channels_last": (bool, False),
        "deterministic": (bool, False),
        "find_unused_parameters": (bool, False),  # DDP: models with parameters that get no gradient
        "trainable": ((list, type(None)), None),  # name patterns: train only these parameters (TMNet stage 2: [TMB])
        "freeze": ((list, type(None)), None),  # name patterns: parameters kept fixed (after trainable)
        "dcn_lr_mul": (float, 1.0),  # lr multiplier of the deformable offset convs (BasicSR's dcn_lr_mul)
        "compile": (bool, False),  # torch.compile the model for training (same results, faster steps)
    },
    "logger": {
        "print_freq": (int, 100),
        "save_checkpoint_freq": (int, 5000),
        "keep_checkpoints": (int, 5),
        "val_images": (int, 3),  # validation samples shown in TensorBoard as [bicubic | output | GT]
    },
}

DATASET_PATH_KEYS = ("dataroot_GT", "dataroot_LQ", "cache_keys", "list_file")
# keys that validate() derives and writes into experiments/<name>/options.yml: read back, they are derived again
DERIVED_PATH_KEYS = ("models", "log", "options_file")
PATH_KEYS = ("pretrain_model_G", "resume_state", "demo_data")


def _type_name(types: Any) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "mapping"}
    return " or ".join(names.get(t, "null" if t is type(None) else t.__name__) for t in types)


def _coerce(value: Any, types: Any, where: str) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    if value is None and type(None) in types:
        return None
    if float in types and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if int in types and isinstance(value, float) and value.is_integer():
        return int(value)
    if bool not in types and isinstance(value, bool):
        raise OptionsError(f"{where}: expected {_type_name(types)}, got {value!r}")
    if isinstance(value, tuple(t for t in types if t is not type(None))):
        return value
    raise OptionsError(f"{where}: expected {_type_name(types)}, got {value!r} ({type(value).__name__})")


def _validate_section(opt: Any, schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    where = prefix.rstrip(".") or "options"
    if opt is None:
        opt = {}
    if not isinstance(opt, Mapping):
        raise OptionsError(f"{where}: expected a mapping (a YAML block), got {opt!r}")
    for key in opt:
        if key not in schema:
            raise OptionsError(
                f"{prefix}{key}: unknown key.{did_you_mean(key, list(schema))} Valid keys here: {', '.join(schema)}"
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _validate_section(opt.get(key), spec, f"{prefix}{key}.")
            continue
        types, default = spec
        if key not in opt:
            if default is REQUIRED:
                raise OptionsError(f"{prefix}{key}: required key is missing")
            out[key] = copy.deepcopy(default)
        else:
            out[key] = _coerce(opt[key], types, f"{prefix}{key}")
    return out


def _check_network(net: Mapping[str, Any]) -> None:
    """The model's own checks (stvsr.archs.arch_arguments), before any work starts."""
    from stvsr.archs import arch_arguments

    try:
        arch_arguments(net)
    except (TypeError, ValueError) as exc:
        raise OptionsError(str(exc)) from None


def _check_dataset(block: Mapping[str, Any], phase: str) -> None:
    from stvsr.data import DATASETS
    from stvsr.data.options import LOADER_KEYS
    from stvsr.data.vimeo import COMMON_SCHEMA, _VimeoBase

    if "mode" not in block:
        raise OptionsError(f"datasets.{phase}.mode: required key is missing (one of {', '.join(DATASETS)})")
    try:
        cls = DATASETS.get(str(block["mode"]))
    except KeyError as exc:
        raise OptionsError(f"datasets.{phase}.mode: {exc.args[0]}") from None
    schema = getattr(cls, "SCHEMA", None)
    if schema is None:
        return
    valid = ["mode", *LOADER_KEYS, *schema, *(COMMON_SCHEMA if issubclass(cls, _VimeoBase) else {})]
    for key in block:
        if key not in valid:
            raise OptionsError(f"datasets.{phase}.{key}: unknown key for {cls.__name__}.{did_you_mean(key, valid)}")


def parse_value(text: str) -> Any:
    import yaml

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


def _resolve_path(value: str | None, base: Path | None, root: Path) -> str | None:
    """``value`` made absolute: relative to ``base`` (the options file's folder) if it exists there, else to
    ``root`` (the repository root)."""
    if value is None:
        return None
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute():
        return str(p)
    candidates = ([base / p] if base is not None else []) + [root / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return str((root / p).resolve())


def _check_choice(section: Mapping[str, Any], key: str, choices: Sequence[Any]) -> None:
    if section[key] not in choices:
        names = ", ".join("null" if c is None else repr(c) for c in choices)
        raise OptionsError(
            f"train.{key}: {section[key]!r} is not one of {names}.{did_you_mean(section[key], [c for c in choices if c])}"
        )


def validate(raw: Mapping[str, Any], options_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """A validated, resolved options dict from the raw (YAML) mapping."""
    opt = _validate_section(raw, SCHEMA, "")
    _check_network(opt["network_G"])
    for phase, block in opt["datasets"].items():
        if block is not None:
            _check_dataset(block, phase)
    tr = opt["train"]
    if tr["niter"] < 1:
        raise OptionsError("train.niter: must be >= 1")
    _check_choice(tr, "optim", ("Adam", "AdamW", "Adamax"))
    _check_choice(tr, "amp", (None, "bf16", "fp16"))
    _check_choice(tr, "feature_criterion", (None, "vgg19"))
    if tr["feature_criterion"] and not tr["feature_weights_path"]:
        raise OptionsError(
            "train.feature_weights_path: required by feature_criterion vgg19 (a local VGG19 weights file; "
            "weights are not downloaded at run time)"
        )
    if not tr["dcn_lr_mul"] > 0:
        raise OptionsError(f"train.dcn_lr_mul: {tr['dcn_lr_mul']} must be > 0 (e.g. 0.1 for a 10x smaller step)")
    if tr["ema_decay"] is not None and not 0.0 < tr["ema_decay"] < 1.0:
        raise OptionsError(f"train.ema_decay: {tr['ema_decay']} is not in (0, 1)")
    _check_choice(tr, "scheduler_order", ("before", "after"))
    for key in ("trainable", "freeze"):
        if tr[key] is not None and not all(isinstance(p, str) and p for p in tr[key]):
            raise OptionsError(f"train.{key}: expected a list of parameter-name patterns (strings), got {tr[key]!r}")
    if tr["lr_scheme"] == "CosineAnnealingLR_Restart" and not tr["T_period"]:
        raise OptionsError("train.T_period: required by lr_scheme CosineAnnealingLR_Restart")
    if tr["lr_scheme"] == "MultiStepLR_Restart" and tr["lr_steps"] is None:
        raise OptionsError("train.lr_steps: required by lr_scheme MultiStepLR_Restart")

    base = Path(options_file).resolve().parent if options_file is not None else None
    root = Path(opt["path"]["root"]).resolve() if opt["path"]["root"] else repo_root()
    if opt["path"]["root"] and not Path(opt["path"]["root"]).is_absolute():
        root = Path(_resolve_path(opt["path"]["root"], base, repo_root()))
    opt["path"]["root"] = str(root)
    for block in opt["datasets"].values():
        if block is None:
            continue
        for key in DATASET_PATH_KEYS:
            if isinstance(block.get(key), str) and not (key == "cache_keys" and "/" not in block[key]):
                block[key] = _resolve_path(block[key], base, root)
    tr["feature_weights_path"] = _resolve_path(tr["feature_weights_path"], base, root)
    for key in PATH_KEYS:
        if key == "resume_state" and opt["path"][key] == "auto":
            continue
        opt["path"][key] = _resolve_path(opt["path"][key], base, root)
    exp = opt["path"]["experiments_root"]
    exp_root = Path(exp) if exp and Path(exp).is_absolute() else root / (exp or Path("experiments") / opt["name"])
    opt["path"]["experiments_root"] = str(exp_root)
    opt["path"]["models"] = str(exp_root / "models")
    opt["path"]["log"] = str(exp_root)
    opt["path"]["options_file"] = str(Path(options_file).resolve()) if options_file else None
    return opt


def read_mapping(file: Path) -> dict[str, Any]:
    """An existing YAML file whose top level is a mapping, as a dict; OptionsError naming the file otherwise."""
    import yaml

    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OptionsError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise OptionsError(f"{file}: expected a mapping at the top level")
    return raw


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, override (``--set``), validate and resolve an options file."""

    file = Path(path)
    if not file.is_file():
        raise OptionsError(f"options file not found: {file}")
    raw = read_mapping(file)
    if isinstance(raw.get("path"), dict):  # the saved experiments/<name>/options.yml loads too
        for key in DERIVED_PATH_KEYS:
            raw["path"].pop(key, None)
    apply_overrides(raw, overrides)
    try:
        return validate(raw, file)
    except OptionsError as exc:
        raise OptionsError(f"{file}: {exc}") from None


def dump(opt: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(opt), sort_keys=False, default_flow_style=None)


def prepare_experiment(opt: dict[str, Any], resume: bool = False) -> Path:
    """Create ``experiments/<name>/`` (archiving an existing one with a timestamp suffix unless resuming) and
    save the resolved options into it as ``options.yml``."""
    exp = Path(opt["path"]["experiments_root"])
    if exp.exists() and not resume and any(exp.iterdir()):
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        archived = exp.with_name(f"{exp.name}_archived_{stamp}")
        n = 1
        while archived.exists():
            archived = exp.with_name(f"{exp.name}_archived_{stamp}_{n}")
            n += 1
        exp.rename(archived)
        # once: printed (the trainer's log file does not exist yet; a logger.warning as well printed it twice)
        print(f"Experiment folder {exp} exists: archived to {archived}", flush=True)
    (exp / "models").mkdir(parents=True, exist_ok=True)
    atomic_write(exp / "options.yml", dump(opt))
    return exp
