"""Learning-rate schedulers of the official code, registered in :data:`stvsr.registry.SCHEDULERS`.

Both are computed in closed form from the step count (``last_epoch``), so that their state is the step count
alone and a resumed run continues exactly. With the "before" stepping order of Zooming Slow-Mo (the scheduler
steps before the optimiser), iteration ``i`` (1-based) uses ``lr(i)``.

The official schedulers are recursive: each step scales the previous step's learning rate, and a restart sets it
to ``w_r * lr0``. The closed forms below are that recursion solved from its *anchor*: the last step whose rate
was set outright, i.e. the last restart ``r`` <= e (0 at first, weight 1; rate ``w_r * lr0``) or, when it comes
later, the last warm-up step ``W - 1`` (the official ``update_learning_rate`` overwrites the rate with
``lr0 * e / W`` for ``e < W``, ``W = warmup_iter``; the recursion continues from ``lr0 (W - 1) / W``).

``CosineAnnealingLR_Restart``: with ``T`` the period of ``r`` (``T_period[0]``, then ``T_period[k + 1]`` after
restart ``k``), ``c(e) = 1 + cos(pi * (e - r) / T)`` and the anchor ``a`` with rate ``lr_a``::

    lr(e) = eta_min + (lr_a - eta_min) * c(e) / c(a)

which for the anchor ``r`` is ``eta_min + (w_r * lr0 - eta_min) * c(e) / 2`` (past the end of a period without a
restart, which no official config reaches, the cosine simply continues here, while the official recursion's
turn-around step uses the weight-1 amplitude). ``MultiStepLR_Restart``: ``lr_a * gamma ** m`` with ``m`` the
milestones in ``(a, e]``. Restarts listed out of order (TMNet stage 2's official ``[500, 100, 1500]``) happen in
time order, each with the period and weight of its place in the list, as the official recursion does.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from stvsr.registry import SCHEDULERS

logger = logging.getLogger(__name__)


class _RestartScheduler(LRScheduler):
    def __init__(
        self,
        optimizer: Optimizer,
        restarts: Sequence[int] | None,
        weights: Sequence[float] | None,
        warmup_iter: int = -1,
        last_epoch: int = -1,
    ) -> None:
        self.restarts = [int(r) for r in (restarts or [])]
        self.restart_weights = [float(w) for w in (weights or [1.0] * len(self.restarts))]
        if len(self.restarts) != len(self.restart_weights):
            raise ValueError(
                f"restarts {self.restarts} and restart_weights {self.restart_weights} do not have the same length"
            )
        if len(set(self.restarts)) != len(self.restarts):
            raise ValueError(f"restarts {self.restarts}: each restart iteration may appear only once")
        # Restarts happen in time order; restart k of the *list* keeps its period T_period[k + 1] and weight, as
        # in the official code (TMNet stage 2's restarts [500, 100, 1500] restart at 100 with T_period[2]).
        self._order = sorted(range(len(self.restarts)), key=self.restarts.__getitem__)
        self._in_time = [self.restarts[k] for k in self._order]
        if self._in_time != self.restarts:
            logger.warning(
                "restarts %s are not increasing: as in the official code, they happen in time order (%s), each "
                "with the period and weight of its place in the list",
                self.restarts,
                self._in_time,
            )
        self.warmup_iter = int(warmup_iter)
        super().__init__(optimizer, last_epoch)

    def _restart(self, e: int) -> tuple[int, int, float]:
        """(index of the current period, its start r, its weight w)."""
        j = bisect.bisect_right(self._in_time, e)
        if j == 0:
            return 0, 0, 1.0
        k = self._order[j - 1]
        return k + 1, self.restarts[k], self.restart_weights[k]

    def _anchor(self, e: int) -> tuple[int, int, float]:
        """(index of the current period, the anchor step a, its rate as a fraction of lr0): the last step <= e
        whose rate the official code set outright (a restart, or the last warm-up step)."""
        k, r, w = self._restart(e)
        last_warm = self.warmup_iter - 1
        if 1 <= last_warm < e and last_warm >= r:
            return k, last_warm, last_warm / self.warmup_iter
        return k, r, w

    def _lr(self, base: float, e: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        e = self.last_epoch
        lrs = [self._lr(base, e) for base in self.base_lrs]
        if 0 < self.warmup_iter and e < self.warmup_iter:
            lrs = [base * e / self.warmup_iter for base in self.base_lrs]
        return lrs

    _get_closed_form_lr = get_lr


@SCHEDULERS.register()
class CosineAnnealingLR_Restart(_RestartScheduler):
    def __init__(
        self,
        optimizer: Optimizer,
        T_period: Sequence[int],
        restarts: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        eta_min: float = 0.0,
        warmup_iter: int = -1,
        last_epoch: int = -1,
    ) -> None:
        self.T_period = [int(t) for t in T_period]
        n_restarts = len(restarts or [])
        if len(self.T_period) < n_restarts + 1:
            raise ValueError(f"T_period {self.T_period} needs {n_restarts + 1} entries (one per period)")
        if any(t <= 0 for t in self.T_period):
            raise ValueError(f"T_period {self.T_period}: every period must be positive")
        self.eta_min = float(eta_min)
        super().__init__(optimizer, restarts, weights, warmup_iter, last_epoch)

    def _lr(self, base: float, e: int) -> float:
        if e <= 0:
            return base
        k, r, _ = self._restart(e)
        _, a, fraction = self._anchor(e)
        period = self.T_period[k]

        def c(step: int) -> float:
            return 1 + math.cos(math.pi * (step - r) / period)

        if c(a) <= 0:  # an anchor at the very end of a period: the recursion is undefined there, take the cosine
            a, fraction = r, self._restart(e)[2]
        return self.eta_min + (fraction * base - self.eta_min) * c(e) / c(a)


@SCHEDULERS.register()
class MultiStepLR_Restart(_RestartScheduler):
    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        restarts: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        gamma: float = 0.1,
        warmup_iter: int = -1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, restarts, weights, warmup_iter, last_epoch)

    def _lr(self, base: float, e: int) -> float:
        _, a, fraction = self._anchor(e)
        passed = bisect.bisect_right(self.milestones, e) - bisect.bisect_right(self.milestones, a)
        return base * fraction * self.gamma**passed


def build_scheduler(optimizer: Optimizer, train: dict) -> LRScheduler:
    """The scheduler of a validated ``train`` options section (``lr_scheme`` and its keys)."""
    scheme = train["lr_scheme"]
    try:
        cls = SCHEDULERS.get(scheme)
    except KeyError as exc:
        raise ValueError(f"train.lr_scheme: {exc.args[0]}") from None
    if train.get("clear_state"):
        raise ValueError("train.clear_state: clearing the optimiser state at restarts is not supported")
    common = {
        "restarts": train.get("restarts"),
        "weights": train.get("restart_weights"),
        "warmup_iter": train.get("warmup_iter", -1),
    }
    if cls is CosineAnnealingLR_Restart:
        return cls(optimizer, train["T_period"], eta_min=train.get("eta_min", 0.0), **common)
    return cls(optimizer, train["lr_steps"], gamma=train.get("lr_gamma", 0.1), **common)
