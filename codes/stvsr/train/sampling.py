"""The order and the augmentation draws of the training samples, reproducible whatever runs them.

Two pieces make a training run's data a pure function of ``(manual_seed, epoch, place in the epoch)``:

- :class:`EpochSampler` is torch's :class:`~torch.utils.data.DistributedSampler` (a permutation seeded by
  ``seed + epoch``, each process taking every ``world``-th index) that can also start inside an epoch (to
  resume) and yields ``(index, sample_seed)`` pairs. One process (``num_replicas=1``) sees the same permutation
  as the union of N processes, so the batch of N processes at step i is the one-process batch at step i.
- :class:`SeededSamples` wraps a dataset: before reading sample ``index`` it seeds Python's ``random`` (and
  NumPy's global RNG) with ``sample_seed`` and restores them afterwards.

So the crops, flips and frame choices of a sample depend neither on the DataLoader worker that reads it, nor
on the number of processes, nor on whether the run was resumed: a resumed run (any ``n_workers``) and a
distributed run see exactly the samples of the uninterrupted single-process run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed for the sample at ``position`` of ``epoch`` (independent streams per position)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, sample_seed)`` and can start ``start`` samples into an epoch.

    ``drop_last=True``: an epoch is the largest multiple of ``num_replicas`` samples, so that every process
    takes the same number of steps.
    """

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch ``epoch`` (seeds the permutation), skipping the first ``start`` samples of this process."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        # this process's i-th sample sits at place rank + i * world of the epoch's permutation
        places = range(self.rank, self.total_size, self.num_replicas)
        pairs = [(index, sample_seed(self.seed, self.epoch, place)) for index, place in zip(indices, places)]
        return iter(pairs[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class SeededSamples(Dataset):
    """``dataset[index]`` read with Python's and NumPy's RNGs seeded by the sampler's ``sample_seed``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        # restored afterwards: with n_workers 0 the reads run in the training process, whose own draws
        # (e.g. a random seed chosen by the user's code) must not depend on the data
        saved_python, saved_numpy = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved_python)
            np.random.set_state(saved_numpy)
