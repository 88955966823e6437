"""`tjepa cache`: stage one, videos -> one chunked Zarr feature store (resumable, crash-safe).

Settings layer like `tjepa train`'s: CacheConfig's defaults (pipeline/cache_config.py), then
`--config FILE` (its `cache:` section; `--section cache` of a shared params.yaml), then the flags
given, then `--set cache.KEY=VALUE` (any CacheConfig field, typed and validated).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tjepa.commands.storage_options import StorageOptions, use_storage_options
from tjepa.commands.train import flag_settings


class Layout(str, Enum):
    auto = "auto"
    egodex = "egodex"
    videos = "videos"


class Decoder(str, Enum):
    pyav = "pyav"
    nvdec = "nvdec"


class Generator(str, Enum):
    transformers = "transformers"
    vllm = "vllm"


def _layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def cache(
    videos: Annotated[str | None, typer.Option("--videos", help="Dataset root: an EgoDex tree or any tree of videos.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="The Zarr store to create or resume: a path or s3://bucket/name.zarr (cache.store).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML with a `cache:` section (CacheConfig fields).")] = None,
    only: Annotated[list[str] | None, typer.Option("--section", help="Read only this section of --config (e.g. cache of params.yaml).")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="cache.KEY=VALUE for any CacheConfig field, e.g. cache.keep_tokens=true (repeatable).")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Model preset: tiny (default), pretrained or full-random.")] = None,
    models_dir: Annotated[
        str | None, typer.Option("--models-dir", help="Where the preset's weights live (tiny: built here if missing).")
    ] = None,
    layout: Annotated[Layout | None, typer.Option("--layout", help="How to read --videos (default auto).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto (default), cpu, cuda, cuda:1 ...")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Videos per encoder batch (default 4).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Process at most this many rows.")] = None,
    retry_failed: Annotated[bool | None, typer.Option("--retry-failed", help="Also redo rows that failed before.")] = None,
    keep_tokens: Annotated[
        bool | None, typer.Option("--keep-tokens", help="Also store per-token VLM states (for cross-attention ablations).")
    ] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Comma-separated decoder layers to capture (preset default).")
    ] = None,
    think_tokens: Annotated[int | None, typer.Option("--think-tokens", min=1, help="Thinking tokens to generate.")] = None,
    past: Annotated[int | None, typer.Option("--past", min=2, help="Observed frames sampled per video (default 32).")] = None,
    future: Annotated[int | None, typer.Option("--future", min=2, help="Future frames sampled per video (default 32).")] = None,
    rows_per_shard: Annotated[int | None, typer.Option("--rows-per-shard", min=1, help="Videos per shard file (default 8).")] = None,
    window_frames: Annotated[int | None, typer.Option(
        "--window-frames", min=0, help="Also encode every run of N sampled frames in its own V-JEPA forward "
                                       "(vjepa/windows: leak-free rollout training; N divides --past and "
                                       "--future, e.g. 4). 0 (default): off.")] = None,
    dense_window: Annotated[int | None, typer.Option(
        "--dense-window", min=0, help="W > 0: the V-JEPA observed clip is the W consecutive frames ending at the split "
                                      "(dual-temporal pathway); the VLM keeps --past uniform. 0 (default): off.")] = None,
    workers: Annotated[
        str | None,
        typer.Option("--workers", help="dask LocalCluster worker processes: N, or auto (one per GPU); 0 (default) runs in-process."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Address of an existing dask scheduler (multi-node).")
    ] = None,
    decode_workers: Annotated[
        str | None,
        typer.Option("--decode-workers", help="Decode processes per model worker: N, or auto (its cores, per GPU); "
                     "0 (default) decodes on one prefetch thread."),
    ] = None,
    decoder: Annotated[
        Decoder | None, typer.Option("--decoder", help="Video decoder: pyav (CPU, default), or nvdec (GPU hardware decode "
                                     "via torchcodec; other pixels, so another store).")
    ] = None,
    generator: Annotated[
        Generator | None, typer.Option("--generator", help="Who generates thinking tokens: transformers (default) or vllm (GPU extra).")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option("--gpu-memory-utilization", min=0.05, max=1.0,
                     help="vllm: fraction of GPU memory the engine may take (the capture model shares the GPU; default 0.45)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the job summary as one JSON object on stdout (progress: stderr).")
    ] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Decode each video once and store V-JEPA 2 latents, Qwen3-VL layer states and targets."""
    from tjepa.config_io import load_file, merge, overrides, select
    from tjepa.pipeline.cache_config import cache_config
    from tjepa.pipeline.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: flat memory over long jobs (pipeline/memory.py)
    use_storage_options(storage_options)
    if only and config is None:
        raise typer.BadParameter("--section selects sections of --config; give --config too")
    flags = flag_settings(
        cache__videos=videos, cache__store=out, cache__models=models, cache__models_dir=models_dir,
        cache__layout=layout, cache__device=device, cache__batch_size=batch_size, cache__limit=limit,
        cache__retry_failed=retry_failed, cache__keep_tokens=keep_tokens, cache__layers=_layers(layers),
        cache__think_tokens=think_tokens, cache__past=past, cache__future=future,
        cache__rows_per_shard=rows_per_shard, cache__window_frames=window_frames, cache__dense_window=dense_window, cache__workers=workers,
        cache__scheduler=scheduler, cache__decode_workers=decode_workers, cache__decoder=decoder,
        cache__generator=generator, cache__gpu_memory_utilization=gpu_memory_utilization)
    from_file = load_file(config) if config else {}
    doc = merge(select(from_file, only, str(config)) if only else from_file, flags, overrides(settings or []))
    job = cache_config(doc).job()
    raise typer.Exit(_run(job, json_out))


def _run(job, json_out: bool) -> int:
    """Run the job with a progress bar on stderr; the summary as a table, or one JSON object, on stdout."""
    from rich.console import Console

    console = Console(stderr=True)
    if not json_out:
        summary = run_with_progress(job, console)
        _print_summary(summary, Console(file=sys.stdout))
        return summary.exit_code
    import contextlib
    import json

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON object, nothing else
        summary = run_with_progress(job, console)
    sys.stdout.write(json.dumps(summary.to_dict(), ensure_ascii=False) + "\n")
    return summary.exit_code


def run_with_progress(job, console):
    """Run a CacheJob with the progress bar (rows done, videos/s, failures) on `console`."""
    from tjepa.pipeline.job import run
    from tjepa.progress import progress_bar

    with progress_bar("[bold]caching", "videos", "[red]{task.fields[failed]} failed", console=console) as bar:
        task = bar.add_task("cache", total=None, failed=0)
        failed = 0

        def on_plan(n_todo: int) -> None:
            bar.reset(task, total=n_todo, failed=0)  # the rate counts from here, not from model loading

        def on_row(video: str, error: str | None) -> None:
            nonlocal failed
            failed += error is not None
            bar.update(task, advance=1, failed=failed)
            if error is not None:
                bar.console.print(f"[yellow]skipped[/] {error}", highlight=False)

        summary = run(job, on_row=on_row, on_plan=on_plan)
        bar.update(task, completed=summary.todo)
    return summary


def _print_summary(summary, console) -> None:
    from rich.table import Table

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
