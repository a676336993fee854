"""``codes/test.py``: evaluate a model on Vid4, SPMC or any folder of clips under an explicit protocol.

Options come from a YAML file (``-opt options/test/test_zsm_vid4.yml``), from command-line flags, or both
(flags win). Everything a user can get wrong (unknown key, missing data root, LR clip without GT, frame
count or size mismatch, checkpoint for another architecture) is reported before the first network call.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stvsr.atomic import atomic_write
from stvsr.data import build_dataset
from stvsr.data.io import DataError, list_clips, require_dir
from stvsr.device import DeviceError, resolve_device
from stvsr.errors import StvsrError
from stvsr.model.choose import TEST_SCHEMA, build_model, load_yaml, model_help, model_settings
from stvsr.outputs import check_writable_folder, describe_write_error
from stvsr.runner import ModelFacts
from stvsr.schema import OptionsError, folder_name_problem, with_flags
from stvsr.signals import raise_on_stop_signals, stop_exit_code, stop_name

from .evaluator import EvalError, EvaluationStopped, check_clips, check_frames_decode, evaluate_clips
from .protocol import Protocol, with_lr_source

logger = logging.getLogger("stvsr.test")


def load_options(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    opt = load_yaml(path, TEST_SCHEMA)
    datasets = opt.get("datasets")
    if datasets is not None and len(datasets) != 1:
        raise EvalError(f"{path}: datasets must hold exactly one test set (e.g. datasets.test), got {list(datasets)}")
    return opt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="test.py", description="Evaluate a space-time VSR model on folders of clips (Vid4, SPMC, ...)."
    )
    p.add_argument(
        "-opt", "--opt", help="YAML options (options/test/*.yml), or a training YAML / experiments/<name>/options.yml"
    )
    p.add_argument("--model", help=model_help())
    p.add_argument(
        "--checkpoint",
        help="weights (.pth), any official or framework format; a checkpoint of codes/train.py alone names its model",
    )
    p.add_argument("--dataroot_GT", help="folder of GT clips (one sub-folder per clip)")
    p.add_argument("--dataroot_LQ", help="folder of LR clips; without it LR is made from GT (--degradation)")
    p.add_argument("--degradation", choices=["BI", "BD"], help="LR made from GT on the fly (default BI)")
    p.add_argument("--clips", nargs="+", help="evaluate only these clips")
    p.add_argument("--tail", choices=["all", "official_zsm"], help="tail rule (default all: every frame scored)")
    p.add_argument("--color", choices=["y", "rgb"], help="headline colour space (default y)")
    p.add_argument("--pad_multiple", type=int, help="pad LR to this multiple (default: the model's)")
    p.add_argument("--pad_mode", choices=["zero", "replicate"])
    p.add_argument("--crop_border", type=int)
    p.add_argument("--self_ensemble", action="store_true", default=None, help="x8 flip/transpose ensemble")
    p.add_argument("--tile", type=int, help="run on overlapping LR tiles of this size (bounds memory)")
    p.add_argument("--tile_overlap", type=int, help="overlap of the tiles in LR pixels (default 16)")
    p.add_argument(
        "--time_factor",
        type=int,
        help="the network sees every k-th frame of a window and makes the k-1 between (default 2; TMNet's Adobe240 "
        "protocol: 6 with --window 7, models with forward_times only)",
    )
    p.add_argument("--window", type=int, help="HR frames per window (default 7)")
    p.add_argument("--stride", type=int, help="first frames of successive windows this far apart (default 6)")
    p.add_argument("--save_images", action="store_true", default=None, help="write the scored output frames")
    p.add_argument("--results_root", help="where results go (default experiments/results)")
    p.add_argument("--name", help="run name (default from the options or the model)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


DATASET_FLAGS = ("dataroot_GT", "dataroot_LQ", "degradation", "clips")
PROTOCOL_FLAGS = ("tail", "color", "pad_multiple", "pad_mode", "crop_border", "self_ensemble", "tile", "tile_overlap",
                  "time_factor", "window", "stride")  # fmt: skip


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Merge YAML options and flags into one flat settings dict."""
    opt = load_options(args.opt)
    dataset = with_flags(next(iter((opt.get("datasets") or {"test": {}}).values())), args, DATASET_FLAGS)
    model = model_settings(opt, args.model, args.checkpoint)
    network = model["network"]
    paths = with_flags(opt.get("path"), args, ("results_root",))
    protocol = with_flags(opt.get("protocol"), args, PROTOCOL_FLAGS)
    if dataset.get("dataroot_LQ"):
        if args.degradation:
            raise EvalError("give either --dataroot_LQ (LR read from a folder) or --degradation (LR made from GT)")
        dataset.pop("degradation", None)
    with_lr_source(protocol, dataset.get("dataroot_LQ"), dataset.get("degradation"))
    protocol.setdefault("scale", int(opt.get("scale", 4)))
    if not dataset.get("dataroot_GT"):
        raise EvalError("no GT: give --dataroot_GT or datasets.test.dataroot_GT (a folder of clip folders)")
    save = args.save_images if args.save_images is not None else bool(opt.get("save_images", False))
    return {
        "name": run_name(args.name, opt.get("name"), f"{network['which_model_G']}_{dataset.get('name') or 'test'}"),
        "dataset": dataset,
        **model,
        "results_root": Path(paths.get("results_root") or "experiments/results"),
        "protocol": protocol_of(protocol),
        "save_images": save,
        "device": device_of(args.device, opt.get("device")),
        "progress": not args.no_progress,
    }


def run_name(flag: str | None, option: str | None, default: str) -> str:
    """The run's name (``--name``, else the YAML's ``name``, else ``default``): results go to
    ``<results_root>/<name>/``, so it must be one folder name (not '', '..', 'a/b')."""
    name, what = (flag, "--name") if flag is not None else (option, "name") if option else (default, "name")
    problem = folder_name_problem(name)
    if problem:
        raise EvalError(f"{what} {name!r}: {problem} (results go to <results_root>/<name>/)")
    return str(name)


def protocol_of(options: Mapping[str, Any]) -> Protocol:
    """The protocol of the YAML's ``protocol:`` and the flags; one :class:`EvalError` lists every problem."""
    try:
        return Protocol.from_dict(options)
    except OptionsError as exc:
        raise EvalError(str(exc)) from None


def device_of(flag: str | None, option: str | None) -> Any:
    """``--device`` (else the YAML's ``device``, else the default), checked to exist here."""
    try:
        return resolve_device(flag or option, "--device" if flag else "device")
    except DeviceError as exc:
        raise EvalError(str(exc)) from None


def build_clips(settings: Mapping[str, Any]) -> list[Any]:
    """The test clips: the dataset ``datasets.test.mode`` (default ``VideoFolder``) from the ``DATASETS`` registry,
    any registered dataset of test clips (its ``clips``: objects like :class:`stvsr.data.video_folder.Clip`),
    checked before the first network call."""
    ds = settings["dataset"]
    protocol: Protocol = settings["protocol"]
    try:
        gt_root = require_dir(ds["dataroot_GT"], "dataroot_GT")
        if ds.get("dataroot_LQ"):
            lq_root = require_dir(ds["dataroot_LQ"], "dataroot_LQ")
            wanted = set(ds.get("clips") or list_clips(lq_root))
            orphans = sorted(wanted & set(list_clips(lq_root)) - set(list_clips(gt_root)))
            if orphans:
                raise EvalError(
                    f"LR clip(s) without GT: {', '.join(orphans)} are in {lq_root} but not in {gt_root}: "
                    f"add their GT or select clips with --clips"
                )
        mode = ds.get("mode") or "VideoFolder"
        options = {
            "mode": mode,
            "dataroot_GT": ds["dataroot_GT"],
            "dataroot_LQ": ds.get("dataroot_LQ"),
            "scale": protocol.scale,
            "clips": ds.get("clips"),
        }
        if not ds.get("dataroot_LQ"):
            options["degradation"] = protocol.degradation
        dataset = build_dataset(options)
    except DataError as exc:
        raise EvalError(str(exc)) from None
    if not hasattr(dataset, "clips"):
        raise EvalError(f"datasets.test.mode {mode}: not a dataset of test clips (no 'clips'): use VideoFolder")
    clips = list(dataset.clips)
    if not ds.get("clips"):
        _report_found(gt_root, [c.name for c in clips])
    try:
        check_clips(clips, protocol)
    except DataError as exc:
        raise EvalError(str(exc)) from None
    check_frames_decode(clips, settings.get("progress", True))  # every frame, before the first network call
    return clips


