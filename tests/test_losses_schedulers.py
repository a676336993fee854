"""Pixel losses against hand computations; the schedulers' learning-rate trajectories (the ZSM recipe of
docs/training.md), the official recursion, warm-up, and state round trips."""

from __future__ import annotations

import math

import pytest
import torch

from stvsr.registry import LOSSES, SCHEDULERS
from stvsr.train import CosineAnnealingLR_Restart, MultiStepLR_Restart, build_loss, build_scheduler

# the official "before" order steps the scheduler first, which torch warns about
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")


def test_charbonnier_official_sum_and_mean():
    x = torch.tensor([[0.5, 0.25], [1.0, 0.0]])
    y = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    # diff: 0, 0.25, 1, -0.5 -> sqrt(d^2 + 1e-6)
    terms = [math.sqrt(1e-6), math.sqrt(0.0625 + 1e-6), math.sqrt(1 + 1e-6), math.sqrt(0.25 + 1e-6)]
    assert build_loss("cb")(x, y).item() == pytest.approx(sum(terms), rel=1e-6)
    assert build_loss("cb", "mean")(x, y).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    assert build_loss("cb")(y, y).item() == pytest.approx(4 * 1e-3, rel=1e-6)  # effective eps 1e-3
    assert build_loss("l1")(x, y).item() == pytest.approx(1.75 / 4)
    assert build_loss("l2", "sum")(x, y).item() == pytest.approx(0.0625 + 1 + 0.25)
    assert {"cb", "l1", "l2"} <= set(LOSSES)
    with pytest.raises(ValueError, match="Did you mean 'cb'"):
        build_loss("cbb")


def trajectory(sched, steps):
    """lr used at iterations 1..steps with the 'before' order (step, then read)."""
    out = []
    for _ in range(steps):
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def optimizer(lr=4e-4):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


ZSM = {
    "lr_scheme": "CosineAnnealingLR_Restart",
    "T_period": [150000] * 4,
    "restarts": [150000, 300000, 450000],
    "restart_weights": [1, 1, 1],
    "eta_min": 1e-7,
    "warmup_iter": -1,
}


def test_zsm_recipe_trajectory_closed_form():
    sched = build_scheduler(optimizer(), ZSM)
    assert isinstance(sched, CosineAnnealingLR_Restart) and "CosineAnnealingLR_Restart" in SCHEDULERS

    def lr(e):
        sched.last_epoch = e
        return sched.get_lr()[0]

    assert lr(1) == pytest.approx(4e-4, rel=1e-9)
    assert lr(75000) == pytest.approx(2.0e-4 + 0.5e-7, rel=1e-9)
    assert lr(149999) == pytest.approx(1e-7, rel=1e-3)
    assert lr(150000) == 4e-4
    assert lr(225000) == pytest.approx(2.0e-4 + 0.5e-7, rel=1e-9)
    assert lr(600000) == pytest.approx(1e-7, rel=1e-9)


def official_recursion(T_period, restarts, weights, eta_min, base, steps, warmup_iter=-1):
    """The official Zooming Slow-Mo get_lr, per step (the reference), with the official ``update_learning_rate``'s
    warm-up: after the scheduler's step, the rate is overwritten by ``base * e / warmup_iter`` for
    ``e < warmup_iter``, and the next step's recursion continues from that."""
    lr, T_max, last_restart, out = base, T_period[0], 0, []
    for e in range(1, steps + 1):
        if e in restarts:
            last_restart = e
            T_max = T_period[restarts.index(e) + 1]
            lr = base * weights[restarts.index(e)]
        elif (e - last_restart - 1 - T_max) % (2 * T_max) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        else:
            lr = (1 + math.cos(math.pi * (e - last_restart) / T_max)) / (
                1 + math.cos(math.pi * ((e - last_restart) - 1) / T_max)
            ) * (lr - eta_min) + eta_min
        if e < warmup_iter:
            lr = base / warmup_iter * e
        out.append(lr)
    return out


def official_multistep(milestones, restarts, weights, gamma, base, steps, warmup_iter=-1):
    """The official MultiStepLR_Restart get_lr with the same warm-up (the reference)."""
    lr, out = base, []
    for e in range(1, steps + 1):
        if e in restarts:
            lr = base * weights[restarts.index(e)]
        elif e in milestones:
            lr = lr * gamma ** milestones.count(e)
        if e < warmup_iter:
            lr = base / warmup_iter * e
        out.append(lr)
    return out


