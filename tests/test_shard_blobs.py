"""Whole shards of the small arrays, fetched as one object each and decoded without zarr."""

from __future__ import annotations

import numpy as np
import pytest
import store_factory as sf
import torch
import zarr
from torch.utils.data import default_collate

from tjepa.cache_schema.storage import Location
from tjepa.errors import StoreFormatError
from tjepa.train import shard_blobs
from tjepa.train.data import CacheDataset


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 10 rows in shards of 4: the last shard holds two rows (and two chunks never written)
    return sf.write_store(tmp_path_factory.mktemp("blobs") / "s.zarr",
                          sf.FactoryConfig(n=10, rows_per_shard=4, keep_tokens=True))


def _object(arr, plan, shard: int) -> bytes:
    return (arr.store_path.store.root / arr.path / plan.key_of(shard)).read_bytes()


def test_every_small_array_of_a_written_store_decodes_here_and_equals_zarr(store):
    ds = CacheDataset(store, with_tokens=True)
    small = [n for k, n in ds.fields.items() if not n.startswith("vjepa") and not n.endswith("_tokens")]
    assert len(small) >= 9
    for name in small:
        arr = ds._array(name)
        plan = ds._blob_plan(name)
        assert plan is not None, f"{name}: the layout tjepa writes must decode here"
        for shard in range(3):
            got = plan.decode(_object(arr, plan, shard), name)
            want = arr[shard * 4:min(shard * 4 + 4, arr.shape[0])]
            np.testing.assert_array_equal(got[:len(want)], want, err_msg=f"{name} shard {shard}")


def test_missing_chunks_and_objects_read_as_the_fill_value(tmp_path):
    from zarr.codecs import BloscCodec, BytesCodec

    arr = zarr.create_array(tmp_path / "a.zarr", shape=(8, 3), shards=(4, 3), chunks=(1, 3), dtype="float32",
                            serializer=BytesCodec(), compressors=[BloscCodec(cname="zstd")], fill_value=-1.0)
    arr[1] = [1, 2, 3]  # rows 0, 2, 3 never written: their index entries are empty; shard 1 has no object
    plan = shard_blobs.plan(arr, rows_per_shard=4)
    assert plan is not None and plan.sharded and plan.compressor == "blosc"
    np.testing.assert_array_equal(plan.decode(_object(arr, plan, 0), "a"), arr[0:4])
    assert not (tmp_path / "a.zarr" / plan.key_of(1)).exists()
    np.testing.assert_array_equal(plan.decode(None, "a"), np.full((4, 3), -1.0, np.float32))


def test_unsharded_zstd_chunks_and_layouts_left_to_zarr(tmp_path):
    from zarr.codecs import BytesCodec, GzipCodec, ZstdCodec

    arr = zarr.create_array(tmp_path / "z.zarr", shape=(6, 5), chunks=(4, 5), dtype="int32",
                            serializer=BytesCodec(), compressors=[ZstdCodec()])
    arr[:] = np.arange(30).reshape(6, 5)
    plan = shard_blobs.plan(arr, rows_per_shard=4)
    assert plan is not None and not plan.sharded and plan.compressor == "zstd"
    np.testing.assert_array_equal(plan.decode(_object(arr, plan, 1), "z")[:2], arr[4:6])
    gz = zarr.create_array(tmp_path / "g.zarr", shape=(6, 5), chunks=(4, 5), dtype="int32",
                           serializer=BytesCodec(), compressors=[GzipCodec()])
    assert shard_blobs.plan(gz, rows_per_shard=4) is None  # not decoded here: zarr reads it
    assert shard_blobs.plan(arr, rows_per_shard=2) is None  # an object is not one shard of rows


def test_a_damaged_shard_index_is_an_error_naming_the_object(store):
    ds = CacheDataset(store)
    arr, plan = ds._array("joints_past"), ds._blob_plan("joints_past")
    blob = bytearray(_object(arr, plan, 0))
    blob[-5] ^= 0xFF
    with pytest.raises(StoreFormatError, match="obj-name.*shard index is damaged"):
        plan.decode(bytes(blob), "obj-name")


