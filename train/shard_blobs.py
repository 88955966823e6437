"""Whole shards of the small arrays as one GET each, decoded here rather than through zarr.

Every batch of a new shard window needs a shard of each small array (joints, masks, VLM means,
frame indexes: a few hundred KiB per shard). zarr reads each separately on its own event loop and
decodes it chunk by chunk in Python; on a bucket those reads stalled every batch at the start of a
window for 0.2-0.4 s (BENCHMARKS.md, "Loading from a bucket"). Here the shard objects are
fetched in the same flight as the latents' shard indexes and decoded with numcodecs. Only the
layouts `tjepa cache` writes are decoded here; for any other `plan` returns None and zarr reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tjepa.errors import StoreFormatError
from tjepa.train import chunk_reads
from tjepa.train.chunk_reads import EMPTY, parse_index


@dataclass(frozen=True)
class Plan(chunk_reads.Plan):
    """How one shard object of an array decodes (besides where its rows live): the codecs."""

    sharded: bool  # inner one-row chunks with an index at the end; else one chunk of `rows_per_shard` rows
    compressor: str | None  # "blosc", "zstd" or None, applied to every (inner) chunk

    def decode(self, blob: bytes | None, where: str) -> np.ndarray:
        """The shard's rows [rows_per_shard, *row_shape]; a missing object (None) reads as the fill value."""
        out = np.full((self.rows_per_shard, *self.row_shape), self.fill, self.dtype)
        if blob is None:
            return out
        if not self.sharded:
            out.reshape(-1)[:] = self._chunk(blob, out.nbytes, where)
            return out
        n = self.index_nbytes
        entries = parse_index(blob[-n:], self.rows_per_shard, where)
        row_nbytes = out[0].nbytes
        view = memoryview(blob)
        for i, (offset, nbytes) in enumerate(entries.tolist()):
            if offset == int(EMPTY):
                continue
            if offset + nbytes > len(blob) - n:
                raise StoreFormatError(f"{where}: chunk {i} lies outside the shard (damaged index)")
            out[i].reshape(-1)[:] = self._chunk(view[offset:offset + nbytes], row_nbytes, where)
        return out

    def _chunk(self, data, nbytes: int, where: str) -> np.ndarray:
        if self.compressor == "blosc":
            from numcodecs import blosc

            data = blosc.decompress(data)
        elif self.compressor == "zstd":
            from numcodecs import Zstd

            data = Zstd().decode(data)
        if len(data) != nbytes:
            raise StoreFormatError(f"{where}: a chunk decodes to {len(data)} bytes, expected {nbytes}")
        return np.frombuffer(data, self.dtype)


def _compressor(codecs) -> tuple[bool, str | None]:
    """(understood, name) for a bytes codec plus at most one compressor."""
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return False, None
    if len(codecs) == 1:
        return True, None
    kind = {BloscCodec: "blosc", ZstdCodec: "zstd"}.get(type(codecs[1]))
    return kind is not None, kind


def plan(arr, rows_per_shard: int) -> Plan | None:
    """A `Plan` when one object of `arr` holds `rows_per_shard` rows in a layout decoded here, else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    dtype, row_shape, ndim = np.dtype(arr.dtype), tuple(arr.shape[1:]), len(arr.shape)
    if dtype.byteorder not in ("<", "|", "=") or dtype.hasobject or tuple(arr.chunks[1:]) != row_shape:
        return None
    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    sharded = len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
    if sharded:
        sc = codecs[0]
        ok, kind = _compressor(tuple(sc.codecs))
        if (not ok or [type(c) for c in sc.index_codecs] != [BytesCodec, Crc32cCodec]
                or sc.index_location != ShardingCodecIndexLocation.end or tuple(sc.chunk_shape) != (1, *row_shape)
                or int(arr.shards[0]) != rows_per_shard):
            return None
    else:
        ok, kind = _compressor(codecs)
        if not ok or int(arr.chunks[0]) != rows_per_shard or math.prod(row_shape) == 0:
            return None
    return Plan(arr.path, rows_per_shard, row_shape, dtype, arr.metadata.fill_value,
                lambda shard: arr.metadata.encode_chunk_key((shard, *(0,) * (ndim - 1))), sharded, kind)
