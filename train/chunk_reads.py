"""Rows of the latent arrays as one ranged GET each, located through each shard's index.

The latents are sharded with one uncompressed chunk per video and the shard index at the end (what
`tjepa cache` writes). zarr reads such a chunk as two requests, the shard index and then the chunk,
each with its own Python overhead; on a bucket that doubled the client's CPU per byte and halved
loading throughput next to the raw GETs (BENCHMARKS.md, "Loading from a bucket"). Here a batch
costs one request per shard it touches (the indexes, all in flight, checksums checked) and one per
row (all in flight); the caller may fetch the indexes itself, with other requests of the batch
(`index_requests`). Arrays with any other codec layout are left to zarr (`plan` returns None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tjepa.cache_schema.storage import Location
from tjepa.errors import StoreFormatError

EMPTY = np.uint64(2**64 - 1)  # index entry of a chunk that was never written (reads as the fill value)


@dataclass(frozen=True)
class Plan:
    """Where the chunks of one array live: `path` inside the store, rows per shard, row shape, dtype."""

    path: str
    rows_per_shard: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    fill: object
    key_of: object  # shard number -> object key (the array's chunk key encoding)

    @property
    def index_nbytes(self) -> int:
        return 16 * self.rows_per_shard + 4  # (offset, nbytes) uint64 per chunk + crc32c


def plan(arr) -> Plan | None:
    """A `Plan` when `arr` has one-row uncompressed chunks in shards indexed at the end, else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    codecs = getattr(arr.metadata, "codecs", ())
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc, dtype = codecs[0], np.dtype(arr.dtype)
    little = dtype.byteorder in ("<", "|", "=")
    if ([type(c) for c in sc.codecs] != [BytesCodec] or [type(c) for c in sc.index_codecs] != [BytesCodec, Crc32cCodec]
            or sc.index_location != ShardingCodecIndexLocation.end or not little
            or tuple(sc.chunk_shape) != (1, *arr.shape[1:])):
        return None
    rps = int(arr.shards[0])
    ndim = len(arr.shape)
    return Plan(arr.path, rps, tuple(arr.shape[1:]), dtype, arr.metadata.fill_value,
                lambda shard: arr.metadata.encode_chunk_key((shard, *(0,) * (ndim - 1))))


def parse_index(tail: bytes, n_chunks: int, where: str) -> np.ndarray:
    """(offset, nbytes) [n_chunks, 2] from a shard index (the object's last 16 n + 4 bytes; crc32c checked)."""
    import google_crc32c

    if len(tail) != 16 * n_chunks + 4 or google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
        raise StoreFormatError(f"{where}: the shard index is damaged (size or checksum)")
    return np.frombuffer(tail[:-4], "<u8").reshape(-1, 2)


def _shard_key(p: Plan, row: int) -> str:
    return f"{p.path}/{p.key_of(row // p.rows_per_shard)}"


def index_requests(jobs: list[tuple[Plan, int, np.ndarray]]) -> dict[str, int]:
    """The shard indexes `read_rows(jobs)` needs: object key -> its index's size (the object's tail)."""
    return {_shard_key(p, row): p.index_nbytes for p, row, _ in sorted(jobs, key=lambda j: (j[0].path, j[1]))}


def read_rows(loc: Location, jobs: list[tuple[Plan, int, np.ndarray]],
              indexes: dict[str, bytes | None] | None = None) -> None:
    """Fill each `out` [row_shape] with row `row` of its array: the shard indexes first (unless
    `indexes` already holds them: the tails named by `index_requests`), then every chunk."""
    sizes = index_requests(jobs)
    if indexes is None:
        indexes = dict(zip(sizes, loc.get_ranges(list(sizes), [-n for n in sizes.values()], [None] * len(sizes)),
                           strict=True))
    entries = {}
    for key, n in sizes.items():
        if indexes[key] is None:
            raise StoreFormatError(f"{loc / key}: the shard object of a done row is missing")
        entries[key] = parse_index(indexes[key], (n - 4) // 16, loc / key)
    wanted, keys, starts, ends = [], [], [], []
    for p, row, out in jobs:
        key = _shard_key(p, row)
        offset, nbytes = entries[key][row % p.rows_per_shard]
        if offset == EMPTY:  # never written (zarr leaves out chunks equal to the fill value)
            out[...] = p.fill
            continue
        if int(nbytes) != math.prod(p.row_shape) * p.dtype.itemsize:
            raise StoreFormatError(f"{loc / key}: chunk of row {row} has {int(nbytes)} bytes, expected "
                                   f"{math.prod(p.row_shape) * p.dtype.itemsize}")
        wanted.append((p, out))
        keys.append(key)
        starts.append(int(offset))
        ends.append(int(offset + nbytes))
    for (p, out), blob in zip(wanted, loc.get_ranges(keys, starts, ends), strict=True):
        out[...] = np.frombuffer(blob, p.dtype).reshape(p.row_shape)