@pytest.mark.parametrize(
    "T_period, restarts, weights, warmup",
    [
        ([100], [], [], 10),  # the cosine continues from the warmed-up rate (0.9 lr0), not from lr0
        ([50, 60], [20], [0.5], 30),  # a restart inside the warm-up: the warm-up wins until it ends
        ([30, 870], [30], [1.0], 30),  # SAFA's recipe: the warm-up ends with a restart, which sets lr0 again
        ([40, 40], [40], [1.0], 2),
    ],
)
def test_cosine_with_warmup_equals_official_recursion(T_period, restarts, weights, warmup):
    sched = CosineAnnealingLR_Restart(optimizer(), T_period, restarts, weights, eta_min=1e-7, warmup_iter=warmup)
    steps = (max(restarts) if restarts else 0) + T_period[len(restarts)]  # to the end of the last period
    ours = trajectory(sched, steps)
    assert ours == pytest.approx(official_recursion(T_period, restarts, weights, 1e-7, 4e-4, steps, warmup), rel=1e-9)


def test_multistep_with_warmup_equals_official_recursion():
    args = ([3, 12, 12, 20], [15], [0.5], 0.5)
    sched = MultiStepLR_Restart(optimizer(), milestones=args[0], restarts=args[1], weights=args[2], gamma=args[3],
                                warmup_iter=6)  # fmt: skip
    ours = trajectory(sched, 25)
    assert ours == pytest.approx(official_multistep(*args, 4e-4, 25, 6), rel=1e-12)
    assert ours[6] == pytest.approx(4e-4 * 5 / 6)  # after the warm-up, the last warm-up rate stays


def test_cosine_equals_official_recursion_small():
    args = ([10, 20, 15], [10, 30], [1.0, 0.5], 1e-7)  # within each period (e - r <= T)
    sched = CosineAnnealingLR_Restart(optimizer(), args[0], args[1], args[2], eta_min=args[3])
    ours = trajectory(sched, 45)
    ref = official_recursion(*args, 4e-4, 45)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert ours[9] == 4e-4 and ours[29] == 2e-4  # restarts at e = 10 (weight 1) and 30 (weight 0.5)


def test_cosine_out_of_order_restarts_equal_official_recursion():
    """TMNet stage 2's official restarts [500, 100, 1500] (quirk 3, KEEP): the official recursion restarts at 100
    with T_period[2] = 1500, at 500 with T_period[1] = 1000, and jumps back to lr0 at 1500."""
    args = ([500, 1000, 1500, 2000], [500, 100, 1500], [1.0, 1.0, 1.0], 1e-7)
    sched = CosineAnnealingLR_Restart(optimizer(), args[0], args[1], args[2], eta_min=args[3])
    ours = trajectory(sched, 1500)
    ref = official_recursion(*args, 4e-4, 1500)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert ours[99] == ours[499] == ours[1499] == 4e-4
    with pytest.raises(ValueError, match="only once"):
        CosineAnnealingLR_Restart(optimizer(), [5, 5, 5], [3, 3], [1.0, 1.0])


def test_multistep_restart_and_warmup():
    sched = MultiStepLR_Restart(optimizer(1.0), milestones=[2, 4, 7], restarts=[5], weights=[0.5], gamma=0.1)
    assert trajectory(sched, 8) == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.5, 0.5, 0.05, 0.05])
    warm = CosineAnnealingLR_Restart(optimizer(1.0), [100], eta_min=0.0, warmup_iter=4)
    lrs = trajectory(warm, 5)
    assert lrs[:3] == pytest.approx([0.25, 0.5, 0.75])
    c = [1 + math.cos(math.pi * e / 100) for e in range(6)]
    assert lrs[4] == pytest.approx(0.75 * c[5] / c[3])  # the recursion continues from the last warm-up rate


def test_state_dict_round_trip_continues_exactly():
    a = build_scheduler(optimizer(), ZSM)
    trajectory(a, 7)
    b = build_scheduler(optimizer(), ZSM)
    b.load_state_dict(a.state_dict())
    assert trajectory(a, 5) == trajectory(b, 5)
