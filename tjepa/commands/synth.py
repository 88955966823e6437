"""`tjepa synth`: write a synthetic EgoDex-format dataset (videos + HDF5 labels + preview.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def task_names(n: int) -> tuple[str, ...]:
    """The three named tasks first, then numbered variants (actions cycle through the three)."""
    base = ("pick_place", "push_forward", "tap_twice")
    return tuple(base[i % 3] + ("" if i < 3 else f"_{i // 3 + 1}") for i in range(n))


def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write <task>/<n>.mp4 + .hdf5 into.")],
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same dataset.")] = 0,
    width: Annotated[int, typer.Option(min=32, help="Frame width in pixels (even).")] = 128,
    height: Annotated[int, typer.Option(min=32, help="Frame height in pixels (even).")] = 128,
    min_frames: Annotated[int, typer.Option(min=8, help="Shortest episode, in frames.")] = 90,
    max_frames: Annotated[int, typer.Option(min=8, help="Longest episode, in frames.")] = 160,
    fps: Annotated[int, typer.Option(min=1, help="Frame rate of the videos.")] = 30,
    tasks: Annotated[
        int, typer.Option(min=1, help="Number of task folders (the groups of the train/val/test split).")
    ] = 3,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Write DIR/preview.png.")] = True,
) -> None:
    """Write a synthetic EgoDex-layout dataset with a known 3-D hand scene and an early colour cue."""
    from rich.console import Console
    from rich.table import Table

    from tjepa.pipeline.synth import SynthConfig, write_dataset
    from tjepa.pipeline.synth.writer import read_manifest
    from tjepa.progress import progress_bar

    try:
        cfg = SynthConfig(
            episodes=episodes,
            seed=seed,
            width=width,
            height=height,
            fps=fps,
            min_frames=min_frames,
            max_frames=max_frames,
            preview=preview,
            tasks=task_names(tasks),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err

    progress = progress_bar("[bold]synth", "episodes", "{task.description}", remaining=False)
    with progress:
        bar = progress.add_task("", total=episodes)

        def tick(done: int, total: int, episode_id: str) -> None:
            progress.update(bar, completed=done, description=episode_id)

        write_dataset(out, cfg, progress=tick)

    manifest = read_manifest(out)
    table = Table(title=f"synthetic EgoDex dataset: {out}")
    for column in ("episode", "task", "frames", "cue = pad", "cue visible"):
        table.add_column(column)
    for ep in manifest["episodes"]:
        table.add_row(ep["id"], ep["task"], str(ep["frames"]), ep["cue"], f"frames 0-{ep['cue_frames'] - 1}")
    console = Console()
    console.print(table)
    n_frames = sum(ep["frames"] for ep in manifest["episodes"])
    tasks = sorted({ep["task"] for ep in manifest["episodes"]})
    console.print(
        f"{len(manifest['episodes'])} episodes, {len(tasks)} tasks, {n_frames} frames at {width}x{height}, "
        f"{fps} fps, seed {seed}" + (f"; preview: {out / 'preview.png'}" if preview else "")
    )
