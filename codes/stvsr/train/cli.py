"""``python codes/train.py``: train a model from a YAML file, in one process or several (``torchrun``).

    python codes/train.py -opt options/train/train_zsm.yml [--set train.lr_G=1e-4] [--auto_resume]
    torchrun --nproc_per_node=N codes/train.py -opt options/train/train_zsm.yml --launcher pytorch

Every way a run can end is one log line and an exit code: 0 done, 1 stopped on purpose (divergence, a full
disk), 2 a mistake found before or during the run (options, data, checkpoint), 128 + signal after SIGINT,
SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import math
import re
import sys

from stvsr.data.io import DataError
from stvsr.device import resolve_device
from stvsr.errors import StvsrError
from stvsr.model.checkpoints import find_latest_checkpoint
from stvsr.signals import raise_on_stop_signals, stop_exit_code, stop_name

from . import options as options_mod
from .actions import TrainingInterrupted, TrainingStopped
from .distributed import DistInfo, init_distributed, shutdown
from .logs import logger
from .trainer import Trainer


def _one_message(exc: BaseException) -> str:
    """The user's message of ``exc``; for one re-raised from a DataLoader worker (whose text holds the worker's
    traceback), its last line without the exception's class name."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())


def main(argv: list[str] | None = None) -> int:
    """``python codes/train.py -opt options/train/train_zsm.yml [--set train.lr_G=1e-4] [--auto_resume]``;
    ``torchrun --nproc_per_node=N codes/train.py -opt ... --launcher pytorch`` for several processes."""
    p = argparse.ArgumentParser(description="Train a space-time video super-resolution model from a YAML file.")
    p.add_argument("-opt", "--opt", required=True, help="YAML options (options/train/*.yml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option, value parsed as YAML (repeatable): --set train.lr_G=1e-4",
    )
    p.add_argument(
        "--auto_resume",
        "--auto-resume",
        action="store_true",
        help="resume from the latest checkpoint of the experiment, if any",
    )
    p.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default="none",
        help="'pytorch': one of several processes started by torchrun (DistributedDataParallel)",
    )
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        opt = options_mod.load(args.opt, args.overrides)
    except options_mod.OptionsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        use_cuda = resolve_device(opt.get("device", "auto"), "device").type == "cuda"
        dist_info = init_distributed(args.launcher, args.local_rank, use_cuda)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opt["dist"] = dist_info.enabled
    resume = "auto" if args.auto_resume else None
    if resume == "auto" and find_latest_checkpoint(opt["path"]["models"]) is None:
        resume = None
    with raise_on_stop_signals():  # before the loop (data, model, checks): a stop signal ends the run cleanly
        try:
            trainer = Trainer(opt, resume=resume, dist_info=dist_info)
        except (StvsrError, ValueError, RuntimeError, OSError) as exc:  # data, checkpoint, lock, free space
            print(f"error: {_one_message(exc)}", file=sys.stderr)
            shutdown(dist_info)
            return 2
        except KeyboardInterrupt as exc:
            print(f"{stop_name(exc)}: stopped before training started (no checkpoint written)", file=sys.stderr)
            shutdown(dist_info)
            return stop_exit_code(exc)
        return _run(trainer, dist_info)


def _run(trainer: Trainer, dist_info: DistInfo) -> int:
    """Train, report, and turn every way the run can end into its log line and exit code."""
    try:
        result = trainer.train()
        if math.isnan(result["loss"]):
            logger.info("Done: iteration %d (no step taken in this run)", result["iter"])
        else:
            logger.info("Done: iteration %d, last loss %.4e", result["iter"], result["loss"])
        trainer.report(result)
    except TrainingStopped as exc:
        logger.error("%s", exc)
        return 1
    except TrainingInterrupted as exc:
        logger.warning("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        logger.warning(
            "%s: stopped at once; checkpoints so far are in %s; continue with --auto_resume",
            stop_name(exc), trainer.models_dir,
        )  # fmt: skip
        return stop_exit_code(exc)
    except DataError as exc:  # found while reading a sample (e.g. a corrupt LMDB value, a frame that fails to decode)
        logger.error("error at iteration %d: %s", trainer.iter, _one_message(exc))
        return 2
    finally:
        trainer.close()
        shutdown(dist_info)
    return 0
