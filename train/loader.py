"""One epoch of training batches: the seeded order, each batch binned and augmented from its own generator, and
under torchrun each rank's shard of every batch.

The order is a permutation drawn from (seed, epoch); batch k's augmentation draws from (seed, epoch, k) only. So
an epoch is the same however it is split: over DataLoader workers (which bin batches in parallel, for a GPU that
would otherwise wait), over torchrun ranks (each takes a contiguous part of every global batch, the global batch
staying `batch`), or cut short and resumed. With `events` a batch's counts stay events (audio.binning.EventBatch,
for the event-driven input projection): the same augmented events, never densified.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from audio.binning import Augment, BinnedSet, EventBatch
from common.errors import quiet_child_signals


class EpochBatches(Dataset):
    """Item k: the k-th global batch of the epoch, (counts [B, T, C] float32 or an EventBatch, labels [B])."""

    def __init__(self, split: BinnedSet, batch: int, seed: int, epoch: int, augment: Augment, events: bool = False):
        self.split, self.batch, self.seed, self.epoch, self.augment = split, batch, seed, epoch, augment
        self.make = split.events if events else split.dense
        self.order = np.random.default_rng([seed, epoch]).permutation(len(split))

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch)

    def __getitem__(self, k: int) -> tuple[torch.Tensor | EventBatch, torch.Tensor]:
        idx = self.order[k * self.batch:(k + 1) * self.batch]
        rng = np.random.default_rng([self.seed, self.epoch, k])
        return self.make(idx, rng=rng, augment=self.augment), torch.from_numpy(self.split.labels[idx])


def epoch_batches(split: BinnedSet, batch: int, seed: int, epoch: int, augment: Augment, workers: int = 0,
                  rank: int = 0, world: int = 1,
                  events: bool = False) -> Iterator[tuple[torch.Tensor | EventBatch, torch.Tensor, int]]:
    """(this rank's counts, its labels, the global batch size) for every batch of the epoch."""
    batches = EpochBatches(split, batch, seed, epoch, augment, events)
    if workers > 0:
        source = DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers, prefetch_factor=2,
                            worker_init_fn=quiet_child_signals, multiprocessing_context="fork")
    else:
        source = (batches[k] for k in range(len(batches)))
    for x, y in source:
        n = len(y)
        part = slice(rank * n // world, (rank + 1) * n // world)
        yield x[part], y[part], n
