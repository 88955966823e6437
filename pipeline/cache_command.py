"""What `tjepa cache` does around the job: build the configs, show progress, print the summary."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.vllm_generator import VllmConfig
from tjepa.pipeline.episode_io import SamplingConfig
from tjepa.pipeline.job import CacheJob, JobSummary, run


def parse_workers(value: str) -> int:
    """'auto' -> one worker per GPU (at least one); otherwise a non-negative integer."""
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return count_option(value, "--workers")


def count_option(value: str, flag: str) -> int:
    """A non-negative integer option, or an error naming the flag."""
    try:
        n = int(value)
    except ValueError:
        raise TjepaError(f"{flag} must be an integer or 'auto', got {value!r}") from None
    if n < 0:
        raise TjepaError(f"{flag} must be >= 0, got {n}")
    return n


def parse_decode_workers(value: str) -> int | str:
    """'auto' stays 'auto' (each model worker sizes it from its own cores); else an integer >= 0."""
    return value if value == "auto" else count_option(value, "--decode-workers")


def parse_layers(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise TjepaError(f"--layers must be comma-separated integers, got {value!r}") from None


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]caching"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} videos/s"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def run_with_progress(job: CacheJob, console: Console) -> JobSummary:
    import time

    with progress_bar(console) as bar:
        task = bar.add_task("cache", total=None, rate="-", failed=0)
        state = {"t0": time.perf_counter(), "n": 0, "failed": 0}

        def on_plan(n_todo: int) -> None:
            bar.update(task, total=n_todo)
            state["t0"] = time.perf_counter()

        def on_row(video: str, error: str | None) -> None:
            state["n"] += 1
            state["failed"] += error is not None
            rate = state["n"] / max(time.perf_counter() - state["t0"], 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.2f}", failed=state["failed"])
            if error is not None:
                bar.console.print(f"[yellow]skipped[/] {error}", highlight=False)

        summary = run(job, on_row=on_row, on_plan=on_plan)
        bar.update(task, completed=summary.todo)
    return summary


def print_summary(summary: JobSummary, console: Console) -> None:
    table = Table(title=f"tjepa cache: {summary.store}", show_header=False)
    table.add_row("rows in store", str(summary.total_rows))
    table.add_row("this run: encoded", str(len(summary.done)))
    table.add_row("this run: failed", str(len(summary.failed)))
    table.add_row("already done (skipped)", str(summary.skipped_done))
    table.add_row("store: failed / pending", f"{summary.failed_rows} / {summary.pending_rows}")
    rate = len(summary.done) / summary.seconds if summary.seconds > 0 else 0.0
    table.add_row("wall time", f"{summary.seconds:.1f} s ({rate:.2f} videos/s)")
    console.print(table)
    if summary.failed_rows:
        console.print(f"failures are recorded in {summary.store}/failures/ (`tjepa inspect` lists them); "
                      "rerun with --retry-failed")


def run_cache_command(
    *, videos, out, preset, models_dir, layout, device, batch_size, limit, retry_failed, keep_tokens, layers,
    max_new_tokens, n_past, n_future, rows_per_shard, workers, scheduler, generator, gpu_memory_utilization=0.45,
    json_out: bool = False, window_frames: int = 0,
    decode_workers="0", decoder: str = "pyav",
) -> int:
    from tjepa.cache_schema.storage import locate
    from tjepa.pipeline.encoders.presets import resolve_encoders
    from tjepa.pipeline.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: flat memory over long jobs (pipeline/memory.py)

    if decoder == "nvdec":  # before any model loads: say what is missing at once
        from tjepa.pipeline.video import require_nvdec

        require_nvdec()
    out = locate(out)
    out.check_bucket()  # bad credentials or a missing bucket: say so before loading any model
    n_workers = parse_workers(workers)
    encoders = resolve_encoders(
        preset,
        models_dir=models_dir,
        layers=parse_layers(layers),
        keep_tokens=keep_tokens,
        max_new_tokens=max_new_tokens,
    )
    vllm = VllmConfig(gpu_memory_utilization=gpu_memory_utilization)
    if generator == "vllm":
        from tjepa.pipeline.encoders.vllm_generator import check_vllm_configuration, require_vllm

        check_vllm_configuration(encoders, vllm, n_past)  # fails the configuration, not every row
        if scheduler is None:  # remote workers bring their own GPUs
            require_vllm()
    job = CacheJob(
        videos=Path(videos),
        out=out,
        encoders=encoders,
        sampling=SamplingConfig(n_past=n_past, n_future=n_future, window_frames=window_frames, decoder=decoder),
        layout=layout,
        batch_size=batch_size,
        device=device,
        generator=generator,
        vllm=vllm,
        rows_per_shard=rows_per_shard,
        limit=limit,
        retry_failed=retry_failed,
        workers=n_workers,
        decode_workers=parse_decode_workers(decode_workers),
        scheduler=scheduler,
    )
    console = Console(stderr=True)
    if not json_out:
        summary = run_with_progress(job, console)
        print_summary(summary, Console(file=sys.stdout))
        return summary.exit_code
    import contextlib
    import json

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON object, nothing else
        summary = run_with_progress(job, console)
    sys.stdout.write(json.dumps(summary.to_dict(), ensure_ascii=False) + "\n")
    return summary.exit_code
