"""What the training loop does around its steps: each a small object that the loop calls after every step whose
iteration it is due at (:meth:`PeriodicAction.due`), in the order the trainer lists them.

- :class:`DivergenceGuard`: every step; counts steps skipped for a non-finite loss or gradient, stops the run after
  ``train.max_bad_steps`` in a row.
- :class:`ProgressBar`: every step; the tqdm bar (iteration, loss, lr, epoch).
- :class:`LogLine`: every ``logger.print_freq``; the console / log-file line (loss, lr, time per iteration, data
  time, ETA) and the deformable offsets' divergence check.
- :class:`TensorBoardScalars`: every step with TensorBoard on.
- :class:`Validation`: every ``train.val_freq`` with a validation set.
- :class:`Checkpointing`: every ``logger.save_checkpoint_freq`` and at the end.
- :class:`StopCheck`: every step; a stop signal (SIGINT, SIGTERM, SIGHUP) saves (unless this step just did) and
  ends the run with the line that resumes it.

No framework: an action is anything with ``due(iteration, end)`` and ``__call__(record)``; the trainer builds the
list in :meth:`stvsr.train.trainer.Trainer.actions`.
"""

from __future__ import annotations

import datetime
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stvsr.errors import StvsrError
from stvsr.ops import check_offsets
from stvsr.signals import DeferredStop

if TYPE_CHECKING:  # the trainer builds the actions; they only call it
    from .trainer import Trainer

logger = logging.getLogger("stvsr.train")


class TrainingStopped(StvsrError, RuntimeError):
    """The run stopped on purpose (e.g. too many non-finite losses in a row); the message says why."""


class TrainingInterrupted(StvsrError):
    """SIGINT / SIGTERM / SIGHUP: the current step was finished and a checkpoint written; ``exit_code`` is 128 +
    signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@dataclass
class StepRecord:
    """What one iteration did: its number (1-based), epoch, learning rate, loss of the whole batch, why the
    optimiser step was skipped (None when it was taken), and its seconds (all, and waiting for data)."""

    iteration: int
    epoch: int
    lr: float
    loss: float
    skipped: str | None
    seconds: float
    data_seconds: float


class PeriodicAction:
    """Called after every step whose iteration it is due at."""

    def due(self, iteration: int, end: int) -> bool:
        return True

    def __call__(self, record: StepRecord) -> None:
        raise NotImplementedError


class Every(PeriodicAction):
    """Due every ``freq`` iterations (never when ``freq`` is 0 or None)."""

    def __init__(self, freq: int | None) -> None:
        self.freq = freq

    def due(self, iteration: int, end: int) -> bool:
        return bool(self.freq) and iteration % self.freq == 0


class DivergenceGuard(PeriodicAction):
    def __init__(self, max_bad_steps: int, models_dir: Any) -> None:
        self.max_bad_steps = max_bad_steps
        self.models_dir = models_dir
        self.bad = 0
        self.last_loss = float("nan")  # of the last step taken

    def __call__(self, record: StepRecord) -> None:
        if record.skipped is None:
            self.bad, self.last_loss = 0, record.loss
            return
        self.bad += 1
        logger.warning("Iteration %d: %s, step skipped", record.iteration, record.skipped)
        if self.bad >= self.max_bad_steps:
            raise TrainingStopped(
                f"{self.bad} steps in a row skipped for a non-finite loss or gradient "
                f"(train.max_bad_steps={self.max_bad_steps}), the last for a {record.skipped}, at iteration "
                f"{record.iteration}; stopped. The last good checkpoint is in {self.models_dir}. Lower train.lr_G, "
                "set train.grad_clip or check the data."
            )


class ProgressBar(PeriodicAction):
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, record: StepRecord) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record.loss:.4g}", lr=f"{record.lr:.3g}", epoch=record.epoch)


class LogLine(PeriodicAction):
    """The line every ``freq`` iterations, with the mean times since the previous line and the ETA to ``end`` (so
    that a piped log shows progress too). Due every step: each adds to the times."""

    def __init__(self, freq: int, end: int, trainer: Trainer) -> None:
        self.freq = freq
        self.end = end
        self.trainer = trainer
        self._window = [0, 0.0, 0.0]  # iterations, seconds, data seconds since the last line

    def __call__(self, record: StepRecord) -> None:
        window = self._window
        window[0] += 1
        window[1] += record.seconds
        window[2] += record.data_seconds
        if record.iteration % self.freq:
            return
        per_iter = window[1] / window[0]
        eta = datetime.timedelta(seconds=round(per_iter * (self.end - record.iteration)))
        logger.info(
            "<epoch:%3d, iter:%8d, lr:%.3e> loss: %.4e  time: %.3f s/it (data %.3f s), eta %s",
            record.epoch, record.iteration, record.lr, record.loss, per_iter, window[2] / window[0], eta,
        )  # fmt: skip
        self._window = [0, 0.0, 0.0]
        check_offsets(self.trainer.model)  # deformable offsets blowing up (also under torch.compile)


class TensorBoardScalars(PeriodicAction):
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def __call__(self, record: StepRecord) -> None:
        for name, value in (("loss", record.loss), ("lr", record.lr), ("time/iter", record.seconds),
                            ("time/data", record.data_seconds)):  # fmt: skip
            self.writer.add_scalar(name, value, record.iteration)


class Validation(Every):
    def __init__(self, freq: int | None, trainer: Trainer, images: int) -> None:
        super().__init__(freq)
        self.trainer = trainer
        self.images = images
        self.last_psnr: float | None = None

    def __call__(self, record: StepRecord) -> None:
        self.last_psnr = self.trainer.validate_or_save(self.images)
        logger.info("Iteration %d: validation PSNR-Y %.4f dB", record.iteration, self.last_psnr)
        if self.trainer.tb is not None:
            self.trainer.tb.add_scalar("val/psnr_y", self.last_psnr, record.iteration)


class Checkpointing(Every):
    """Every ``freq`` iterations and at the last one; :attr:`saved_at` says which iteration was saved last."""

    def __init__(self, freq: int, trainer: Trainer) -> None:
        super().__init__(freq)
        self.trainer = trainer
        self.saved_at: int | None = None

    def due(self, iteration: int, end: int) -> bool:
        return super().due(iteration, end) or iteration == end

    def __call__(self, record: StepRecord) -> None:
        self.trainer.save_checkpoint()
        self.saved_at = record.iteration


class StopCheck(PeriodicAction):
    """A stop signal received in any process (all must stop after the same step): save, unless this iteration was
    just saved, and raise :class:`TrainingInterrupted` with the command that continues the run."""

    def __init__(self, stop: DeferredStop, trainer: Trainer, checkpointing: Checkpointing) -> None:
        self.stop = stop
        self.trainer = trainer
        self.checkpointing = checkpointing

    def __call__(self, record: StepRecord) -> None:
        if not self.trainer.any_process(self.stop.signum is not None):
            return
        signum = self.stop.signum if self.stop.signum is not None else signal.SIGTERM
        if self.checkpointing.saved_at != record.iteration:
            self.trainer.save_checkpoint()
        saved = self.trainer.checkpoint_path(record.iteration)
        options_file = self.trainer.opt["path"].get("options_file") or "<options.yml>"
        raise TrainingInterrupted(
            signum,
            f"{signal.Signals(signum).name}: stopped after iteration {record.iteration}, checkpoint {saved}; to "
            f"continue: python codes/train.py -opt {options_file} --auto_resume",
        )
