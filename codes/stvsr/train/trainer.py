"""The trainer, built from validated options (:mod:`stvsr.train.options`): CPU or GPU, one process or many. Its loop is
one step per iteration followed by the periodic actions due at it (:mod:`stvsr.train.actions`: divergence guard,
progress, log line, TensorBoard, validation, checkpoint, stop signals); ``python codes/train.py`` is
:mod:`stvsr.train.cli`.

Data flows one way: options -> ``stvsr.data.build_dataset`` / ``stvsr.archs.build_arch`` -> this loop ->
checkpoints (one atomic file per save) -> validation with PSNR-Y (``stvsr.metrics``).

- Scheduler stepped "before" the optimiser (Zooming Slow-Mo, STDAN): iteration ``i`` (1-based) uses ``lr(i)``;
  ``train.scheduler_order: after`` gives ``lr(i - 1)`` (RSTT).
- Loss: the architecture's ``training_objective(lqs, gt, pixel, feature)``
  (:meth:`stvsr.archs.base.StvsrArch.training_objective`) with ``pixel`` and ``feature`` the weighted sums of the
  ``train.losses`` entries (:func:`stvsr.train.losses.build_losses`; no feature term without feature entries):
  ``pixel(output, GT) + feature(output, GT)``, or what a pair model supervises instead (SAFA's [0, t, 1] frames,
  STARnet's auxiliary outputs). :class:`TrainingObjective` makes it a module's ``forward``, so that
  DistributedDataParallel and ``torch.compile`` wrap the whole loss computation.
- Loss guard: a non-finite loss or gradient skips the optimiser step with a warning; ``train.max_bad_steps`` in
  a row stop the run with :class:`TrainingStopped` (the checkpoints already written are untouched). Weights that
  are not finite are never saved, and never loaded (a pretrained file or a checkpoint to resume).
- One run per experiment folder at a time (:class:`~stvsr.train.experiment.ExperimentLock`); everything that
  can be checked (options, device, data: one training sample and the first validation sample against the
  model's scale, the checkpoint to resume, free space for a checkpoint) is checked before the folder is made.
- SIGINT, SIGTERM and SIGHUP: the current step is finished, a checkpoint written, and the run stops with the
  line that resumes it (:class:`stvsr.signals.DeferredStop`).
- Checkpoints: the format of :mod:`stvsr.model.checkpoints`; the last ``logger.keep_checkpoints`` are kept.
- Exact resume: the order and the augmentation draws of the samples are a function of ``(manual_seed, epoch,
  place in the epoch)`` (:mod:`stvsr.train.sampling`), so a resumed run starts inside the epoch where the
  saved one stopped without reading the skipped samples; with the RNG states restored, a resumed run equals
  the uninterrupted one bit for bit on CPU, with any ``n_workers``.
- Distributed (``--launcher pytorch`` under ``torchrun``): DistributedDataParallel; ``datasets.train.batch_size``
  is the **total** over all processes (each takes ``batch_size / world_size``) and one step computes the
  gradient of the single-process step on that batch (a sum-reduced loss is scaled by ``world_size`` because
  DDP averages gradients); only rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import logging
import math
import os
import random
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from stvsr.archs import build_arch
from stvsr.atomic import atomic_path
from stvsr.data import build_dataset
from stvsr.data.demo import ensure_demo_data
from stvsr.data.io import DataError
from stvsr.device import resolve_device
from stvsr.metrics import calculate_psnr, quantize
from stvsr.model.checkpoints import checkpoint_name, find_latest_checkpoint, list_checkpoints, read_training_checkpoint
from stvsr.model.weights import check_finite, compare, load_official
from stvsr.outputs import OutputError, check_writable_folder, describe_write_error, free_space
from stvsr.runner import ModelFacts, reconcile_scale, run_padded
from stvsr.signals import DeferredStop, ignore_stop_signals

from .actions import (
    Checkpointing,
    DivergenceGuard,
    LogLine,
    PeriodicAction,
    ProgressBar,
    StepRecord,
    StopCheck,
    TensorBoardScalars,
    TrainingInterrupted,
    TrainingStopped,
    Validation,
)
from .distributed import DistInfo, barrier, gather_objects, sum_over_ranks
from .experiment import ExperimentLock, prepare_experiment
from .logs import attach_log_file, close_logging, log_root, open_tensorboard, quiet_logging, setup_logging
from .losses import WeightedSum, build_losses
from .optimizers import build_optimizer
from .rng import get_rng_state, set_rng_state
from .sampling import EpochSampler, SeededSamples
from .schedulers import build_scheduler

__all__ = ["Trainer", "TrainingInterrupted", "TrainingStopped", "find_latest_checkpoint"]

logger = logging.getLogger("stvsr.train")


def select_trainable(
    model: torch.nn.Module, trainable: list[str] | None = None, freeze: list[str] | None = None
) -> list[str]:
    """Freeze parameters by name (``train.trainable`` / ``train.freeze``); returns the trainable names.

    A pattern matches a parameter name it is a substring of (``TMB`` matches ``pcd_align.TMB_A_l1.f_process.0.weight``,
    as TMNet's official stage 2 selects), or that it matches as a glob when it holds ``*``, ``?`` or ``[``
    (``pcd_align.*.weight``). With ``trainable``, only the parameters matching one of its patterns train; then
    those matching a ``freeze`` pattern are frozen too. A pattern that matches no parameter is an error (a typo
    would otherwise silently train everything or nothing), and so is a selection that leaves nothing to train.
    """

    def matches(pattern: str, name: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern) if any(ch in pattern for ch in "*?[") else pattern in name

    names = [name for name, _ in model.named_parameters()]
    for key, patterns in (("trainable", trainable), ("freeze", freeze)):
        for pattern in patterns or ():
            if not any(matches(pattern, name) for name in names):
                raise ValueError(
                    f"train.{key}: pattern {pattern!r} matches no parameter of {type(model).__name__} "
                    f"(names look like {names[0]!r}, {names[-1]!r})"
                )
    kept = []
    for name, p in model.named_parameters():
        train = trainable is None or any(matches(pat, name) for pat in trainable)
        train = train and not any(matches(pat, name) for pat in freeze or ())
        p.requires_grad_(train)
        if train:
            kept.append(name)
    if not kept:
        raise ValueError(f"train.trainable {trainable} / train.freeze {freeze}: no parameter is left to train")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("Training %d of %d parameter tensors (%s of %s parameters); the others are frozen",
                len(kept), len(names), f"{n_train:,}", f"{n_all:,}")  # fmt: skip
    return kept


def time_argument(model: torch.nn.Module, time: torch.Tensor) -> torch.Tensor:
    """A batch's time stamps (B, n), checked against the model: it must take them (``takes_time``, e.g. TMNet)."""
    if not ModelFacts.of(model).takes_time:
        raise ValueError(
            f"the samples carry time stamps ('time', e.g. datasets mode Adobe240) but {type(model).__name__} takes "
            f"none: use a model with forward(x, t) (TMNet) or a dataset without time stamps"
        )
    return time


def _network_difference(saved: Any, current: dict[str, Any]) -> str:
    """The ``network_G`` keys whose values differ between a checkpoint and the options, as ``key a -> b``."""
    if not isinstance(saved, dict):
        return ""
    keys = sorted(set(saved) | set(current), key=str)
    return ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k))