def _report_found(root: Path, clips: list[str]) -> None:
    """Say which clip folders were found under ``root``, and which folders hold no image (not scored)."""
    found = set(clips)
    empty = []
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: p.as_posix()):
        name = folder.relative_to(root).as_posix()
        has_sub = any(q.is_dir() for q in folder.iterdir())
        if name not in found and not has_sub:
            empty.append(name)
    shown = ", ".join(clips[:10]) + (", ..." if len(clips) > 10 else "")
    logger.info("dataroot_GT %s: %d clip folder(s) with frames (%s)", root, len(clips), shown)
    if empty:
        logger.warning(
            "dataroot_GT %s: %d folder(s) hold no image and are not scored: %s", root, len(empty), ", ".join(empty)
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; SIGINT (Ctrl-C), SIGTERM and SIGHUP alike stop it, keep what was scored as a partial
    report and exit with 128 + the signal's number."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    with raise_on_stop_signals():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    out_dir, created = None, False
    try:
        settings = resolve(args)
        out_dir = settings["results_root"] / settings["name"]
        created = not out_dir.exists()
        check_writable_folder(out_dir, "--results_root")  # before any work: a read-only or full disk, a file
        model = build_model(settings).to(settings["device"])
        clips = build_clips(settings)
    except StvsrError as exc:
        remove_if_created(out_dir, created)
        print(f"test.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        remove_if_created(out_dir, created)
        print(f"test.py: stopped by {stop_name(exc)} before the first clip (nothing scored)", file=sys.stderr)
        return stop_exit_code(exc)
    protocol: Protocol = settings["protocol"]
    arch = type(model).__name__
    label = f"{arch} ({settings['network']['which_model_G']}), checkpoint {settings['checkpoint'] or 'none'}"
    logger.info("protocol: %s", protocol.describe(ModelFacts.of(model).size_multiple))
    start = time.time()
    stopped = None
    try:
        results = evaluate_clips(
            model,
            clips,
            protocol,
            device=settings["device"],
            save_dir=out_dir / "images" if settings["save_images"] else None,
            model_name=label,
            progress=settings["progress"],
        )
    except EvaluationStopped as exc:  # keep what was scored: a partial report, marked as such
        stopped, results = exc, exc.results
    except EvalError as exc:
        print(f"test.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before the first window
        print(f"test.py: stopped by {stop_name(exc)} before the first clip (nothing scored)", file=sys.stderr)
        return stop_exit_code(exc)
    stem = f"{settings['name']}_{protocol.tail}"
    if stopped is not None:
        stem += "_partial"
        if not results.frames:
            print(f"test.py: {_stop_line(stopped)} (nothing was scored)", file=sys.stderr)
            return stopped.exit_code
    report = results.report()
    if stopped is not None:
        report += (
            f"\nPARTIAL: {len(results.clips())} of {len(clips)} clips (the last maybe in part); stopped: {stopped}"
        )
    print(report)
    failed = 2 if stopped is None else stopped.exit_code
    csv_path, txt_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.txt"
    target = csv_path
    try:
        results.write_csv(csv_path)
        target = txt_path
        atomic_write(txt_path, report + "\n")
    except OSError as exc:  # the disk filled during the run: the report is above, say what is missing
        done = f"; the per-frame CSV {csv_path} was written" if target == txt_path else ""
        print(f"test.py: error: {describe_write_error(exc, target)} (the report is printed above{done})",
              file=sys.stderr)  # fmt: skip
        return failed
    except KeyboardInterrupt as exc:
        print(f"test.py: stopped by {stop_name(exc)} while writing {target} (the report is printed above)",
              file=sys.stderr)  # fmt: skip
        return stop_exit_code(exc)
    print(f"per-frame CSV: {csv_path} ({time.time() - start:.1f} s)")
    if stopped is not None:
        print(f"test.py: {_stop_line(stopped)}; partial report kept: {txt_path}, {csv_path}", file=sys.stderr)
        return stopped.exit_code
    return 0


def _stop_line(stopped: EvaluationStopped) -> str:
    return f"{stopped}" if stopped.signal else f"error: {stopped}"


def remove_if_created(folder: Path | None, created: bool) -> None:
    """Remove the results folder the write probe created when the run stops before writing into it."""
    if folder is not None and created:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            pass
