"""Single-process training loop driven by validated options (:mod:`stvsr.options`), CPU or GPU.

Data flows one way: options -> ``stvsr.data.build_dataset`` / ``stvsr.archs.build_arch`` -> this loop ->
checkpoints (one atomic file per save) -> validation with PSNR-Y (``stvsr.eval.metrics``).

- Scheduler stepped "before" the optimiser (Zooming Slow-Mo, STDAN): iteration ``i`` (1-based) uses ``lr(i)``;
  ``train.scheduler_order: after`` gives ``lr(i - 1)`` (RSTT).
- Loss guard: a non-finite loss skips the optimiser step with a warning; ``train.max_bad_steps`` in a row stop
  the run with :class:`TrainingStopped` (the checkpoints already written are untouched).
- Checkpoint ``models/iter_<iteration>.pth``: ``params`` (the model's state_dict, which ``load_official`` and
  ``codes/test.py`` read directly), ``optimizer``, ``scheduler``, ``iter``, ``epoch``, ``rng`` (Python, NumPy,
  torch, CUDA) and the resolved ``options``; the last ``logger.keep_checkpoints`` are kept.
- Exact resume: the training order is a permutation seeded by ``(manual_seed, epoch)``, so a resumed run
  starts inside the epoch where the saved one stopped without reading the skipped samples, and the RNG states
  are restored; with ``n_workers: 0`` a resumed run equals the uninterrupted one bit for bit (CPU).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from stvsr import options as options_mod

from .losses import build_loss
from .schedulers import build_scheduler

logger = logging.getLogger("stvsr.train")

CKPT_RE = re.compile(r"^iter_(\d+)\.pth$")


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (e.g. too many non-finite losses in a row); the message says why."""


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by (seed, epoch), starting at ``start`` (to resume inside it)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return max(self.n - self.start, 0)


