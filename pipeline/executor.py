"""Run units of work in-process or on a dask.distributed cluster, reporting progress per video.

The coordinator (this process) has already created or grown every array; units only write inside
their own shard, so workers never race. dask reschedules the unit of a worker that dies; the rerun
skips rows already marked done, so no row is lost and none is written twice.
"""

from __future__ import annotations

from collections.abc import Callable

from tjepa.pipeline.worker import Unit, UnitResult, WorkerOptions, process_unit

ProgressFn = Callable[[str, str | None], None]
PROGRESS_TOPIC = "tjepa-cache-progress"


def run_in_process(units: list[Unit], opts: WorkerOptions, on_row: ProgressFn) -> list[UnitResult]:
    return [process_unit(u, opts, on_row) for u in units]


def _remote_unit(unit: Unit, opts: WorkerOptions) -> UnitResult:
    """Runs on a dask worker: progress goes back to the client as worker events."""
    from distributed import get_worker

    worker = get_worker()

    def on_row(video: str, error: str | None) -> None:
        worker.log_event(PROGRESS_TOPIC, {"video": video, "error": error})

    return process_unit(unit, opts, on_row)


def start_local_cluster(n_workers: int):
    """One single-threaded worker process per model instance (and per GPU on CUDA machines)."""
    from distributed import LocalCluster

    # memory_limit=0: model weights would otherwise trip the nanny's per-worker memory pause.
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit=0,
        silence_logs=40,
    )


def run_on_dask(
    units: list[Unit],
    opts: WorkerOptions,
    on_row: ProgressFn,
    n_workers: int | None = None,
    scheduler: str | None = None,
) -> list[UnitResult]:
    """Submit one task per shard to a LocalCluster (n_workers) or an existing scheduler address."""
    from distributed import Client, as_completed

    cluster = None
    if scheduler is None:
        cluster = start_local_cluster(n_workers or 1)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        client.subscribe_topic(PROGRESS_TOPIC, lambda event: on_row(event[1]["video"], event[1]["error"]))
        futures = [
            client.submit(_remote_unit, unit, opts, key=f"tjepa-unit-{unit.shard}-{unit.fingerprint[:12]}", pure=False)
            for unit in units
        ]
        results = [fut.result() for fut in as_completed(futures)]
        # Late progress events may still be in flight; the summary uses the results, not events.
        client.unsubscribe_topic(PROGRESS_TOPIC)
        return sorted(results, key=lambda r: r.shard)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
