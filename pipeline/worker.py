"""Process one unit of work: the pending rows of one shard, owned by exactly one worker.

zarr has no locks (measured: interleaved writers inside a shard silently lose rows), so a unit is
always a whole shard's worth of rows and every store write of the unit goes through one writer
thread. Decoding runs ahead on a prefetch thread; writing runs behind on the writer thread; the
calling thread only runs the models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

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


@dataclass(frozen=True)
class Unit:
    store_path: str
    fingerprint: str
    shard: int
    rows: tuple[int, ...]
    episodes: tuple[Episode, ...]


@dataclass
class UnitResult:
    shard: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done (a retried unit)
    seconds: dict[str, float] = field(default_factory=dict)


def describe_error(err: BaseException) -> str:
    """One line for the ledger: our errors already name the file; others get their type."""
    from tjepa.errors import TjepaError

    return str(err) if isinstance(err, TjepaError) else f"{type(err).__name__}: {err}"


def resolve_device(device: str) -> str:
    """'auto' -> this worker's own GPU when there is one (by dask worker name), else CPU."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    index = 0
    try:
        from distributed import get_worker

        index = int(get_worker().name) % torch.cuda.device_count()
    except (ImportError, ValueError, TypeError):
        index = 0
    return f"cuda:{index}"


def get_encoders(opts: WorkerOptions):
    """(vjepa, thinker), loaded once per process and configuration."""
    import json

    key = json.dumps([opts.encoders.to_dict(), opts.device, opts.generator], sort_keys=True)
    if key not in _ENCODERS:
        from tjepa.pipeline.encoders.presets import load_encoders

        _ENCODERS[key] = load_encoders(opts.encoders, device=resolve_device(opts.device), generator=opts.generator)
    return _ENCODERS[key]


def encode_batch(encoders, batch: list[LoadedEpisode]) -> list:
    """Run both encoders on a batch; returns one RowData per episode (same order)."""
    from tjepa.cache_schema.store import RowData

    vjepa, thinker = encoders
    past = vjepa.encode([ep.past_frames for ep in batch])
    future = vjepa.encode([ep.future_frames for ep in batch])  # an independent forward
    # Frame indices give the prompt's timestamps (index / fps), as HF's processor derives them.
    thoughts = thinker.think(
        [ep.past_frames for ep in batch],
        fps=[ep.info.fps for ep in batch],
        frame_indices=[ep.past_idx for ep in batch],
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
                **t,
            )
        )
    return rows


class _Writer:
    """Serialises every store write of a unit on one thread, in submission order."""

    def __init__(self, store):
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tjepa-writer")
        self.pending: list[Future] = []
        self.seconds = 0.0

    def _timed(self, fn, *args) -> None:
        t0 = time.perf_counter()
        fn(*args)
        self.seconds += time.perf_counter() - t0

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(self._timed, fn, *args))

    def drain(self) -> None:
        try:
            for fut in self.pending:
                fut.result()  # re-raises a write error: a store that cannot be written is fatal
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)


def process_unit(
    unit: Unit,
    opts: WorkerOptions,
    on_row: Callable[[str, str | None], None] | None = None,
) -> UnitResult:
    """Encode and store every not-yet-done row of one shard. A bad video fails alone."""
    from tjepa.cache_schema.store import FeatureStore

    t_start = time.perf_counter()
    store = FeatureStore.open(unit.store_path, mode="r+")
    if store.fingerprint != unit.fingerprint:
        raise RuntimeError(f"{unit.store_path}: store fingerprint changed while the job was running")
    result = UnitResult(shard=unit.shard)
    status = store.status()
    todo = [(r, ep) for r, ep in zip(unit.rows, unit.episodes, strict=True) if status[r] != 1]
    result.skipped = [ep.id for r, ep in zip(unit.rows, unit.episodes, strict=True) if status[r] == 1]
    encoders = get_encoders(opts)
    writer = _Writer(store)
    wait_s = model_s = 0.0

    def report(video: str, error: str | None) -> None:
        if on_row is not None:
            on_row(video, error)

    def fail(row: int, ep: Episode, reason: str) -> None:
        writer.submit(store.mark_failed, row, ep.id, reason)
        result.failed.append((ep.id, reason))
        report(ep.id, reason)

    def flush(batch: list[tuple[int, LoadedEpisode]]) -> None:
        nonlocal model_s
        if not batch:
            return
        t0 = time.perf_counter()
        try:
            datas = encode_batch(encoders, [ep for _, ep in batch])
        except Exception as err:  # isolate the culprit: rerun one by one
            if len(batch) == 1:
                row, ep = batch[0]
                fail(row, ep.episode, "encoder error: " + describe_error(err))
                model_s += time.perf_counter() - t0
                return
            model_s += time.perf_counter() - t0
            for item in batch:
                flush([item])
            return
        model_s += time.perf_counter() - t0
        rows = [row for row, _ in batch]
        writer.submit(store.write_rows, rows, datas)
        for _, ep in batch:
            result.done.append(ep.episode.id)
            report(ep.episode.id, None)

    from tjepa.pipeline.prefetch import Prefetcher

    batch: list[tuple[int, LoadedEpisode]] = []
    try:
        with Prefetcher(todo, lambda item: load_episode(item[1], opts.sampling), opts.prefetch_depth) as pf:
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
                    continue
                batch.append((row, loaded))
                if len(batch) >= opts.batch_size:
                    flush(batch)
                    batch = []
            flush(batch)
    finally:
        t0 = time.perf_counter()
        writer.drain()
        drain_s = time.perf_counter() - t0
    result.seconds = {
        "total": time.perf_counter() - t_start,
        "decode_wait": wait_s,
        "model": model_s,
        "write": writer.seconds,
        "write_wait": drain_s,
    }
    return result


def shard_units(store_path: str, fingerprint: str, rows_per_shard: int, rows: list[int], episodes: list[Episode]) -> list[Unit]:
    """Group work rows by shard (the unit of ownership), in row order."""
    order = np.argsort(rows, kind="stable")
    units: dict[int, tuple[list[int], list[Episode]]] = {}
    for i in order:
        shard = rows[i] // rows_per_shard
        units.setdefault(shard, ([], []))
        units[shard][0].append(int(rows[i]))
        units[shard][1].append(episodes[i])
    return [Unit(store_path, fingerprint, s, tuple(r), tuple(e)) for s, (r, e) in sorted(units.items())]
