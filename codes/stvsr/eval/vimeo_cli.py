"""``codes/test_vimeo.py``: Vimeo-90K-T Slow / Medium / Fast in one command, printed as the papers' table.

Each clip is one 7-frame window (LR frames 1, 3, 5, 7 in; all 7 outputs scored); clip means are averaged over
the clips of a split (docs/evaluation.md). Clips of a list that are not on disk are
counted and reported (``--missing skip``, the default) or stop the run before any computation
(``--missing error``). The split lists are the ones of Zooming Slow-Mo (``sep_{slow,medium,fast}_testset.txt``,
1,613 / 4,977 / 1,225 clips) unless other files are given; the list file is written into the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stvsr.atomic import atomic_write
from stvsr.data import build_dataset
from stvsr.data.io import DataError, MissingClipsError, read_clip_list
from stvsr.errors import StvsrError
from stvsr.metrics import quantize
from stvsr.model.choose import MODEL_SCHEMA, NONE, OPT_STR, build_model, load_yaml, model_help, model_settings
from stvsr.outputs import check_writable_folder, describe_write_error
from stvsr.runner import ModelFacts
from stvsr.schema import Key, OptionsError, repo_root, resolve_path, with_flags
from stvsr.signals import raise_on_stop_signals, stop_exit_code, stop_name

from .cli import device_of, protocol_of, remove_if_created, run_name
from .evaluator import (
    EvalError,
    EvaluationStopped,
    crop_border_problem,
    keep_scored,
    protocol_forward,
    score_frame,
)
from .protocol import Protocol, Results, with_lr_source

logger = logging.getLogger("stvsr.test_vimeo")

SPLITS = ("slow", "medium", "fast")  # the order of the papers' tables is Fast, Medium, Slow: see TABLE_ORDER
TABLE_ORDER = ("fast", "medium", "slow")
VIMEO_SCHEMA: dict[str, Any] = {
    **{k: v for k, v in MODEL_SCHEMA.items() if k != "model"},
    "datasets": {
        "mode": Key(str, "VimeoTest", help="the dataset of a split: a registered dataset (DATASETS)"),
        "dataroot_GT": Key(OPT_STR, path=True, help="the Vimeo septuplet 'sequences' folder"),
        "dataroot_LQ": Key(OPT_STR, path=True, help="the LR 'sequences' folder; empty: LR made from GT"),
        "list_dir": Key(OPT_STR, path=True, help="folder of sep_{slow,medium,fast}_testset.txt"),
        "lists": Key((dict, NONE), help="split -> list file (relative: by the same rule)"),
        "degradation": Key(OPT_STR, choices=(None, "BI", "BD"), casefold=True),
        "missing": Key(OPT_STR, choices=(None, "skip", "error")),
        "splits": Key((list, NONE)),
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test_vimeo.py", description="Evaluate on Vimeo-90K-T Slow/Medium/Fast.")
    p.add_argument(
        "-opt",
        "--opt",
        help="YAML options (options/test/*vimeo*.yml), or a training YAML / experiments/<name>/options.yml",
    )
    p.add_argument("--model", help=model_help())
    p.add_argument("--checkpoint", help="weights (.pth) to load; a checkpoint of codes/train.py alone names its model")
    p.add_argument("--dataroot_GT", help="the Vimeo septuplet 'sequences' folder")
    p.add_argument("--dataroot_LQ", help="LR 'sequences' folder; without it LR is made from GT (--degradation)")
    p.add_argument("--degradation", choices=["BI", "BD"])
    p.add_argument("--list_dir", help="folder of sep_{slow,medium,fast}_testset.txt (default: GT's parent)")
    p.add_argument("--splits", nargs="+", choices=SPLITS, help="default: all three")
    p.add_argument("--missing", choices=["skip", "error"], help="clips of a list not on disk (default skip)")
    p.add_argument("--pad_multiple", type=int)
    p.add_argument("--self_ensemble", action="store_true", default=None)
    p.add_argument("--tile", type=int)
    p.add_argument("--tile_overlap", type=int)
    p.add_argument("--results_root")
    p.add_argument("--name")
    p.add_argument("--device")
    p.add_argument("--no_progress", action="store_true")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    opt = load_yaml(args.opt, VIMEO_SCHEMA) if args.opt else {}
    data = {k: v for k, v in (opt.get("datasets") or {}).items() if v is not None}
    if data.get("lists"):
        base = Path(args.opt).resolve().parent
        try:
            data["lists"] = {
                s: resolve_path(f, base, repo_root(), f"datasets.lists.{s}") for s, f in data["lists"].items()
            }
        except OptionsError as exc:
            raise EvalError(f"-opt {exc.within(f'{args.opt}: ')}") from None
    data = with_flags(data, args, ("dataroot_GT", "dataroot_LQ", "degradation", "list_dir", "splits", "missing"))
    if not data.get("dataroot_GT"):
        raise EvalError("no GT: give --dataroot_GT (the Vimeo 'sequences' folder) or datasets.dataroot_GT")
    model = model_settings(opt, args.model, args.checkpoint)
    network = model["network"]
    paths = with_flags(opt.get("path"), args, ("results_root",))
    protocol = with_flags(opt.get("protocol"), args, ("pad_multiple", "self_ensemble", "tile", "tile_overlap"))
    if protocol.get("time_factor", 2) != 2:
        raise EvalError(
            f"protocol.time_factor {protocol['time_factor']}: Vimeo-90K-T septuplets are scored at x2 in time "
            "(LR frames 1, 3, 5, 7); use codes/test.py for other time factors"
        )
    with_lr_source(protocol, data.get("dataroot_LQ"), data.get("degradation"))
    lists = dict(data.get("lists") or {})
    list_dir = Path(data.get("list_dir") or Path(data["dataroot_GT"]).expanduser().parent)
    splits = list(data.get("splits") or SPLITS)
    for split in splits:
        lists.setdefault(split, str(list_dir / f"sep_{split}_testset.txt"))
        if not Path(lists[split]).is_file():
            raise EvalError(f"split '{split}': list file {lists[split]} not found (set --list_dir or datasets.lists)")
    return {
        "name": run_name(args.name, opt.get("name"), f"{network['which_model_G']}_Vimeo"),
        "data": data,
        "lists": {s: lists[s] for s in splits},
        **model,
        "results_root": Path(paths.get("results_root") or "experiments/results"),
        "protocol": protocol_of(protocol),
        "device": device_of(args.device, opt.get("device")),
        "progress": not args.no_progress,
    }


def build_split(settings: dict[str, Any], split: str) -> tuple[Any, int]:
    """The dataset of a split (``datasets.mode``, default ``VimeoTest``, from the ``DATASETS`` registry) and the
    number of listed clips missing on disk."""
    data, protocol = settings["data"], settings["protocol"]
    list_file = settings["lists"][split]
    listed = len(read_clip_list(list_file))
    options = {
        "mode": data.get("mode") or "VimeoTest",
        "dataroot_GT": data["dataroot_GT"],
        "dataroot_LQ": data.get("dataroot_LQ"),
        "list_file": list_file,
        "missing": data.get("missing") or "skip",
        "scale": protocol.scale,
    }
    if not data.get("dataroot_LQ"):
        options["degradation"] = protocol.degradation
    try:
        dataset = build_dataset(options)
    except DataError as exc:
        if isinstance(exc, MissingClipsError) and exc.left == 0 and options["missing"] == "skip":
            return None, listed  # none of the split's clips is on disk: reported as a missing split
        raise EvalError(f"split '{split}': {exc}") from None
    return dataset, listed - len(dataset)


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, dataset: Any, settings: dict[str, Any], label: str) -> Results:
    protocol: Protocol = settings["protocol"]
    results = Results(protocol, label, ModelFacts.of(model).size_multiple)
    run = protocol_forward(model, protocol)
    bar = None
    if settings["progress"]:
        bar = tqdm(total=len(dataset), unit="clip")
    try:
        with keep_scored(results, len(dataset)):
            for i in range(len(dataset)):
                _score_clip(run, dataset[i], results, settings)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def _score_clip(run: Any, sample: dict[str, Any], results: Results, settings: dict[str, Any]) -> None:
    """One septuplet: LR frames in, all 7 outputs scored into ``results``."""
    protocol: Protocol = settings["protocol"]
    x = sample["LQs"][None].to(settings["device"])
    y = run(x)
    out = quantize(y[0].float().cpu().permute(0, 2, 3, 1).numpy())
    gt = quantize(sample["GT"].permute(0, 2, 3, 1).numpy())  # exact: GT was uint8 / 255
    if out.shape != gt.shape:
        raise EvalError(f"clip {sample['key']}: output {out.shape} vs GT {gt.shape}")
    for t in range(gt.shape[0]):
        results.add(sample["key"], t, f"im{t + 1}.png", 0, score_frame(out[t], gt[t], protocol.crop_border))
    results.clip_lengths[sample["key"]] = gt.shape[0]


def table(rows: list[tuple[str, int, int, int, dict[str, float] | None]], protocol: Protocol) -> str:
    """The papers' table: one line per split, PSNR/SSIM in the protocol's colour, clip counts."""
    c = protocol.color
    lines = [f"{'split':<8} {'clips':>6} {'missing':>8} {'PSNR-' + c.upper():>9} {'SSIM-' + c.upper():>8}"]
    for split, n, missing, listed, m in rows:
        if m is None:
            lines.append(f"{split:<8} {0:>6} {missing:>8} {'-':>9} {'-':>8}   (none of {listed} listed clips on disk)")
        else:
            lines.append(f"{split:<8} {n:>6} {missing:>8} {m['psnr_' + c]:>9.4f} {m['ssim_' + c]:>8.4f}")
    return "\n".join(lines)


def nothing_found(settings: dict[str, Any], splits: dict[str, tuple[Any, int]]) -> str:
    """The message when no listed clip of any split is on disk: what the lists ask for and what the root holds."""
    root = Path(settings["data"]["dataroot_GT"]).expanduser()
    entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    held = f"it holds {len(entries)} entries ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''})"
    counts = ", ".join(f"{split} 0 of {missing}" for split, (_, missing) in splits.items())
    return (
        f"nothing to score: no clip of the lists is under dataroot_GT {root} ({counts} listed clips found; "
        f"{held if entries else 'it is empty'}). Give the Vimeo 'sequences' folder (clips as 00001/0266/im1.png)"
    )


def check_crop_border(splits: dict[str, tuple[Any, int]], protocol: Protocol) -> None:
    """``protocol.crop_border`` against the GT frame size (of the first clip on disk), before any network call."""
    if protocol.crop_border <= 0:
        return
    for dataset, _ in splits.values():
        if dataset is not None and len(dataset):
            height, width = dataset[0]["GT"].shape[-2:]
            problem = crop_border_problem(protocol.crop_border, int(height), int(width))
            if problem:
                raise EvalError(problem)
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; SIGINT (Ctrl-C), SIGTERM and SIGHUP alike stop it, keep what was scored as a partial
    table and exit with 128 + the signal's number."""
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
        model = build_model(settings).to(settings["device"]).eval()
        splits = {s: build_split(settings, s) for s in settings["lists"]}  # every list checked before running
        if all(dataset is None for dataset, _ in splits.values()):
            raise EvalError(nothing_found(settings, splits))
        check_crop_border(splits, settings["protocol"])
    except StvsrError as exc:
        remove_if_created(out_dir, created)
        print(f"test_vimeo.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        remove_if_created(out_dir, created)
        print(f"test_vimeo.py: stopped by {stop_name(exc)} before the first clip (nothing scored)", file=sys.stderr)
        return stop_exit_code(exc)
    network, checkpoint = settings["network"]["which_model_G"], settings["checkpoint"] or "none"
    label = f"{type(model).__name__} ({network}), checkpoint {checkpoint}"
    start = time.time()
    rows, parts, written, failed = [], [], [], []
    stopped, partial = None, ""
    for split in [s for s in TABLE_ORDER if s in splits]:
        dataset, missing = splits[split]
        listed = missing + (len(dataset) if dataset is not None else 0)
        if missing:
            logger.warning("split %s: %d of %d listed clips are missing on disk", split, missing, listed)
        if dataset is None:
            rows.append((split, 0, missing, listed, None))
            continue
        try:
            results = evaluate_split(model, dataset, settings, label)
        except EvaluationStopped as exc:  # keep what was scored: the finished splits and this one in part
            stopped, results = exc, exc.results
            partial = (
                f"PARTIAL: split {split}: {len(results.clips())} of {len(dataset)} clips scored (the last maybe in "
                f"part), later splits not run; stopped: {exc}"
            )
        except EvalError as exc:
            print(f"test_vimeo.py: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:  # between two splits
            stopped = EvaluationStopped(
                f"stopped by a signal ({stop_name(exc)}) before split {split}",
                Results(settings["protocol"]),
                stop_exit_code(exc),
                stop_name(exc),
            )
            partial = f"PARTIAL: split {split} and later splits not run; stopped: {stopped}"
            break
        tail = "_partial" if stopped is not None else ""
        if results.frames:
            csv_path = out_dir / f"{settings['name']}_{split}{tail}.csv"
            _write(lambda path, results=results: results.write_csv(path), csv_path, written, failed)
            rows.append((split, len(results.clips()), missing, listed, results.overall()))
            parts.append(f"[{split}] list {settings['lists'][split]}\n{results.report()}")
        if stopped is not None:
            break
    return _write_report(settings, label, model, rows, parts, start, stopped, partial, written, failed)


def _write(write: Any, path: Path, written: list[Path], failed: list[str]) -> None:
    """``write(path)``; a write that fails (the disk filled during the run) is noted in ``failed`` (said once, at
    the end, after the table is printed) instead of losing the rest of the run."""
    if failed:  # the disk is full: do not try every file
        failed.append(str(path))
        return
    try:
        write(path)
        written.append(path)
    except OSError as exc:
        failed.append(describe_write_error(exc, path))


def _write_report(
    settings: dict[str, Any],
    label: str,
    model: torch.nn.Module,
    rows: list[tuple[str, int, int, int, dict[str, float] | None]],
    parts: list[str],
    start: float,
    stopped: EvaluationStopped | None = None,
    partial: str = "",
    written: list[Path] | None = None,
    failed: list[str] | None = None,
) -> int:
    """Print and write the table; when the run ``stopped`` part-way, ``_table_partial.txt`` with the ``partial``
    line, and exit 2 / 128 + the signal's number. A write that fails is one error line (the table is printed)."""
    protocol: Protocol = settings["protocol"]
    out_dir = settings["results_root"] / settings["name"]
    written, failed = list(written or []), list(failed or [])
    if stopped is not None and not rows:
        print(f"test_vimeo.py: {_stop_line(stopped)} (nothing was scored)", file=sys.stderr)
        return stopped.exit_code
    header = [f"model: {label}", f"protocol: {protocol.describe(ModelFacts.of(model).size_multiple)}"]
    report = "\n".join([*header, "", table(rows, protocol)])
    if stopped is not None:
        report += "\n" + partial
    print(report)
    name = f"{settings['name']}_table{'_partial' if stopped is not None else ''}.txt"
    try:
        _write(lambda path: atomic_write(path, report + "\n\n" + "\n\n".join(parts) + "\n"), out_dir / name,
               written, failed)  # fmt: skip
    except KeyboardInterrupt as exc:
        print(f"test_vimeo.py: stopped by {stop_name(exc)} while writing {out_dir / name} (the table is printed "
              "above)", file=sys.stderr)  # fmt: skip
        return stop_exit_code(exc)
    code = 0 if stopped is None else stopped.exit_code
    if failed:
        more = f" ({len(failed) - 1} more file(s) not written)" if len(failed) > 1 else ""
        kept = f"; written: {', '.join(map(str, written))}" if written else ""
        print(f"test_vimeo.py: error: {failed[0]}{more} (the table is printed above{kept})", file=sys.stderr)
        return code or 2
    print(f"results: {out_dir} ({time.time() - start:.1f} s)")
    if stopped is not None:
        print(f"test_vimeo.py: {_stop_line(stopped)}; partial results kept: {', '.join(map(str, written))}",
              file=sys.stderr)  # fmt: skip
    return code


def _stop_line(stopped: EvaluationStopped) -> str:
    return f"{stopped}" if stopped.signal else f"error: {stopped}"
