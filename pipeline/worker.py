"""Process one unit of work: the pending rows of one shard, owned by exactly one worker.

zarr has no locks (measured: interleaved writers inside a shard silently lose rows), so a unit is
always a whole shard's worth of rows and every store write of the unit goes through one writer
thread. Decoding runs ahead on a prefetch thread (or in decode processes); writing runs behind on the writer thread; the
calling thread only runs the models.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tjepa.devices import resolve_device as shared_resolve_device
from tjepa.pipeline.encoders.vllm_generator import VllmConfig
from tjepa.pipeline.episode_io import LoadedEpisode, SamplingConfig, load_episode
from tjepa.pipeline.sources import Episode

# One model instance per process, reused across units (loading is the expensive part).
_ENCODERS: dict[str, tuple] = {}


@dataclass(frozen=True)
class WorkerOptions:
    encoders: object  # tjepa.pipeline.encoders.presets.EncoderConfig (frozen, picklable)
    sampling: SamplingConfig
    batch_size: int = 4
    device: str = "auto"
    generator: str = "transformers"
    prefetch_depth: int = 8
    vllm: VllmConfig = VllmConfig()  # engine settings for generator == "vllm"
    # 0: decode on one prefetch thread; N: N decode processes; "auto": from this worker's cores
    decode_workers: int | str = 0
    model_workers_per_host: int = 1  # model workers sharing this host's cores ("auto" divides by it)


@dataclass(frozen=True)
class Unit:
    store_path: object  # cache_schema.storage.Location (carries --storage-options to dask workers)
    fingerprint: str
    shard: int
    rows: tuple[int, ...]
    episodes: tuple[Episode, ...]
    run: int = 0  # which run of the store this is (recorded per row in index/run)


@dataclass
class UnitResult:
    shard: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done (a retried unit)
    seconds: dict[str, float] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)  # where the rows were computed (provenance.py)


def describe_error(err: BaseException) -> str:
    """One line for the ledger: our errors already name the file or row; others get their type."""
    from tjepa.cache_schema.rowdata import RowDataError
    from tjepa.errors import TjepaError

    return str(err) if isinstance(err, (TjepaError, RowDataError)) else f"{type(err).__name__}: {err}"


def resolve_device(device: str) -> str:
    """'auto' -> this worker's own GPU when there is one (by dask worker name), else CPU."""
    index = 0
    if device == "auto":
        try:
            from distributed import get_worker

            index = int(get_worker().name)
        except (ImportError, ValueError, TypeError):
            index = 0
    return str(shared_resolve_device(device, index))


def get_encoders(opts: WorkerOptions):
    """(vjepa, thinker), loaded once per process and configuration."""
    import json

    key = json.dumps([opts.encoders.to_dict(), opts.device, opts.generator, repr(opts.vllm)], sort_keys=True)
    if key not in _ENCODERS:
        from tjepa.pipeline.encoders.presets import load_encoders

        _ENCODERS[key] = load_encoders(opts.encoders, device=resolve_device(opts.device), generator=opts.generator,
                                       vllm=opts.vllm, n_frames=opts.sampling.n_past)
    return _ENCODERS[key]


# PyAV thread_type inside each decode process: frame threading in each process measured faster than
# single-threaded decoders with the same process count (BENCHMARKS.md, 3d).
DECODE_POOL_THREADING = "FRAME"


def load_item(item: tuple[int, Episode], sampling: SamplingConfig, thread_type: str = "FRAME") -> LoadedEpisode:
    """Decode one (row, episode) work item (module level: decode processes unpickle it)."""
    return load_episode(item[1], sampling, thread_type)


def prefetcher(todo: list[tuple[int, Episode]], opts: WorkerOptions):
    """The thread prefetcher, or the decode process pool when decode workers are asked for."""
    import functools

    from tjepa.pipeline.decode_pool import PoolPrefetcher, resolve_decode_workers
    from tjepa.pipeline.prefetch import Prefetcher

    fn = functools.partial(load_item, sampling=opts.sampling)
    sharers = opts.model_workers_per_host
    if resolve_device(opts.device).startswith("cuda"):
        import torch

        sharers = max(sharers, torch.cuda.device_count())  # cores per GPU on a multi-GPU node
    n = resolve_decode_workers(opts.decode_workers, sharers)
    if n == 0:
        return Prefetcher(todo, fn, opts.prefetch_depth)
    fn = functools.partial(load_item, sampling=opts.sampling, thread_type=DECODE_POOL_THREADING)
    # Enough in flight for every process to stay busy while the model fills and runs a batch.
    return PoolPrefetcher(todo, fn, n, depth=max(opts.prefetch_depth, opts.batch_size + 2 * n))


