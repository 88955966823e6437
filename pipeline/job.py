"""The stage-one coordinator: sources -> store rows -> units of work -> executor -> summary.

The coordinator alone creates the store, grows its arrays and decides the work list (pending,
stale and, on request, failed rows); workers only fill rows of the shards they own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tjepa.cache_schema.ledger import LEDGER_DIR
from tjepa.pipeline.encoders.vllm_generator import VllmConfig
from tjepa.pipeline.episode_io import SamplingConfig, source_signature
from tjepa.pipeline.sources import Episode, discover
from tjepa.pipeline.worker import UnitResult, WorkerOptions, shard_units


@dataclass(frozen=True)
class CacheJob:
    videos: Path
    out: object  # a store path or URL (cache_schema.storage.Location)
    encoders: object  # EncoderConfig
    sampling: SamplingConfig = SamplingConfig()
    layout: str = "auto"
    batch_size: int = 4
    device: str = "auto"
    generator: str = "transformers"
    vllm: VllmConfig = VllmConfig()  # engine settings for generator == "vllm" (not fingerprinted)
    rows_per_shard: int = 8
    limit: int | None = None
    retry_failed: bool = False
    workers: int = 0  # 0: in-process; N: a LocalCluster of N worker processes
    scheduler: str | None = None  # an existing dask scheduler address
    decode_workers: int | str = 0  # per model worker: 0 = one prefetch thread, N processes, or "auto"


@dataclass
class JobSummary:
    store: str
    total_rows: int
    todo: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped_done: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failed_rows: int = 0  # over the whole store, not just this run
    pending_rows: int = 0

    @property
    def exit_code(self) -> int:
        """3 when some row of the store is failed, else 0 (the contract of `tjepa cache`)."""
        return 3 if self.failed_rows else 0

    def to_dict(self) -> dict:
        """JSON-ready (`tjepa cache --json`): store counts, this run's rows and failures, timing."""
        return {
            "store": self.store,
            "exit_code": self.exit_code,
            "rows": {"total": self.total_rows, "done": self.total_rows - self.failed_rows - self.pending_rows,
                     "failed": self.failed_rows, "pending": self.pending_rows},
            "this_run": {"todo": self.todo, "done": len(self.done), "failed": len(self.failed),
                         "skipped": self.skipped_done},
            "failures": [{"video": video, "reason": reason} for video, reason in self.failed],
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "videos_per_s": round(len(self.done) / self.seconds, 4) if self.seconds > 0 else 0.0,
        }


def extraction_config(job: CacheJob) -> dict:
    """The canonical extraction config: everything that changes what a row contains."""
    return {
        "sampling": job.sampling.to_dict(),
        "encoders": job.encoders.to_dict(),
    }


def provenance(job: CacheJob) -> dict:
    """This run's record in the store (pipeline/provenance.py); the workers' environments join it after."""
    from tjepa.pipeline.provenance import run_record

    return run_record(job)


def store_layout(job: CacheJob, with_targets: bool):
    from tjepa.cache_schema.layout import StoreLayout
    from tjepa.pipeline.encoders.presets import encoder_dims

    dims = encoder_dims(job.encoders, n_frames=job.sampling.n_past)  # prompt capacity follows --past
    return StoreLayout(
        n_past=job.sampling.vjepa_past_frames,
        n_future=job.sampling.n_future,
        tubelet=dims["tubelet"],
        patches=dims["patches"],
        vjepa_width=dims["vjepa_width"],
        levels=dims["levels"],
        vlm_width=dims["vlm_width"],
        max_new_tokens=dims["max_new_tokens"],
        with_targets=with_targets,
        keep_tokens=dims["keep_tokens"],
        max_prompt_tokens=dims.get("max_prompt_tokens", 0),
        thumb_size=tuple(job.sampling.thumb_size),
        rows_per_shard=job.rows_per_shard,
        window_tubelets=_window_tubelets(job.sampling.window_frames, dims["tubelet"]),
    )


def _window_tubelets(window_frames: int, tubelet: int) -> int:
    if window_frames % tubelet:
        from tjepa.errors import ConfigError

        raise ConfigError(f"--window-frames {window_frames} is not a multiple of the V-JEPA tubelet ({tubelet})")
    return window_frames // tubelet