def _check_sample(sample: dict[str, Any], upscale: int, where: str, model_name: str) -> None:
    """One sample against the model: GT frames ``upscale`` times the LR size, 2N-1 of them for N LR frames (unless
    the sample carries time stamps, which say which frames the GT holds). :class:`DataError` naming the set."""
    lqs, gt = sample["LQs"], sample["GT"]
    key = sample.get("key", "0")
    (n, _, h, w), (m, _, hh, ww) = lqs.shape, gt.shape
    if (hh, ww) != (upscale * h, upscale * w):
        raise DataError(
            f"{where}: sample {key}: LR frames are {w}x{h} (W x H) and GT frames {ww}x{hh}, but {model_name} "
            f"upscales x{upscale} (GT must be {upscale * w}x{upscale * h}): check dataroot_LQ / dataroot_GT and scale"
        )
    if "time" not in sample and m != 2 * n - 1:
        raise DataError(
            f"{where}: sample {key}: {n} LR frames and {m} GT frames, but the model makes 2N-1 = {2 * n - 1} "
            f"frames from N: check N_frames and LQ_index_list"
        )


def _gradient_norm(parameters: Any) -> torch.Tensor:
    """The 2-norm of all gradients together (non-finite when any gradient is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def checkpoint_size_estimate(model: torch.nn.Module, ema: bool) -> int:
    """Bytes of a checkpoint of ``model``, at least: its weights, Adam's two moments (3x) and an EMA copy (the
    file also holds the RNG states and the options: a few hundred kB more)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return weights * (4 if ema else 3)


