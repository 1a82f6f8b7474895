"""A resumable, distributed order of training samples: a pure function of (seed, position).

Training reads an endless stream of epochs, each a seeded permutation of the dataset. Iteration
k of a run with a global batch of B = b x world_size takes stream positions [k*B, (k+1)*B), and
worker r takes its b positions from that range. Each sample's augmentation is seeded from
(seed, position). So the data a run sees depends only on the seed and the iteration: a resumed
run continues exactly where it stopped, whatever the number of DataLoader processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby seeds far apart


def mixed_seed(seed: int, value: int) -> int:
    """A 63-bit seed from two integers (distinct pairs give distinct, well-spread seeds)."""
    return (seed * _MIX + value * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (2**63 - 1)


class TrainingStream(Dataset):
    """Position p -> the augmented sample at p of the seeded, endless sequence of epochs."""

    def __init__(
        self,
        dataset: Dataset,
        transforms: Callable[..., Any] | None,
        seed: int,
    ) -> None:
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the training dataset is empty")
        self.dataset = dataset
        self.transforms = transforms
        self.seed = seed
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def dataset_index(self, position: int) -> int:
        """Index into the dataset of stream position `position`."""
        epoch, offset = divmod(position, len(self))
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
            self._order = torch.randperm(len(self), generator=generator)
            self._epoch = epoch
        return int(self._order[offset])  # type: ignore[index]

    def __getitem__(self, position: int) -> Any:
        sample = self.dataset[self.dataset_index(position)]
        if self.transforms is None:
            return sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mixed_seed(self.seed + 1, position))
            return self.transforms(*sample)


class StreamSampler(Sampler[int]):
    """Stream positions of one worker for iterations [start_iteration, stop_iteration)."""

    def __init__(
        self,
        batch_per_worker: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start_iteration: int = 0,
        stop_iteration: int,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if start_iteration > stop_iteration:
            raise ValueError(f"start_iteration {start_iteration} is past stop_iteration {stop_iteration}")
        self.batch = batch_per_worker
        self.rank = rank
        self.world_size = world_size
        self.start = start_iteration
        self.stop = stop_iteration

    def __iter__(self) -> Iterator[int]:
        global_batch = self.batch * self.world_size
        for iteration in range(self.start, self.stop):
            first = iteration * global_batch + self.rank * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch
