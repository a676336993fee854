"""Distributed training through ``torchrun`` and ``torch.distributed`` (DistributedDataParallel), nothing home-made.

``torchrun --nproc_per_node=N codes/train.py -opt ... --launcher pytorch`` starts N processes and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads
them (``--local_rank`` / ``--local-rank`` are accepted for older launchers, the environment wins) and joins
the process group: NCCL when the run is on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank among ``world_size`` processes, GPU index ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(launcher: str, local_rank: int | None = None, use_cuda: bool = False) -> DistInfo:
    """Join the process group of a ``torchrun`` launch (``launcher='pytorch'``); ``'none'``: one process."""
    if launcher == "none":
        return DistInfo()
    if launcher != "pytorch":
        raise ValueError(f"--launcher {launcher!r}: expected 'none' or 'pytorch'")
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"--launcher pytorch: the environment lacks {', '.join(missing)}. Start the run with "
            "torchrun --nproc_per_node=N codes/train.py -opt <options.yml> --launcher pytorch"
        )
    local = int(os.environ.get("LOCAL_RANK", local_rank or 0))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(value: float, info: DistInfo) -> float:
    """The sum of ``value`` over all processes (``value`` itself in a single process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item())


def shutdown(info: DistInfo) -> None:
    """Leave the process group cleanly: wait until every process is done with its collectives (rank 0 still
    reports when the others have finished), then destroy the group in all of them. Without the wait, a process
    that tears its group down while a peer is still using the connections can abort at exit (seen with gloo as
    ``terminate called without an active exception``, SIGABRT after the run's last line)."""
    if not (info.enabled and dist.is_initialized()):
        return
    try:
        barrier(info)
    except RuntimeError:  # a peer already failed: nothing left to wait for
        pass
    dist.destroy_process_group()