def get_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_latest_checkpoint(models_dir: str | os.PathLike) -> Path | None:
    folder = Path(models_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def _setup_logging(log_dir: Path, name: str) -> list[logging.Handler]:
    """A log file in the experiment folder and the console, for the life of one Trainer."""
    log_dir.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(log_dir / f"train_{name}_{time.strftime('%Y%m%d_%H%M%S')}.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    for handler in (file, console):
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return [file, console]


def _tensorboard(log_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("TensorBoard logging off: the 'tensorboard' package is not installed (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(log_dir / "tb_logger"))


class Trainer:
    """Builds everything from the options, then :meth:`train` runs to ``train.niter`` (or ``stop_at``)."""

    def __init__(self, opt: dict[str, Any], resume: str | os.PathLike | None = None) -> None:

        self.opt = opt
        resume = resume if resume is not None else opt["path"]["resume_state"]
        if resume == "auto":
            resume = find_latest_checkpoint(opt["path"]["models"])
        self.exp_dir = options_mod.prepare_experiment(opt, resume=resume is not None)
        self.models_dir = Path(opt["path"]["models"])
        self._log_handlers = _setup_logging(self.exp_dir, opt["name"])
        self.tb = None
        try:
            self._build(opt, resume)
        except BaseException:
            self.close()
            raise

    def _build(self, opt: dict[str, Any], resume: str | os.PathLike | None) -> None:
        from stvsr.archs import build_arch
        from stvsr.checkpoint import load_official
        from stvsr.data import build_dataset

        tr = opt["train"]
        device = opt.get("device", "auto")
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        )
        self.seed = tr["manual_seed"] if tr["manual_seed"] is not None else random.randint(1, 10000)
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

        if opt["path"].get("demo_data"):
            from stvsr.data.demo import ensure_demo_data

            ensure_demo_data(opt["path"]["demo_data"])
        dopt = opt["datasets"]["train"]
        self.train_set = build_dataset(dopt)
        self.batch_size = int(dopt.get("batch_size", 1))
        if len(self.train_set) < self.batch_size:
            raise ValueError(f"datasets.train: {len(self.train_set)} samples, fewer than batch_size {self.batch_size}")
        self.sampler = EpochSampler(len(self.train_set), self.seed, bool(dopt.get("use_shuffle", True)))
        workers = int(dopt.get("n_workers", 0))
        self.loader = DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # the loader's base seed comes from its own generator, not the global torch RNG, so that starting
            # an iterator in the middle of an epoch (resume) draws nothing the uninterrupted run does not
            generator=torch.Generator().manual_seed(self.seed),
        )
        self.iters_per_epoch = len(self.train_set) // self.batch_size
        vopt = opt["datasets"].get("val")
        self.val_set = build_dataset(vopt) if vopt else None

        self.net = build_arch(opt["network_G"]).to(self.device)
        if opt["path"]["pretrain_model_G"] and resume is None:
            load_official(self.net, opt["path"]["pretrain_model_G"], strict=opt["path"]["strict_load"])
            logger.info("Loaded pretrained weights from %s", opt["path"]["pretrain_model_G"])
        params = [p for p in self.net.parameters() if p.requires_grad]
        optim_cls = torch.optim.AdamW if tr["optim"] == "AdamW" else torch.optim.Adam
        self.optimizer = optim_cls(
            params, lr=tr["lr_G"], weight_decay=tr["weight_decay_G"], betas=(tr["beta1"], tr["beta2"])
        )
        self.scheduler = build_scheduler(self.optimizer, tr)
        self.criterion = build_loss(tr["pixel_criterion"], tr["pixel_reduction"]).to(self.device)
        self.iter = 0
        self.epoch = 0
        if resume is not None:
            self.load_checkpoint(resume)
        self.tb = _tensorboard(self.exp_dir, bool(opt.get("use_tb_logger", True)))

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "params": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iter": self.iter,
            "epoch": self.epoch,
            "rng": get_rng_state(),
            "options": self.opt,
        }

    def save_checkpoint(self) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        path = self.models_dir / f"iter_{self.iter:08d}.pth"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.checkpoint_state(), tmp)
        os.replace(tmp, path)
        keep = self.opt["logger"]["keep_checkpoints"]
        found = sorted((int(m.group(1)), p) for p in self.models_dir.iterdir() if (m := CKPT_RE.match(p.name)))
        for _, old in found[: max(len(found) - keep, 0)] if keep > 0 else []:
            old.unlink()
        logger.info("Saved checkpoint %s", path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in ("params", "optimizer", "scheduler", "iter", "epoch", "rng") if k not in state]
        if missing:
            raise ValueError(f"{path}: not a training checkpoint of stvsr (missing {', '.join(missing)})")
        self.net.load_state_dict(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iter, self.epoch = int(state["iter"]), int(state["epoch"])
        set_rng_state(state["rng"])
        logger.info("Resumed from %s (iteration %d, epoch %d)", path, self.iter, self.epoch)

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, net: torch.nn.Module | None = None) -> float:
        """Mean over validation samples of the mean PSNR-Y (dB) of their output frames (of ``net``, default the
        model being trained)."""
        from stvsr.eval.metrics import calculate_psnr, quantize

        model = self.net if net is None else net
        model.eval()
        divisor = int(getattr(model, "size_divisor", 1))
        scores = []
        for i in range(len(self.val_set)):
            sample = self.val_set[i]
            lqs = sample["LQs"][None].to(self.device)
            h, w = lqs.shape[-2:]
            ph, pw = (-h) % divisor, (-w) % divisor
            if ph or pw:
                lqs = F.pad(lqs.flatten(0, 1), (0, pw, 0, ph)).unflatten(0, lqs.shape[:2])
            out = model(lqs)[0, ..., : sample["GT"].shape[-2], : sample["GT"].shape[-1]]
            out_np = quantize(out.float().cpu().permute(0, 2, 3, 1).numpy())
            gt_np = quantize(sample["GT"].permute(0, 2, 3, 1).numpy())
            scores.append(np.mean([calculate_psnr(o, g, 0, test_y_channel=True) for o, g in zip(out_np, gt_np)]))
        self.net.train()
        return float(np.mean(scores))

    def validate_baseline(self) -> float:
        """PSNR-Y of the trivial baseline (bicubic x4, intermediate frames the mean of their neighbours)."""
        from stvsr.archs import build_arch

        return self.validate(build_arch({"which_model_G": "bicubic"}).to(self.device))

    # ---------------------------------------------------------------- loop
    def _step(self, batch: dict[str, Any]) -> float:
        tr = self.opt["train"]
        lqs = batch["LQs"].to(self.device, non_blocking=True)
        gt = batch["GT"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.net(lqs)
        loss = tr["pixel_weight"] * self.criterion(out, gt)
        value = float(loss.detach())
        if not math.isfinite(value):
            return value
        loss.backward()
        if tr["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), tr["grad_clip"])
        self.optimizer.step()
        return value

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``train.niter`` (or ``stop_at``); returns the last loss and validation PSNR."""
        from tqdm import tqdm

        tr, log_opt = self.opt["train"], self.opt["logger"]
        end = min(tr["niter"], stop_at) if stop_at is not None else tr["niter"]
        self.net.train()
        logger.info(
            "Training %s on %s: %d samples, batch %d, %d iterations/epoch, iterations %d -> %d",
            self.opt["name"],
            self.device,
            len(self.train_set),
            self.batch_size,
            self.iters_per_epoch,
            self.iter,
            end,
        )
        bad, last_loss, last_psnr = 0, float("nan"), None
        bar = tqdm(total=end, initial=self.iter, desc="train", dynamic_ncols=True, disable=None)
        before = tr["scheduler_order"] == "before"
        try:
            while self.iter < end:
                in_epoch = self.iter - self.epoch * self.iters_per_epoch
                if in_epoch >= self.iters_per_epoch:
                    self.epoch += 1
                    in_epoch = 0
                self.sampler.set_epoch(self.epoch, in_epoch * self.batch_size)
                t_data = time.perf_counter()
                for batch in self.loader:
                    data_time = time.perf_counter() - t_data
                    self.iter += 1
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                        if before:
                            self.scheduler.step()
                        lr = self.optimizer.param_groups[0]["lr"]
                        loss = self._step(batch)
                        if not before:
                            self.scheduler.step()
                    if not math.isfinite(loss):
                        bad += 1
                        logger.warning("Iteration %d: non-finite loss (%s), step skipped", self.iter, loss)
                        if bad >= tr["max_bad_steps"]:
                            raise TrainingStopped(
                                f"{bad} non-finite losses in a row (train.max_bad_steps={tr['max_bad_steps']}) "
                                f"at iteration {self.iter}; stopped. The last good checkpoint is in "
                                f"{self.models_dir}. Lower train.lr_G, set train.grad_clip or check the data."
                            )
                    else:
                        bad, last_loss = 0, loss
                    iter_time = time.perf_counter() - t_data
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", epoch=self.epoch)
                    if self.iter % log_opt["print_freq"] == 0:
                        logger.info("<epoch:%3d, iter:%8d, lr:%.3e> loss: %.4e", self.epoch, self.iter, lr, loss)
                    if self.tb is not None:
                        self.tb.add_scalar("loss", loss, self.iter)
                        self.tb.add_scalar("lr", lr, self.iter)
                        self.tb.add_scalar("time/iter", iter_time, self.iter)
                        self.tb.add_scalar("time/data", data_time, self.iter)
                    if self.val_set is not None and tr["val_freq"] and self.iter % tr["val_freq"] == 0:
                        last_psnr = self.validate()
                        logger.info("Iteration %d: validation PSNR-Y %.4f dB", self.iter, last_psnr)
                        if self.tb is not None:
                            self.tb.add_scalar("val/psnr_y", last_psnr, self.iter)
                    if self.iter % log_opt["save_checkpoint_freq"] == 0 or self.iter == end:
                        self.save_checkpoint()
                    if self.iter >= end:
                        break
                    t_data = time.perf_counter()
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()
        return {"iter": self.iter, "loss": last_loss, "psnr_y": last_psnr}

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        for handler in self._log_handlers:
            logger.removeHandler(handler)
            handler.close()


def main(argv: list[str] | None = None) -> int:
    """``python codes/train.py -opt options/train/train_zsm.yml [--set train.lr_G=1e-4] [--auto_resume]``."""
    import argparse

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
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.launcher != "none":
        print("error: distributed training (--launcher pytorch) is not implemented yet", file=sys.stderr)
        return 2
    try:
        opt = options_mod.load(args.opt, args.overrides)
    except options_mod.OptionsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    resume = "auto" if args.auto_resume else None
    if resume == "auto" and find_latest_checkpoint(opt["path"]["models"]) is None:
        resume = None
    try:
        trainer = Trainer(opt, resume=resume)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:  # DataError, CheckpointMismatchError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.train()
        logger.info("Done: iteration %d, last loss %.4e", result["iter"], result["loss"])
        if trainer.val_set is not None:
            val_freq = opt["train"]["val_freq"]
            fresh = result["psnr_y"] is not None and val_freq and result["iter"] % val_freq == 0
            psnr = result["psnr_y"] if fresh else trainer.validate()
            baseline = trainer.validate_baseline()
            logger.info(
                "Validation PSNR-Y: model %.4f dB, bicubic baseline %.4f dB (%+.4f dB) on %d samples",
                psnr,
                baseline,
                psnr - baseline,
                len(trainer.val_set),
            )
    except TrainingStopped as exc:
        logger.error("%s", exc)
        return 1
    finally:
        trainer.close()
    return 0
