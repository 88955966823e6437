"""BatchLoader workers started from a fork server see the trainer's AWS environment, not the one the
server happened to start with (it starts once per process and keeps its environment)."""

from __future__ import annotations

import os
import uuid

import torch
from torch.utils.data import Dataset, SequentialSampler

from tjepa.train.loader import BatchLoader, worker_context


class EnvDataset(Dataset):
    """Each item is the worker's AWS_REGION, as bytes."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        region = os.environ.get("AWS_REGION", "").encode().ljust(40, b" ")
        return {"region": torch.tensor(list(region), dtype=torch.uint8)}


def _region(batch: dict[str, torch.Tensor]) -> str:
    return bytes(batch["region"][0].tolist()).decode().strip()


def test_fork_server_workers_read_with_the_trainers_credentials(monkeypatch):
    ctx = worker_context(remote=True)
    monkeypatch.setenv("AWS_REGION", "the-servers-" + uuid.uuid4().hex[:8])
    server = ctx.Process(target=os.getpid)  # starts the fork server now, with that environment
    server.start()
    server.join(60)
    trainers = "the-trainers-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("AWS_REGION", trainers)
    ds = EnvDataset()
    loader = BatchLoader(ds, SequentialSampler(range(len(ds))), batch_size=2, num_workers=1, context=ctx)
    assert [_region(b) for b in loader] == [trainers]
