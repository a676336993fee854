"""The base class of every architecture: the facts a model declares about itself, on its class.

Each architecture (one file, registered in ``stvsr.registry.ARCHS``) subclasses :class:`StvsrArch` and sets
what differs from the defaults below. Nothing outside the architecture's file keeps a table of these facts:
the runner (:class:`stvsr.runner.ModelFacts`), the evaluator, ``stvsr-infer``, ``--model NAME`` and the
trainer read them from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from stvsr.runner import SpaceScale

__all__ = ["Criterion", "StvsrArch"]

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StvsrArch(nn.Module):
    """A space-time video super-resolution model: ``forward(lqs)`` maps (B, N, 3, h, w) RGB in [0, 1] to
    (B, 2N-1, 3, s*h, s*w), frames [F0, I0.5, F1, ..., F(N-1)], in train and eval mode alike.

    Facts (class attributes; an instance attribute where a setting changes them):

    - ``size_divisor``: LR height and width must be multiples of it (the runner pads);
    - ``upscale``: the spatial factor ``s`` of the common contract above;
    - ``space_scale``: every spatial factor the model makes (:class:`stvsr.runner.SpaceScale`); by default exactly
      ``upscale``; a continuous model declares its range and the range it was trained on. A run reconciles it
      with the options, the data and the protocol in one place (:func:`stvsr.runner.reconcile_scale`);
    - ``input_frames``: the exact number of LR frames per call, or None for any N >= 2 (RSTT: ``num_frames``);
    - ``supports_time_factor``: ``forward_times(lqs, k)`` gives the frames at t = j/k between each pair
      (``stvsr-infer --time-factor``);
    - ``takes_time``: ``forward(lqs, t)`` takes time stamps t (B, n), which the trainer passes when samples carry
      ``time`` (Adobe240);
    - ``official_settings``: the ``network_G`` of the official test configuration (without ``which_model_G``),
      what ``--model NAME`` builds.

    ``network_G`` keys: every constructor argument under its own name (:meth:`config_keys`), except
    ``config_renames`` (network_G key -> argument, where the official configs name it otherwise) and
    ``config_hidden`` (arguments that are no network_G key). ``config_required``: the keys the official code
    requires; ``config_ignored``: keys of the official configs that have no effect (accepted, so that existing
    config files work).

    Training: :meth:`training_objective` (the loss of one batch); the trainer calls it, never ``forward``
    directly.
    """

    size_divisor: ClassVar[int] = 1
    upscale: int = 4
    input_frames: int | None = None
    supports_time_factor: ClassVar[bool] = False
    takes_time: ClassVar[bool] = False
    official_settings: ClassVar[dict[str, Any]] = {}
    config_renames: ClassVar[dict[str, str]] = {}
    config_hidden: ClassVar[tuple[str, ...]] = ()
    config_required: ClassVar[tuple[str, ...]] = ()
    config_ignored: ClassVar[tuple[str, ...]] = ()

    @property
    def space_scale(self) -> SpaceScale:
        return SpaceScale(fixed=self.upscale)

    @classmethod
    def config_keys(cls) -> dict[str, str]:
        """``network_G`` key -> constructor argument, in the constructor's order."""
        key_of = {argument: key for key, argument in cls.config_renames.items()}
        params = inspect.signature(cls).parameters
        return {key_of.get(name, name): name for name in params if name not in cls.config_hidden}

    def training_objective(
        self,
        lqs: torch.Tensor,
        gt: torch.Tensor,
        pixel: Criterion,
        feature: Criterion | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training loss of a batch: LR frames ``lqs`` (B, N, 3, h, w), GT ``gt`` (B, 2N-1, 3, sh, sw) (or the
        frames at the time stamps ``time`` (B, n) of a model that ``takes_time``); ``pixel`` and ``feature`` carry
        their weights. It is :meth:`supervised_loss` of :meth:`supervised`, the two parts a model overrides when
        it supervises other frames or auxiliary outputs (SAFA, STARnet)."""
        if time is not None and not self.takes_time:
            raise ValueError(f"{type(self).__name__} takes no time stamps: train it on samples without 'time'")
        return self.supervised_loss(self.supervised(lqs, time), gt, pixel, feature)

    def supervised(self, lqs: torch.Tensor, time: torch.Tensor | None = None) -> Any:
        """What the training objective supervises: by default ``forward(lqs)`` (``forward(lqs, time)``)."""
        return self(lqs) if time is None else self(lqs, time)

    def supervised_loss(
        self, out: Any, gt: torch.Tensor, pixel: Criterion, feature: Criterion | None = None
    ) -> torch.Tensor:
        """The loss of :meth:`supervised`'s ``out``: by default ``pixel(out, gt)`` (+ ``feature(out, gt)``)."""
        loss = pixel(out, gt)
        if feature is not None:
            loss = loss + feature(out, gt)
        return loss
