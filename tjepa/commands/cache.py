"""`tjepa cache`: stage one, videos -> one chunked Zarr feature store (resumable, crash-safe)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tjepa.commands.storage_options import StorageOptions, use_storage_options


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


def cache(
    videos: Annotated[Path, typer.Option("--videos", help="Dataset root: an EgoDex tree or any tree of videos.")],
    out: Annotated[str, typer.Option("--out", help="The Zarr store to create or resume: a path or s3://bucket/name.zarr.")],
    models: Annotated[str, typer.Option("--models", help="Model preset: tiny, pretrained or full-random.")] = "tiny",
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Where the preset's weights live (tiny: built here if missing).")
    ] = None,
    layout: Annotated[Layout, typer.Option("--layout", help="How to read --videos.")] = Layout.auto,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Videos per encoder batch.")] = 4,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Process at most this many rows.")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also redo rows that failed before.")] = False,
    keep_tokens: Annotated[
        bool, typer.Option("--keep-tokens", help="Also store per-token VLM states (for cross-attention ablations).")
    ] = False,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Comma-separated decoder layers to capture (preset default).")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--think-tokens", min=1, help="Thinking tokens to generate.")] = None,
    n_past: Annotated[int, typer.Option("--past", min=2, help="Observed frames sampled per video.")] = 32,
    n_future: Annotated[int, typer.Option("--future", min=2, help="Future frames sampled per video.")] = 32,
    rows_per_shard: Annotated[int, typer.Option("--rows-per-shard", min=1, help="Videos per shard file.")] = 8,
    window_frames: Annotated[int, typer.Option(
        "--window-frames", min=0, help="Also encode every run of N sampled frames in its own V-JEPA forward "
                                       "(vjepa/windows: leak-free rollout training; N divides --past and "
                                       "--future, e.g. 4). 0: off.")] = 0,
    workers: Annotated[
        str,
        typer.Option("--workers", help="dask LocalCluster worker processes: N, or auto (one per GPU); 0 runs in-process."),
    ] = "0",
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Address of an existing dask scheduler (multi-node).")
    ] = None,
    decode_workers: Annotated[
        str,
        typer.Option("--decode-workers", help="Decode processes per model worker: N, or auto (its cores, per GPU); "
                     "0 decodes on one prefetch thread."),
    ] = "0",
    decoder: Annotated[
        Decoder, typer.Option("--decoder", help="Video decoder: pyav (CPU), or nvdec (GPU hardware decode via torchcodec; "
                              "other pixels, so another store).")
    ] = Decoder.pyav,
    generator: Annotated[
        Generator, typer.Option("--generator", help="Who generates thinking tokens (vllm: GPU extra).")
    ] = Generator.transformers,
    gpu_memory_utilization: Annotated[
        float,
        typer.Option("--gpu-memory-utilization", min=0.05, max=1.0,
                     help="vllm: fraction of GPU memory the engine may take (the capture model shares the GPU)."),
    ] = 0.45,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the job summary as one JSON object on stdout (progress: stderr).")
    ] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Decode each video once and store V-JEPA 2 latents, Qwen3-VL layer states and targets."""
    from tjepa.pipeline.cache_command import run_cache_command

    use_storage_options(storage_options)
    code = run_cache_command(
        videos=videos,
        out=out,
        preset=models,
        models_dir=models_dir,
        layout=layout.value,
        device=device,
        batch_size=batch_size,
        limit=limit,
        retry_failed=retry_failed,
        keep_tokens=keep_tokens,
        layers=layers,
        max_new_tokens=max_new_tokens,
        n_past=n_past,
        n_future=n_future,
        rows_per_shard=rows_per_shard,
        window_frames=window_frames,
        workers=workers,
        scheduler=scheduler,
        decode_workers=decode_workers,
        decoder=decoder.value,
        generator=generator.value,
        gpu_memory_utilization=gpu_memory_utilization,
        json_out=json_out,
    )
    raise typer.Exit(code)