class TrainingObjective(torch.nn.Module):
    """The model's ``training_objective`` as this module's ``forward``: what DistributedDataParallel and
    ``torch.compile`` wrap (its parameters are the model's)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        lqs: torch.Tensor,
        gt: torch.Tensor,
        pixel: WeightedSum,
        feature: WeightedSum | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model.training_objective(lqs, gt, pixel, feature, time)


def _resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    device = resolve_device(name, "device")  # one message for a device this machine does not have
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist_info.local_rank)
    return device


def offset_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of the convolutions that predict deformable offsets and masks (every module of
    :mod:`stvsr.ops.modules` names its offset conv in ``offset_conv_name``)."""
    found: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        name = getattr(module, "offset_conv_name", None)
        conv = getattr(module, name, None) if isinstance(name, str) else None
        if isinstance(conv, torch.nn.Module):
            found.update((id(p), p) for p in conv.parameters())
    return list(found.values())


def param_groups(
    model: torch.nn.Module, params: list[torch.nn.Parameter], lr: float, dcn_lr_mul: float = 1.0
) -> list[dict[str, Any]]:
    """Optimiser groups: ``params`` at ``lr``, except the deformable offset convs at ``lr * dcn_lr_mul``
    (``train.dcn_lr_mul``, as BasicSR's EDVR training, which multiplies the learning rate of its DCN parameters:
    a smaller step for the offsets keeps them from growing large early in training). One group when 1."""
    if dcn_lr_mul == 1.0:
        return [{"params": params, "lr": lr}]
    offsets = {id(p) for p in offset_parameters(model)}
    normal = [p for p in params if id(p) not in offsets]
    dcn = [p for p in params if id(p) in offsets]
    if not dcn:
        logger.warning(
            "train.dcn_lr_mul=%g: %s has no deformable offset conv; ignored", dcn_lr_mul, type(model).__name__
        )
        return [{"params": params, "lr": lr}]
    logger.info("Deformable offset convs (%d tensors) train at lr x %g", len(dcn), dcn_lr_mul)
    return [{"params": normal, "lr": lr}, {"params": dcn, "lr": lr * dcn_lr_mul}]


