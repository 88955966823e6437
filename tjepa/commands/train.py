"""`tjepa train`: train a stage-two model on a feature store (resumes RUN automatically)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Variant(str, Enum):
    thinkjepa = "thinkjepa"
    jepa = "jepa"
    vlm = "vlm"


class Preset(str, Enum):
    paper = "paper"
    tiny = "tiny"
    release = "release"
    tiny_release = "tiny-release"


class Stream(str, Enum):
    both = "both"
    prompt = "prompt"
    think = "think"


class LevelMode(str, Enum):
    all = "all"
    last = "last"
    mid = "mid"


class Conditioning(str, Enum):
    film = "film"
    adaln = "adaln"
    crossattn = "crossattn"


def _levels(text: str | None) -> tuple[int, ...] | None:
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated layer numbers like 0,4,8, got {text!r}") from err


def train(
    cache: Annotated[Path, typer.Option("--cache", help="Feature store written by `tjepa cache`.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (config, splits, metrics, checkpoints).")],
    variant: Annotated[Variant, typer.Option(help="thinkjepa, or a baseline: jepa (no VLM), vlm (no V-JEPA).")] = Variant.thinkjepa,
    preset: Annotated[Preset, typer.Option(help="paper (published sizes), tiny, or the authors' release components at "
                                            "either size: release, tiny-release.")] = Preset.paper,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (published: 200).")] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size per process.")] = 16,
    seed: Annotated[int, typer.Option(help="Training seed (init, shuffling, dropout).")] = 42,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the group-disjoint split.")] = 42,
    lr_head: Annotated[float, typer.Option("--lr-head", min=0.0, help="Head learning rate (x0.1 at E/3 and 2E/3).")] = 1e-3,
    lr_predictor: Annotated[float, typer.Option("--lr-predictor", min=0.0, help="Predictor + guidance learning rate (flat).")] = 1e-4,
    levels: Annotated[str | None, typer.Option(help="Captured decoder layers to use, e.g. 0,4,8 (default all).")] = None,
    stream: Annotated[Stream, typer.Option(help="VLM token streams used as guidance.")] = Stream.both,
    level_mode: Annotated[LevelMode, typer.Option("--level-mode", help="Pyramid (all) or one level for every layer.")] = LevelMode.all,
    conditioning: Annotated[Conditioning, typer.Option(help="film, adaln, or crossattn (needs cached tokens).")] = Conditioning.film,
    limit: Annotated[int | None, typer.Option(min=1, help="Use at most this many train and val videos each.")] = None,
    preload: Annotated[bool, typer.Option("--preload/--no-preload", help="Read the needed arrays into memory first.")] = False,
    num_workers: Annotated[int, typer.Option("--num-workers", min=0, help="DataLoader worker processes.")] = 0,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="fp16 autocast + grad scaler (CUDA only).")] = True,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue RUN's checkpoint, or start over.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train ThinkJEPA (or a baseline) on cached features; DDP when launched with torchrun."""
    from rich.console import Console

    from tjepa.train.loop import Trainer
    from tjepa.train.run_config import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, split_seed=split_seed, lr_head=lr_head,
                      lr_predictor=lr_predictor,
                      levels=_levels(levels), variant=variant.value, preset=preset.value, stream=stream.value,
                      level_mode=level_mode.value, conditioning=conditioning.value, limit=limit, preload=preload,
                      num_workers=num_workers, amp=amp, device=device)
    trainer = Trainer(cfg, cache, out, resume=resume, progress=progress)
    console = Console(stderr=True)
    if trainer.d.main:
        what = f"resuming after epoch {trainer.epoch}" if trainer.resuming else "starting"
        console.print(f"{what}: {cfg.variant} ({cfg.preset}) on {len(trainer.train_ds)} train / "
                      f"{len(trainer.splits.val)} val videos, device {trainer.d.device}"
                      f"{' x' + str(trainer.d.world) if trainer.d.world > 1 else ''}, "
                      f"amp {'on' if trainer.amp else 'off'}", highlight=False)
    trainer.fit()
    if trainer.d.main:
        console.print(f"done: best val ADE {trainer.best:.4f} m -> {trainer.paths.best}", highlight=False)
