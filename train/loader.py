"""`BatchLoader`: the trainer's batches, read whole and ahead of time, in exactly the sampler's order.

Each batch is one `CacheDataset.read_batch` (all its chunks in flight at once). With no worker
processes, `prefetch` batches are read by background threads while the model trains on the current
one, so a bucket's latency overlaps compute; with `num_workers` > 0 a torch DataLoader hands whole
batches to worker processes (`prefetch` batches ahead per worker): forked for a local store, started
by a fork server for a remote one (`worker_context`). Either way the batches and their
order are those of `DataLoader(dataset, batch_size, sampler=sampler)`: the order stays a pure
function of (seed, epoch), so a resumed run replays it exactly.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, default_collate

Batch = dict[str, torch.Tensor]


def read_batch(dataset: Dataset, idx: Sequence[int]) -> Batch:
    """One collated batch: `read_batch` where the dataset has it, else its items collated."""
    if hasattr(dataset, "read_batch"):
        return dataset.read_batch(idx)
    return default_collate([dataset[i] for i in idx])


def worker_context(remote: bool) -> Any:
    """How DataLoader workers start. Forked workers inherit the parent's open HTTP connections and
    their event loops; what a forked worker tears down there takes the parent's sockets with it
    (measured: the parent's next reads from the bucket stalled 15 s after the workers ended). For a
    remote store they start from a fork server instead, which imports torch and the reader once."""
    if not remote:
        return None
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "tjepa.train.data"])
    return ctx


def _aws_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def _adopt_aws_environment(env: dict[str, str], worker_id: int) -> None:
    """Workers from a fork server inherit the environment the server started with, which need not be
    the trainer's now (it starts once per process): take the credentials and endpoint the trainer had
    when it made the loader."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(env)


class _Batches(Dataset):
    """A dataset whose items are whole batches (a list of indices in, a collated batch out)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, idx: list[int]) -> Batch:
        return read_batch(self.dataset, idx)


class BatchLoader:
    """Iterable of collated batches of `dataset` in `sampler` order (the last one may be short)."""

    def __init__(self, dataset: Dataset, sampler: Sampler[int], batch_size: int, *, num_workers: int = 0,
                 prefetch: int = 2, pin_memory: bool = False, generator: torch.Generator | None = None,
                 context: Any = None):
        if prefetch < 0 or num_workers < 0:
            raise ValueError(f"prefetch and num_workers must be >= 0, got {prefetch}, {num_workers}")
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self.batches = BatchSampler(sampler, batch_size, drop_last=False)
        self._workers: DataLoader | None = None
        if num_workers:
            # persistent: forked once, reused every epoch; the sampler is iterated here, in this process
            self._workers = DataLoader(_Batches(dataset), batch_size=None, sampler=self.batches,
                                       num_workers=num_workers, persistent_workers=True,
                                       prefetch_factor=max(1, prefetch), pin_memory=pin_memory, generator=generator,
                                       multiprocessing_context=context,
                                       worker_init_fn=functools.partial(_adopt_aws_environment, _aws_environment()))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        if self._workers is not None:
            return iter(self._workers)
        return self._threaded()

    def _read(self, idx: list[int]) -> Batch:
        batch = read_batch(self.dataset, idx)
        return {k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch

    def _threaded(self) -> Iterator[Batch]:
        order = iter(self.batches)
        if not self.prefetch:
            yield from map(self._read, order)
            return
        pending: deque[Future[Any]] = deque()
        with ThreadPoolExecutor(self.prefetch, thread_name_prefix="tjepa-prefetch") as pool:
            try:
                for idx in order:
                    pending.append(pool.submit(self._read, idx))
                    if len(pending) > self.prefetch:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # the consumer stopped early (an error, a break): drop what was read ahead
                for f in pending:
                    f.cancel()
