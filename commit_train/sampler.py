"""Deterministic, resumable batch order shared by every process.

The order is a pure function of (seed, epoch): a resumed run recomputes it and skips the
micro-batches already consumed, so a killed run continues on exactly the data it would
have seen (the bit-identical resume test depends on it). Under DDP each process takes its
slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from commit_train.errors import DataError


class ResumableBatchSampler:
    def __init__(
        self,
        num_records: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_micro_batch: int = 0,
        shuffle: bool = True,
    ):
        self.n = num_records
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world_size
        self.start = start_micro_batch
        self.shuffle = shuffle
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the training set has {num_records} records, fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower train.batch_size"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        """Endless: yields this rank's micro-batches from ``start_micro_batch`` on."""
        pos = self.start
        per = self.batches_per_epoch
        gb = self.batch_size * self.world
        while True:
            epoch, i = divmod(pos, per)
            order = self.order(epoch)
            for j in range(i, per):
                chunk = order[j * gb : (j + 1) * gb]
                yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                pos += 1