def test_a_batch_is_two_flights_and_never_reads_small_arrays_through_zarr(tmp_path, monkeypatch):
    """Before: each small array's shard was a zarr read of its own (on zarr's event loop), which
    stalled every batch that started a new window of shards on a bucket."""
    from tjepa.train import data

    # latent rows the biggest, as in a real store (there 16 MiB against a few KiB)
    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=10, rows_per_shard=4, vjepa_width=256))
    ds = CacheDataset(store, rows=[9, 2, 3, 5, 7, 0], levels=(4, 0))
    idx = [4, 1, 2, 0, 3, 5]
    want = default_collate([ds[i] for i in idx])
    latent = ds._array("vjepa_past")
    big = {n for n in ds.fields.values() if ds._array(n).nbytes // ds._array(n).shape[0] >= latent.nbytes // 10}
    assert big == {"vjepa_past", "vjepa_future"}
    monkeypatch.setattr(data, "BIG_ROW", latent.nbytes // 10)  # only latent rows are a request each
    fresh = CacheDataset(store, rows=[9, 2, 3, 5, 7, 0], levels=(4, 0))
    flights: list[list[tuple[str, int]]] = []
    real = Location.get_ranges

    def counted(self, keys, starts, ends, missing_ok=False):
        flights.append(list(zip(keys, starts, strict=True)))
        return real(self, keys, starts, ends, missing_ok)

    def no_zarr(*args, **kwargs):
        raise AssertionError("a small array was read through zarr")

    monkeypatch.setattr(Location, "get_ranges", counted)
    monkeypatch.setattr(zarr.Array, "__getitem__", no_zarr)
    monkeypatch.setattr(zarr.Array, "get_basic_selection", no_zarr)
    got = fresh.read_batch(idx)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert len(flights) == 2  # the shard indexes and the small shards, then the rows
    first, shards = flights[0], {r // 4 for r in (9, 2, 3, 5, 7, 0)}
    assert len(first) == len(set(first))  # each object once
    tails = [k for k, start in first if start < 0]
    whole = [k for k, start in first if start == 0]
    assert sum(k.startswith("vjepa/past/") for k in tails) == len(shards)  # one index per shard and array
    assert sum(k.startswith("targets/joints_past/") for k in whole) == len(shards)
    assert [k for k, _ in flights[1]].count(tails[0]) >= 1 and len(flights[1]) >= 2 * len(idx)
    flights.clear()
    fresh.read_batch(idx)  # every small shard kept: only the latents' indexes and rows are requested
    assert len(flights) == 2 and all(start < 0 for _, start in flights[0])


def test_a_failed_shard_read_is_retried_by_the_next_batch(tmp_path):
    path = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=8, rows_per_shard=4))
    ds = CacheDataset(path)
    plan = ds._blob_plan("valid_past")
    target = path / ds._array("valid_past").path / plan.key_of(1)
    good = target.read_bytes()
    target.write_bytes(good[:-3])  # truncated: the index no longer checks out
    with pytest.raises(StoreFormatError, match="valid_past.*shard index is damaged"):
        ds.read_batch([4, 5])
    assert not ds._fetching  # nothing left claimed by the failed batch
    target.write_bytes(good)
    want = default_collate([ds[i] for i in (4, 5)])
    got = ds.read_batch([4, 5])
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_layouts_zarr_reads_give_the_same_batch(store, monkeypatch):
    monkeypatch.setattr(shard_blobs, "plan", lambda arr, rows_per_shard: None)
    ds = CacheDataset(store, rows=[9, 2, 3, 5], with_tokens=True)
    want = default_collate([ds[i] for i in (3, 0, 2)])
    got = ds.read_batch([3, 0, 2])
    assert all(torch.equal(got[k], want[k]) for k in want)