def encode_windows(vjepa, batch: list[LoadedEpisode], window_frames: int) -> np.ndarray:
    """[B, (To+Tf)/tubelet, P, D]: every run of `window_frames` sampled frames through its own forward
    (one batched call; a clip never attends across its window's edges)."""
    clips = [w for ep in batch for side in (ep.past_frames, ep.future_frames)
             for w in np.split(side, len(side) // window_frames)]
    lat = vjepa.encode(clips)  # [B * windows, window_frames / tubelet, P, D]
    return lat.reshape(len(batch), -1, *lat.shape[2:])


def encode_batch(encoders, batch: list[LoadedEpisode], window_frames: int = 0) -> list:
    """Run both encoders on a batch; returns one RowData per episode (same order)."""
    from tjepa.cache_schema.store import RowData

    vjepa, thinker = encoders
    past = vjepa.encode([ep.past_frames for ep in batch])
    future = vjepa.encode([ep.future_frames for ep in batch])  # an independent forward
    windows = encode_windows(vjepa, batch, window_frames) if window_frames else None
    # Frame indices give the prompt's timestamps (index / fps), as HF's processor derives them.
    thoughts = thinker.think(
        [ep.vlm_frames for ep in batch],
        fps=[ep.info.fps for ep in batch],
        frame_indices=[ep.vlm_idx for ep in batch],
    )
    rows = []
    for i, ep in enumerate(batch):
        th = thoughts[i]
        t = ep.targets or {}
        rows.append(
            RowData(
                n_frames=ep.info.n_frames,
                fps=ep.info.fps,
                width=ep.info.width,
                height=ep.info.height,
                past_idx=ep.past_idx,
                future_idx=ep.future_idx,
                vjepa_past=past[i],
                vjepa_future=future[i],
                prompt_mean=th.prompt_mean,
                think_mean=th.think_mean,
                prompt_len=th.prompt_len,
                think_len=th.think_len,
                think_ids=th.think_ids,
                think_text=th.think_text,
                prompt_tokens=th.prompt_tokens,
                think_tokens=th.think_tokens,
                thumb=ep.thumb,
                vjepa_windows=None if windows is None else windows[i],
                **t,
            )
        )
    return rows


def _store_failure(store, action: str, err: BaseException):
    """A failure of the store itself (not of one row's data): the job cannot go on."""
    from tjepa.errors import StoreError

    return StoreError(f"{store.path}: {action} failed ({describe_error(err)}); the job stopped. Rows written so "
                      "far are kept: fix the store (disk space, permissions) and rerun the same command.")


def store_rows(store, items: list[tuple[int, str, object]], run: int = 0) -> list[tuple[str, str | None]]:
    """Check each (row, video, RowData); store the good rows, mark the others failed. (video, error) per row.

    A row whose data cannot be stored (non-finite, overflowing its stored dtype, longer than its
    capacity, misshapen) fails alone, with the reason in the ledger. Only the store refusing a write is
    fatal (StoreError)."""
    outcomes: list[tuple[str, str | None]] = []
    rows, encoded = [], []
    for row, video, data in items:
        try:
            enc = store.encode(row, data)
        except Exception as err:  # this row's data cannot be stored; the others can
            outcomes += mark_failed(store, row, video, "cannot store the row: " + describe_error(err))
            continue
        rows.append(row)
        encoded.append(enc)
        outcomes.append((video, None))
    try:
        store.write_encoded(rows, encoded, run)
    except Exception as err:
        raise _store_failure(store, f"writing rows {rows}", err) from err
    return outcomes


def mark_failed(store, row: int, video: str, reason: str) -> list[tuple[str, str | None]]:
    """Record one failed row (ledger line, then status); a store that refuses it is fatal."""
    try:
        store.mark_failed(row, video, reason)
    except Exception as err:
        raise _store_failure(store, f"marking row {row} ({video}) failed", err) from err
    return [(video, reason)]


class _Writer:
    """Serialises every store write of a unit on one thread, in submission order.

    Each task returns the (video, error) outcomes of its rows; `collect` hands them back in order, so
    a row is reported done only once it is on disk, and re-raises a store failure (StoreError)."""

    def __init__(self, store):
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tjepa-writer")
        self.pending: deque[Future] = deque()
        self.seconds = 0.0

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(self._timed, fn, *args))

    def collect(self, wait: bool = False) -> list[tuple[str, str | None]]:
        """Outcomes of the finished tasks (all tasks with wait=True), oldest first."""
        out: list[tuple[str, str | None]] = []
        while self.pending and (wait or self.pending[0].done()):
            out += self.pending.popleft().result()
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def process_unit(
    unit: Unit,
    opts: WorkerOptions,
    on_row: Callable[[str, str | None], None] | None = None,
) -> UnitResult:
    """Encode and store every not-yet-done row of one shard. A bad video or row fails alone.

    Every per-row step (decode, labels, encoders, assembly, validation) is isolated: its error marks
    that row failed and the unit goes on. Only a store failure stops it (StoreError)."""
    from tjepa.cache_schema.store import FeatureStore
    from tjepa.errors import StoreError
    from tjepa.pipeline.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before this unit's prefetch and writer threads start (also on dask workers)
    t_start = time.perf_counter()
    store = FeatureStore.open(unit.store_path, mode="r+")
    if store.fingerprint != unit.fingerprint:
        raise StoreError(f"{unit.store_path}: the store was replaced while the job was running (its fingerprint "
                         "changed); the job stopped")
    result = UnitResult(shard=unit.shard)
    status = store.status()
    todo = [(r, ep) for r, ep in zip(unit.rows, unit.episodes, strict=True) if status[r] != 1]
    result.skipped = [ep.id for r, ep in zip(unit.rows, unit.episodes, strict=True) if status[r] == 1]
    encoders = get_encoders(opts)
    from tjepa.pipeline.provenance import worker_environment

    result.environment = worker_environment(resolve_device(opts.device), opts.generator, encoders[1])
    writer = _Writer(store)
    wait_s = model_s = 0.0

    def settle(outcomes: list[tuple[str, str | None]]) -> None:
        for video, error in outcomes:
            if error is None:
                result.done.append(video)
            else:
                result.failed.append((video, error))
            if on_row is not None:
                on_row(video, error)

    def fail(row: int, ep: Episode, reason: str) -> None:
        writer.submit(mark_failed, store, row, ep.id, reason)

    def flush(batch: list[tuple[int, LoadedEpisode]]) -> None:
        nonlocal model_s
        if not batch:
            return
        t0 = time.perf_counter()
        try:
            datas = encode_batch(encoders, [ep for _, ep in batch], opts.sampling.window_frames)
        except Exception as err:  # isolate the culprit: rerun one by one
            model_s += time.perf_counter() - t0
            if len(batch) == 1:
                row, ep = batch[0]
                fail(row, ep.episode, "encoder error: " + describe_error(err))
                return
            for item in batch:
                flush([item])
            return
        model_s += time.perf_counter() - t0
        items = [(row, ep.episode.id, d) for (row, ep), d in zip(batch, datas, strict=True)]
        writer.submit(store_rows, store, items, unit.run)

    batch: list[tuple[int, LoadedEpisode]] = []
    try:
        with prefetcher(todo, opts) as pf:
            it = iter(pf)
            while True:
                t0 = time.perf_counter()
                nxt = next(it, None)
                wait_s += time.perf_counter() - t0
                if nxt is None:
                    break
                (row, ep), loaded = nxt
                if isinstance(loaded, BaseException):
                    fail(row, ep, describe_error(loaded))
                else:
                    batch.append((row, loaded))
                    if len(batch) >= opts.batch_size:
                        flush(batch)
                        batch = []
                settle(writer.collect())
            flush(batch)
        t0 = time.perf_counter()
        settle(writer.collect(wait=True))
        drain_s = time.perf_counter() - t0
    finally:
        writer.close()
    result.seconds = {
        "total": time.perf_counter() - t_start,
        "decode_wait": wait_s,
        "model": model_s,
        "write": writer.seconds,
        "write_wait": drain_s,
    }
    return result


def shard_units(store_path: object, fingerprint: str, rows_per_shard: int, rows: list[int], episodes: list[Episode],
                run: int = 0) -> list[Unit]:
    """Group work rows by shard (the unit of ownership), in row order."""
    order = np.argsort(rows, kind="stable")
    units: dict[int, tuple[list[int], list[Episode]]] = {}
    for i in order:
        shard = rows[i] // rows_per_shard
        units.setdefault(shard, ([], []))
        units[shard][0].append(int(rows[i]))
        units[shard][1].append(episodes[i])
    return [Unit(store_path, fingerprint, s, tuple(r), tuple(e), run) for s, (r, e) in sorted(units.items())]
