"""A shuffle for stores on object storage: shuffled shard order plus a shuffle buffer over a window
of shards, the whole order a pure function of (seed, epoch) so a resumed run replays it exactly.

Rows of one shard sit in one object, so reading them close together in time lets zarr coalesce the
reads and a batch touch few objects; shuffling all rows of `window` consecutive shards (in the
shuffled shard order) keeps batches mixed across shards and tasks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def shard_order(rows: Sequence[int], rows_per_shard: int, seed: int, epoch: int, window: int) -> list[int]:
    """Positions into `rows` in epoch order: shards shuffled, then rows shuffled within each window."""
    if rows_per_shard < 1 or window < 1:
        raise ValueError(f"rows_per_shard and window must be >= 1, got {rows_per_shard}, {window}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    by_shard: dict[int, list[int]] = {}
    for pos, row in enumerate(rows):
        by_shard.setdefault(int(row) // rows_per_shard, []).append(pos)
    shards = sorted(by_shard)
    shards = [shards[i] for i in torch.randperm(len(shards), generator=g).tolist()]
    out: list[int] = []
    for start in range(0, len(shards), window):
        buffer = [pos for s in shards[start:start + window] for pos in by_shard[s]]
        out += [buffer[i] for i in torch.randperm(len(buffer), generator=g).tolist()]
    return out


class ShardShuffleSampler(Sampler[int]):
    """`shard_order` as a DataLoader sampler (`set_epoch` like DistributedSampler; no state to save)."""

    def __init__(self, rows: Sequence[int], rows_per_shard: int, seed: int, window: int = 4):
        self.rows, self.rows_per_shard, self.seed, self.window = tuple(rows), rows_per_shard, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(shard_order(self.rows, self.rows_per_shard, self.seed, self.epoch, self.window))

    def __len__(self) -> int:
        return len(self.rows)