class EMA:
    """Exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * weights`` after every step
    (floating buffers averaged too, integer buffers copied)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        source = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.lerp_(source[name], 1.0 - self.decay)
            else:
                value.copy_(source[name])


class Trainer:
    """Builds everything from the options, then :meth:`train` runs to ``train.niter`` (or ``stop_at``)."""

    def __init__(
        self, opt: dict[str, Any], resume: str | os.PathLike | None = None, dist_info: DistInfo | None = None
    ) -> None:
        self.opt = opt
        self.dist = dist_info or DistInfo()
        self.exp_dir = Path(opt["path"]["experiments_root"])
        self._log_handlers = setup_logging() if self.dist.is_main else quiet_logging()
        self.models_dir = Path(opt["path"]["models"])
        self.tb = None
        self._lock: ExperimentLock | None = None
        try:
            resume = resume if resume is not None else opt["path"]["resume_state"]
            if resume == "auto":
                resume = find_latest_checkpoint(opt["path"]["models"])
            self._build(opt, resume)  # options, data, model and checkpoint all checked ...
            if self.dist.is_main:  # ... before experiments/<name>/ is made (a failed check leaves nothing)
                check_writable_folder(self.exp_dir.parent, "the experiments folder")
                self._lock = ExperimentLock(self.exp_dir).acquire()  # a second run of the experiment stops here
                self._check_free_space()
                opt["run_id"] = self.run_id
                self.exp_dir = prepare_experiment(opt, resume=resume is not None)
                attach_log_file(self._log_handlers, self.exp_dir, opt["name"])
                self.tb = open_tensorboard(self.exp_dir, bool(opt.get("use_tb_logger", True)))
            barrier(self.dist)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- construction
    def _build(self, opt: dict[str, Any], resume: str | os.PathLike | None) -> None:
        tr = opt["train"]
        self.device = _resolve_device(opt.get("device", "auto"), self.dist)
        self._set_determinism(tr["deterministic"])
        self.seed = tr["manual_seed"] if tr["manual_seed"] is not None else random.randint(1, 10000)
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        if opt.get("ignored_options"):
            logger.info("Options with no effect here (accepted so that official configs load): %s",
                        ", ".join(opt["ignored_options"]))  # fmt: skip
        self._build_data(opt)
        self._build_model(opt, resume)
        self.scale = self._reconcile_scale()
        self._check_samples()
        self.iter = 0
        self.epoch = 0
        self.run_id = uuid.uuid4().hex  # a new run; a resumed one keeps the id its checkpoint carries
        if resume is not None:
            self.load_checkpoint(resume)

    def _check_samples(self) -> None:
        """Read the first training sample and the first validation sample and check them against the model
        (LR size x scale = GT size, 2N-1 GT frames for N LR frames), so that a data mistake is found before the
        experiment folder is made and before hours of training, not at the first validation. The RNG states are
        restored afterwards: the check draws no number the run would have drawn."""
        rng = get_rng_state()
        try:
            samples = [("datasets.train", self.train_set[0])]
            if self.val_set is not None and len(self.val_set):
                samples.append(("datasets.val", self.val_set[0]))
            for where, sample in samples:
                _check_sample(sample, self.scale, where, type(self.model).__name__)
        finally:
            set_rng_state(rng)

    def _reconcile_scale(self) -> int:
        """The run's one spatial factor: the options' ``scale``, the datasets' and the model's agree
        (:func:`stvsr.runner.reconcile_scale`), or one error lists them."""
        named = {"scale": self.opt["scale"], "datasets.train.scale": getattr(self.train_set, "scale", None)}
        if self.val_set is not None:
            named["datasets.val.scale"] = getattr(self.val_set, "scale", None)
        return int(reconcile_scale(ModelFacts.of(self.model).scales, type(self.model).__name__, **named))

    def _check_free_space(self) -> None:
        """Refuse a run whose file system cannot hold one checkpoint; warn when it cannot hold those to keep."""
        size = checkpoint_size_estimate(self.model, self.ema is not None)
        free = free_space(self.exp_dir)
        if free is None:
            return
        keep = max(self.opt["logger"]["keep_checkpoints"], 1) + 1  # a save writes the new file before pruning
        mb = 2**20
        if free < size:
            raise OutputError(
                f"{self.exp_dir.parent}: {free / mb:.1f} MB free, less than one checkpoint of this model "
                f"(about {size / mb:.1f} MB): free space or set path.experiments_root elsewhere"
            )
        if free < size * keep:
            logger.warning(
                "%s: %.1f MB free, less than the %d checkpoints of about %.1f MB this run keeps at once",
                self.exp_dir.parent, free / mb, keep, size / mb,
            )  # fmt: skip

    def _set_determinism(self, deterministic: bool) -> None:
        if not deterministic:
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            return
        # cuBLAS needs this before its first use to be deterministic (CUDA >= 10.2)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        if self.device.type == "cuda":
            logger.warning(
                "train.deterministic: the CUDA deformable-convolution backward accumulates with atomics, so runs "
                "with DCN models still differ in the last bits on GPU (CPU runs are bit-exact)"
            )

    def _build_data(self, opt: dict[str, Any]) -> None:
        if opt["path"].get("demo_data"):
            if self.dist.is_main:  # says so when it builds the set (first use), with progress bars
                ensure_demo_data(opt["path"]["demo_data"], progress=True)
            barrier(self.dist)
        dopt = opt["datasets"]["train"]
        self.train_set = build_dataset(dopt)
        self.batch_size = int(dopt.get("batch_size", 1))  # the total over all processes
        world = self.dist.world_size
        if self.batch_size % world:
            raise ValueError(
                f"datasets.train.batch_size {self.batch_size} is the total batch and must be divisible by the "
                f"number of processes ({world})"
            )
        per_rank = self.batch_size // world
        self.sampler = EpochSampler(
            self.train_set, world, self.dist.rank, bool(dopt.get("use_shuffle", True)), seed=self.seed
        )
        if self.sampler.num_samples < per_rank:
            raise ValueError(f"datasets.train: {len(self.train_set)} samples, fewer than batch_size {self.batch_size}")
        workers = int(dopt.get("n_workers", 0))
        self.loader = DataLoader(
            SeededSamples(self.train_set),
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=ignore_stop_signals if workers > 0 else None,
        )
        self.iters_per_epoch = self.sampler.num_samples // per_rank
        vopt = opt["datasets"].get("val")
        self.val_set = build_dataset(vopt) if vopt and self.dist.is_main else None

    def _build_model(self, opt: dict[str, Any], resume: str | os.PathLike | None) -> None:
        tr = opt["train"]
        self.model = build_arch(opt["network_G"]).to(self.device)
        if tr["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        if opt["path"]["pretrain_model_G"] and resume is None:
            load_official(self.model, opt["path"]["pretrain_model_G"], strict=opt["path"]["strict_load"])
            logger.info("Loaded pretrained weights from %s", opt["path"]["pretrain_model_G"])
        if tr["trainable"] is not None or tr["freeze"] is not None:
            select_trainable(self.model, tr["trainable"], tr["freeze"])
        self.net = TrainingObjective(self.model)
        if self.dist.enabled:
            self.net = DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=tr["find_unused_parameters"],
            )
        if tr["compile"]:  # after DDP, so that DDP's optimiser splits the graph at its gradient buckets
            self.net = torch.compile(self.net)
        self.ema = EMA(self.model, tr["ema_decay"]) if tr["ema_decay"] else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(
            tr["optim"],
            param_groups(self.model, params, tr["lr_G"], tr.get("dcn_lr_mul", 1.0)),
            lr=tr["lr_G"],
            weight_decay=tr["weight_decay_G"],
            betas=(tr["beta1"], tr["beta2"]),
        )
        self.scheduler = build_scheduler(self.optimizer, tr)
        self.pixel_loss, self.feature_loss = build_losses(tr["losses"])
        self.pixel_loss.to(self.device)
        if self.feature_loss is not None:
            self.feature_loss.to(self.device)
        # DDP averages the processes' gradients; a summed loss times world_size gives the one-process gradient
        self.loss_scale = float(self.dist.world_size) if self.pixel_loss.sums else 1.0
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tr["amp"] or "")
        if self.amp_dtype is not None and self.device.type != "cuda":
            raise ValueError(
                f"train.amp: {tr['amp']} mixed precision needs a CUDA device; this run is on {self.device}"
            )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self, rng_ranks: list[Any] | None = None) -> dict[str, Any]:
        state = {
            "params": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iter": self.iter,
            "epoch": self.epoch,
            "rng": get_rng_state(),
            "options": self.opt,
            # what the weights are: codes/test.py, test_vimeo.py and stvsr-infer rebuild the model from these
            "network_G": self.opt["network_G"],
            "scale": self.scale,
            "run_id": self.run_id,  # the run of experiments/<name>/options.yml these weights belong to
        }
        if rng_ranks is not None and len(rng_ranks) > 1:
            state["rng_ranks"] = rng_ranks
        if self.ema is not None:
            state["params_ema"] = self.ema.model.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save_checkpoint(self) -> Path | None:
        """Every process calls it (the RNG states of all are gathered); rank 0 writes. Non-finite weights are not
        saved, and a failed write (a full disk) stops every process with :class:`TrainingStopped`: the previous
        checkpoints are untouched, and no partial file is left."""
        try:
            check_finite(self.model.state_dict(), f"the weights at iteration {self.iter}")
        except ValueError as exc:  # every process holds the same weights: all stop here
            raise TrainingStopped(f"{exc} Not saved; {self._last_checkpoint_line()}") from None
        rng_ranks = gather_objects(get_rng_state(), self.dist)
        path = self.checkpoint_path(self.iter)
        problem = self._write_checkpoint(path, rng_ranks) if self.dist.is_main else None
        if sum_over_ranks(float(problem is not None), self.dist) > 0:
            problem = problem or "rank 0 could not write a checkpoint"
            raise TrainingStopped(f"{problem}. Free space, then continue: {self._last_checkpoint_line()}")
        if not self.dist.is_main:
            return None
        keep = self.opt["logger"]["keep_checkpoints"]
        for old in list_checkpoints(self.models_dir)[keep:] if keep > 0 else []:
            old.unlink()
        logger.info("Saved checkpoint %s", path)
        return path

    def _write_checkpoint(self, path: Path, rng_ranks: list[Any] | None) -> str | None:
        """Write the checkpoint atomically; None, or one line saying why it could not be written."""
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(self.checkpoint_state(rng_ranks), tmp)
        except OSError as exc:
            return describe_write_error(exc, path)
        except RuntimeError as exc:  # torch's zip writer reports a failed write without its errno
            free = free_space(path)
            room = f" ({free / 2**20:.1f} MB free on its file system)" if free is not None else ""
            return f"cannot write {path}: the write failed{room} ({str(exc).splitlines()[0][:120]})"
        return None

    def _last_checkpoint_line(self) -> str:
        """Where the run can be continued from, for the messages of a stopped run."""
        latest = find_latest_checkpoint(self.models_dir)
        if latest is None:
            return f"no checkpoint was written yet in {self.models_dir}"
        return f"the last good checkpoint is {latest} (python codes/train.py -opt ... --auto_resume continues from it)"

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from ``path``: every problem (a damaged file, non-finite weights, another network, an iteration
        past ``train.niter``) is one message that says what to do, found before the experiment folder is touched."""
        state = read_training_checkpoint(path)
        check_finite(state["params"], str(path))
        self._check_fits(state, path)
        niter = self.opt["train"]["niter"]
        if int(state["iter"]) > niter:
            raise ValueError(
                f"checkpoint {path} is at iteration {int(state['iter'])}, past train.niter {niter}: nothing is left "
                f"to train; raise train.niter (--set train.niter=N) to continue the run"
            )
        self.run_id = str(state.get("run_id") or self.run_id)
        self.model.load_state_dict(state["params"])
        if self.ema is not None:
            if "params_ema" not in state:
                raise ValueError(f"{path}: train.ema_decay is set but the checkpoint holds no EMA weights")
            self.ema.model.load_state_dict(state["params_ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.iter, self.epoch = int(state["iter"]), int(state["epoch"])
        ranks = state.get("rng_ranks")
        set_rng_state(ranks[self.dist.rank] if ranks and len(ranks) == self.dist.world_size else state["rng"])
        logger.info("Resumed from %s (iteration %d, epoch %d)", path, self.iter, self.epoch)
        if self.iter == niter:
            logger.info("The checkpoint is at train.niter (%d): the run is complete, nothing to train", niter)

    def _check_fits(self, state: dict[str, Any], path: str | os.PathLike) -> None:
        """The checkpoint's weights fit the model the options build; else one short message naming the
        ``network_G`` settings that changed since the run was started."""
        report = compare(self.model, state["params"], str(path))
        if report.ok:
            return
        changed = _network_difference(state.get("network_G"), self.opt["network_G"])
        what = (
            f"the run was trained with other network_G settings ({changed})"
            if changed
            else f"its weights do not fit {type(self.model).__name__} ({len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.mismatched)} differently shaped tensors)"
        )
        raise ValueError(
            f"cannot resume from {path}: {what}. Resume with the network_G the run was trained with, or start a new "
            f"run: another name (--set name=...), or without --auto_resume (the folder is then archived)"
        )

    # ---------------------------------------------------------------- validation
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validated and reported: the EMA when ``train.ema_decay`` is set."""
        return self.ema.model if self.ema is not None else self.model

    @torch.no_grad()
    def validate(self, net: torch.nn.Module | None = None, images: int = 0) -> float:
        """Mean over validation samples of the mean PSNR-Y (dB) of their output frames (of ``net``, default
        :attr:`eval_model`); the first ``images`` samples' middle frames go to TensorBoard as
        [bicubic baseline | output | GT]."""
        model = self.eval_model if net is None else net
        upscale = ModelFacts.of(model).upscale
        was_training = model.training
        model.eval()
        scores = []
        try:
            for i in range(len(self.val_set)):
                sample = self.val_set[i]
                _check_sample(sample, upscale, "datasets.val", type(model).__name__)
                out = self._predict(model, sample["LQs"], sample["GT"].shape[-2:], sample.get("time"))
                out_np = quantize(out.float().cpu().permute(0, 2, 3, 1).numpy())
                gt_np = quantize(sample["GT"].permute(0, 2, 3, 1).numpy())
                scores.append(np.mean([calculate_psnr(o, g, 0, test_y_channel=True) for o, g in zip(out_np, gt_np)]))
                if i < images and self.tb is not None:
                    self._log_triplet(sample, out_np, gt_np)
        finally:
            model.train(was_training)
        return float(np.mean(scores))

    def _predict(
        self, model: torch.nn.Module, lqs: torch.Tensor, size: torch.Size, time: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``model`` on one sample's LR frames, zero-padded to its size multiple and cropped back to ``size``
        (:func:`stvsr.runner.run_padded`); with the sample's time stamps ``time`` (n,) when it carries them
        (``model(lqs, time)``, e.g. TMNet)."""
        args = () if time is None else (time_argument(model, time[None]).to(self.device),)
        facts = ModelFacts.of(model)
        with self._autocast():
            out = run_padded(lambda x: model(x, *args), lqs[None].to(self.device), facts.size_multiple, facts.upscale)
        return out[0, ..., : size[0], : size[1]]

    @functools.cached_property
    def _bicubic(self) -> torch.nn.Module:
        """The trivial baseline (bicubic x4, intermediate frames the mean of their neighbours), built once."""
        return build_arch({"which_model_G": "bicubic"}).to(self.device)

    def _log_triplet(self, sample: dict[str, Any], out_np: np.ndarray, gt_np: np.ndarray) -> None:
        middle = out_np.shape[0] // 2
        bicubic = self._predict(self._bicubic, sample["LQs"], sample["GT"].shape[-2:], sample.get("time"))
        base = quantize(bicubic[middle].float().cpu().permute(1, 2, 0).numpy())
        triplet = np.concatenate([base, out_np[middle], gt_np[middle]], axis=1)
        self.tb.add_image(f"val/{sample.get('key', 'sample')}", triplet, self.iter, dataformats="HWC")

    def validate_baseline(self) -> float:
        """PSNR-Y of the trivial baseline (bicubic x4, intermediate frames the mean of their neighbours)."""
        return self.validate(self._bicubic)

    # ---------------------------------------------------------------- loop
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _step(self, batch: dict[str, Any]) -> tuple[float, str | None]:
        """One optimiser step; returns the loss of the whole (all-process) batch and, when the step was skipped,
        why (a non-finite loss or gradient)."""
        tr = self.opt["train"]
        lqs = batch["LQs"].to(self.device, non_blocking=True)
        gt = batch["GT"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        # time stamps (B, n) of samples that carry them (Adobe240): forward(lqs, time), n frames per pair
        time = None if "time" not in batch else time_argument(self.model, batch["time"]).to(self.device)
        with self._autocast():
            loss = self.net(lqs, gt, self.pixel_loss, self.feature_loss, time).float() * self.loss_scale
        # every process must agree to skip, or DDP's gradient all-reduce would wait forever
        value = sum_over_ranks(float(loss.detach()), self.dist) / self.dist.world_size
        if not math.isfinite(value):
            return value, f"non-finite loss ({value})"
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if tr["grad_clip"]:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tr["grad_clip"])
        else:
            norm = _gradient_norm(self.model.parameters())
        # after DDP's all-reduce every process holds the same gradients, so all agree; fp16's scaler skips these
        # steps itself (and lowers its scale)
        if self.scaler is None and not math.isfinite(float(norm)):
            return value, f"non-finite gradient (norm {float(norm)})"
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return value, None

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``train.niter`` (or ``stop_at``); returns the iteration, the last loss and the last validation
        PSNR-Y. Each iteration is one step, then the periodic actions due at it (:meth:`actions`)."""
        end = min(self.opt["train"]["niter"], stop_at) if stop_at is not None else self.opt["train"]["niter"]
        self.net.train()
        logger.info(
            "Training %s on %s x %d process(es): %d samples, batch %d, %d iterations/epoch, iterations %d -> %d",
            self.opt["name"], self.device, self.dist.world_size, len(self.train_set), self.batch_size,
            self.iters_per_epoch, self.iter, end,
        )  # fmt: skip
        stop = DeferredStop()
        with self._console(end) as bar:
            actions = self.actions(end, bar, stop)
            stop.install()
            try:
                for batch, started, data_seconds in self._batches(end):
                    record = self._iteration(batch, started, data_seconds)
                    for action in actions:
                        if action.due(record.iteration, end):
                            action(record)
            finally:
                stop.restore()
        guard, validation = actions[0], next(a for a in actions if isinstance(a, Validation))
        return {"iter": self.iter, "loss": guard.last_loss, "psnr_y": validation.last_psnr}

    def actions(self, end: int, bar: Any, stop: DeferredStop) -> list[PeriodicAction]:
        """What happens after each step, in order (:mod:`stvsr.train.actions`); the divergence guard first."""
        tr, log_opt = self.opt["train"], self.opt["logger"]
        checkpointing = Checkpointing(log_opt["save_checkpoint_freq"], self)
        val_freq = tr["val_freq"] if self.val_set is not None else None
        actions = [
            DivergenceGuard(tr["max_bad_steps"], self.models_dir),
            ProgressBar(bar),
            LogLine(log_opt["print_freq"], end, self),
            *([TensorBoardScalars(self.tb)] if self.tb is not None else []),
            Validation(val_freq, self, log_opt["val_images"]),
            checkpointing,
            StopCheck(stop, self, checkpointing),
        ]
        return actions

    @contextlib.contextmanager
    def _console(self, end: int) -> Iterator[Any]:
        """The progress bar (rank 0, on a terminal), log lines written above it; TensorBoard flushed at the end."""
        bar = tqdm(
            total=end, initial=self.iter, desc="train", dynamic_ncols=True, disable=None if self.dist.is_main else True
        )
        try:
            with logging_redirect_tqdm(loggers=[log_root]):  # log lines above the bar (tqdm.write), not glued to it
                yield bar
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()

    def _batches(self, end: int) -> Iterator[tuple[dict[str, Any], float, float]]:
        """The batches of iterations ``self.iter + 1 .. end``, epoch after epoch, each with the time its iteration
        started (before waiting for the batch) and the seconds spent waiting."""
        while self.iter < end:
            in_epoch = self.iter - self.epoch * self.iters_per_epoch
            if in_epoch >= self.iters_per_epoch:
                self.epoch += 1
                in_epoch = 0
            self.sampler.set_epoch(self.epoch, in_epoch * (self.batch_size // self.dist.world_size))
            started = time.perf_counter()
            for batch in self.loader:
                yield batch, started, time.perf_counter() - started
                if self.iter >= end:
                    return
                started = time.perf_counter()

    def _iteration(self, batch: dict[str, Any], started: float, data_seconds: float) -> StepRecord:
        """Advance the iteration count and the scheduler (before or after the step, ``train.scheduler_order``), and
        take one step."""
        self.iter += 1
        before = self.opt["train"]["scheduler_order"] == "before"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            if before:
                self.scheduler.step()
            lr = self.optimizer.param_groups[0]["lr"]
            loss, skipped = self._step(batch)
            if not before:
                self.scheduler.step()
        seconds = time.perf_counter() - started
        return StepRecord(self.iter, self.epoch, lr, loss, skipped, seconds, data_seconds)

    def validate_or_save(self, images: int) -> float:
        """:meth:`validate` during training; when the validation data fails (a frame that does not decode, a size
        that does not fit), the training since the last checkpoint is saved before the run stops."""
        try:
            return self.validate(images=images)
        except DataError as exc:
            path = self.save_checkpoint()
            raise TrainingStopped(
                f"validation failed at iteration {self.iter}: {exc}. Saved {path or 'a checkpoint'}: fix datasets.val "
                f"and continue with --auto_resume"
            ) from None

    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (all processes call it: a collective under torchrun)."""
        return sum_over_ranks(float(flag), self.dist) > 0

    def checkpoint_path(self, iteration: int) -> Path:
        return self.models_dir / checkpoint_name(iteration)

    def report(self, result: dict[str, Any]) -> None:
        """Log the final validation PSNR-Y of the model next to the bicubic baseline's (rank 0, with a val set)."""
        if self.val_set is None:
            return
        val_freq = self.opt["train"]["val_freq"]
        fresh = result["psnr_y"] is not None and val_freq and result["iter"] % val_freq == 0
        psnr = result["psnr_y"] if fresh else self.validate()
        baseline = self.validate_baseline()
        logger.info(
            "Validation PSNR-Y: model %.4f dB, bicubic baseline %.4f dB (%+.4f dB) on %d samples%s",
            psnr,
            baseline,
            psnr - baseline,
            len(self.val_set),
            " (EMA weights)" if self.ema is not None else "",
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self._lock is not None:
            self._lock.release()
        close_logging(self._log_handlers)