def sync_rows(store, episodes: list[Episode]) -> dict[str, tuple[int, float]]:
    """Append rows for new videos and return the current source signatures of every episode."""
    signatures = {ep.id: source_signature(ep) for ep in episodes}
    known = store.row_of()
    new = [ep for ep in episodes if ep.id not in known]
    if new:
        store.add_rows(
            [ep.id for ep in new],
            [ep.group for ep in new],
            [signatures[ep.id][0] for ep in new],
            [signatures[ep.id][1] for ep in new],
        )
    return signatures


def plan(job: CacheJob):
    """Open or create the store, sync rows, and return (store, units, episodes_by_id)."""
    from tjepa.cache_schema.store import FeatureStore

    episodes = discover(job.videos, job.layout)
    with_targets = any(ep.labels is not None for ep in episodes)
    store = FeatureStore.open_or_create(
        job.out, store_layout(job, with_targets), extraction_config(job), provenance(job)
    )
    if with_targets != store.layout.with_targets:
        from tjepa.errors import ConfigMismatchError

        raise ConfigMismatchError(
            f"{job.out}: the store was made {'with' if store.layout.with_targets else 'without'} targets "
            f"but {job.videos} is {'an EgoDex' if with_targets else 'a plain-video'} tree; use another --out"
        )
    signatures = sync_rows(store, episodes)
    store.refresh_stale(signatures)  # changed sources: record the new signature, back to pending
    rows = store.work_list(signatures, retry_failed=job.retry_failed)
    if job.limit is not None:
        rows = sorted(rows)[: job.limit]
    by_id = {ep.id: ep for ep in episodes}
    ids = {row: video for video, row in store.row_of().items()}
    work_eps = [by_id[ids[r]] for r in rows]
    units = shard_units(store.location, store.fingerprint, store.layout.rows_per_shard, list(rows), work_eps,
                        run=store.run_id)
    already_done = int((store.status() == 1).sum())
    return store, units, already_done


def run(job: CacheJob, on_row=None, on_plan=None) -> JobSummary:
    """Run the whole job; `on_plan(n_todo)` and `on_row(video, error)` feed a progress display."""
    from tjepa.pipeline.executor import run_in_process, run_on_dask

    t0 = time.perf_counter()
    store, units, already_done = plan(job)
    n_todo = sum(len(u.rows) for u in units)
    if on_plan is not None:
        on_plan(n_todo)
    opts = WorkerOptions(
        encoders=job.encoders,
        sampling=job.sampling,
        batch_size=job.batch_size,
        device=job.device,
        generator=job.generator,
        vllm=job.vllm,
        decode_workers=job.decode_workers,
        model_workers_per_host=max(1, job.workers) if not job.scheduler else 1,
    )
    on_row = on_row or (lambda video, error: None)
    if not units:
        results: list[UnitResult] = []
    elif job.workers or job.scheduler:
        results = run_on_dask(units, opts, on_row, n_workers=job.workers or None, scheduler=job.scheduler)
    else:
        results = run_in_process(units, opts, on_row)
    store.record_workers(store.run_id, [r.environment for r in results if r.environment])
    if store.ledger.prefix == LEDGER_DIR:  # the store's own ledger (not a --ledger of the user's)
        store.ledger.export()
    return summarize(job, results, n_todo, already_done, time.perf_counter() - t0)


def summarize(job: CacheJob, results: list[UnitResult], n_todo: int, already_done: int, seconds: float) -> JobSummary:
    from tjepa.cache_schema.store import FeatureStore

    status = FeatureStore.open(job.out, mode="r").status()
    stage: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            stage[k] = stage.get(k, 0.0) + v
    return JobSummary(
        store=str(job.out),
        total_rows=len(status),
        todo=n_todo,
        done=[v for r in results for v in r.done],
        failed=[f for r in results for f in r.failed],
        skipped_done=already_done + sum(len(r.skipped) for r in results),
        seconds=seconds,
        stage_seconds=stage,
        failed_rows=int((status == 2).sum()),
        pending_rows=int((status == 0).sum()),
    )
