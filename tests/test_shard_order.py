"""The bucket-friendly shuffle and the batched read path of CacheDataset."""

from __future__ import annotations

import numpy as np
import store_factory as sf
import torch

from tjepa.train.data import CacheDataset
from tjepa.train.shard_order import ShardShuffleSampler, shard_order


def test_shard_order_is_a_seeded_permutation_that_keeps_windows_of_shards_together():
    rows = [r for r in range(40) if r % 7]  # gaps: rows are store rows, positions index them
    a = shard_order(rows, rows_per_shard=4, seed=3, epoch=5, window=2)
    assert sorted(a) == list(range(len(rows)))
    assert a == shard_order(rows, 4, 3, 5, 2)  # a pure function of (seed, epoch): resume replays it
    assert a != shard_order(rows, 4, 3, 6, 2) and a != shard_order(rows, 4, 4, 5, 2)
    shards = [rows[p] // 4 for p in a]
    # consecutive windows of two shards: all rows of a window come before any row of the next
    pos, order = 0, list(dict.fromkeys(shards))  # shards in first-seen order
    for w in range(0, len(order), 2):
        window = set(order[w:w + 2])
        n = sum(shards.count(s) for s in window)
        assert set(shards[pos:pos + n]) == window
        pos += n
    assert pos == len(shards)
    sampler = ShardShuffleSampler(rows, 4, seed=3, window=2)
    sampler.set_epoch(5)
    assert list(sampler) == a and len(sampler) == len(rows)


def test_batched_reads_equal_single_reads(tmp_path):
    path = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=10, rows_per_shard=4))
    ds = CacheDataset(path, rows=[9, 2, 5, 2, 0], levels=(0, 4))
    batch = ds.__getitems__([4, 1, 3, 0])
    for got, i in zip(batch, [4, 1, 3, 0], strict=True):
        want = ds[i]
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    rows = np.concatenate([b["row"].numpy() for b in loader])
    assert rows.tolist() == [9, 2, 5, 2, 0]


def test_read_batch_equals_collated_items_with_tokens_and_a_level_subset(tmp_path):
    from torch.utils.data import default_collate

    path = sf.write_store(tmp_path / "t.zarr", sf.FactoryConfig(n=10, rows_per_shard=4, keep_tokens=True))
    for levels in ((4, 0), None):
        ds = CacheDataset(path, rows=[9, 2, 3, 5, 2, 0], levels=levels, with_tokens=True)
        idx = [4, 1, 2, 0, 3]  # store rows 2, 2, 3, 9, 5: a repeat and a run of two
        want = default_collate([ds[i] for i in idx])
        got = ds.read_batch(idx)
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_ranged_row_reads_equal_zarr_reads(tmp_path, monkeypatch):
    """Every row-chunked array read as ranged GETs from its shard index (as the latents are on a
    bucket): the same batch as zarr's own reads, decoded tokens and a level subset included."""
    from torch.utils.data import default_collate

    from tjepa.train import data

    path = sf.write_store(tmp_path / "t.zarr", sf.FactoryConfig(n=10, rows_per_shard=4, keep_tokens=True))
    monkeypatch.setattr(data, "BIG_ROW", 0)
    ds = CacheDataset(path, rows=[9, 2, 3, 5, 7, 0], levels=(4, 0), with_tokens=True)
    assert ds._plan("vjepa_past") is not None and ds._plan("prompt_tokens") is not None
    idx = [4, 1, 2, 0, 3, 5]
    want = default_collate([ds[i] for i in idx])
    got = ds.read_batch(idx)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
