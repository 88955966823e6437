"""Run units of work in-process or on a dask.distributed cluster, reporting progress per video.

The coordinator (this process) has already created or grown every array; units only write inside
their own shard, so workers never race. dask reschedules the unit of a worker that dies; the rerun
skips rows already marked done, so no row is lost and none is written twice.

`--generator vllm`: vLLM's engine runs in a child process (so do `--decode-workers` processes), and
dask's nanny starts workers as daemonic processes, which may not have children. Local clusters for
vLLM or decode workers therefore run with
`distributed.worker.daemon: False`, and each worker sees only its own GPU from the start
(CUDA_VISIBLE_DEVICES: vLLM ignores torch device names). Workers of an existing scheduler are
checked and refused with the way to start them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from tjepa.errors import TjepaError
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


def vllm_worker_env(index: int, n_gpus: int) -> dict[str, str]:
    """The environment of local worker `index` for vLLM: pinned to one GPU (round robin) when there are GPUs."""
    return {"CUDA_VISIBLE_DEVICES": str(index % n_gpus)} if n_gpus else {}


def non_daemonic_workers():
    """dask config under which nannies start non-daemonic workers (keep it active while the cluster lives:
    a nanny reads it again when it restarts a worker)."""
    import dask

    return dask.config.set({"distributed.worker.daemon": False})


def _is_daemonic() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def refuse_daemonic_workers(client) -> None:
    """vLLM cannot start its engine in a daemonic worker: say how to start the workers instead."""
    daemonic = sorted(addr for addr, flag in client.run(_is_daemonic).items() if flag)
    if daemonic:
        raise TjepaError(
            f"--generator vllm: the dask workers {', '.join(daemonic)} run as daemonic processes, and vLLM's engine "
            "starts a child process there ('daemonic processes are not allowed to have children'). Start them "
            "with `dask worker --no-nanny ...`, or with DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment"
        )


def start_local_cluster(n_workers: int, generator: str = "transformers", n_gpus: int = 0):
    """One single-threaded worker process per model instance (and per GPU on CUDA machines).

    For vLLM: call it under `non_daemonic_workers()`; worker i sees only GPU i % n_gpus."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if generator == "vllm":
        workers = {
            i: {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": 0, "env": vllm_worker_env(i, n_gpus)}}
            for i in range(n_workers)
        }
        scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
        return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40)
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
    vllm = opts.generator == "vllm"
    # vLLM's engine and the decode pool both start child processes inside the worker.
    children = vllm or opts.decode_workers != 0
    with non_daemonic_workers() if children else contextlib.nullcontext():
        return _run_on_dask(units, opts, on_row, n_workers, scheduler, vllm)


def _run_on_dask(units, opts, on_row, n_workers, scheduler, vllm) -> list[UnitResult]:
    from distributed import Client, as_completed

    cluster = None
    if scheduler is None:
        n_gpus = 0
        if vllm:
            import torch

            n_gpus = torch.cuda.device_count()
            if n_gpus and opts.device not in ("auto", "cuda", "cuda:0"):
                raise TjepaError(f"--generator vllm --workers: each worker gets one GPU of its own; "
                                 f"--device {opts.device} cannot be honoured (use auto)")
        cluster = start_local_cluster(n_workers or 1, opts.generator, n_gpus)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        if vllm:
            refuse_daemonic_workers(client)
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
