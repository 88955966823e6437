"""`tjepa train`: train a stage-two model on a feature store (resumes RUN automatically).

Settings come, in rising precedence, from the dataclass defaults (`TrainConfig`, and `ModelConfig`
of the chosen preset), `--config FILE` (sections `train:` and `model:`; a run's `config.json` works
too; `--section` picks sections of a shared file such as params.yaml), the plain flags below, and `--set section.key=value` (repeatable; any field of either config).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tjepa.commands.storage_options import StorageOptions, use_storage_options


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


def _levels(text: str | None) -> list[int] | None:
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated layer numbers like 0,4,8, got {text!r}") from err


def flag_settings(**given: object) -> dict[str, dict[str, object]]:
    """The flags the user gave (None = not given) as a config document: `section__key` -> section.key."""
    doc: dict[str, dict[str, object]] = {}
    for name, value in given.items():
        if value is not None:
            section, key = name.split("__")
            doc.setdefault(section, {})[key] = value.value if isinstance(value, Enum) else value
    return doc


def train(
    cache: Annotated[str, typer.Option("--cache", help="Feature store written by `tjepa cache` (path or s3:// URL).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (config, splits, metrics, checkpoints).")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML with `train:` / `model:` sections (or a RUN/config.json).")] = None,
    only: Annotated[list[str] | None, typer.Option("--section", help="Read only this section of --config (repeatable; e.g. train and model of a shared params.yaml).")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="section.key=value for any TrainConfig / ModelConfig field, e.g. model.depth=1 (repeatable).")] = None,
    variant: Annotated[Variant | None, typer.Option(help="thinkjepa (default), or a baseline: jepa (no VLM), vlm (no V-JEPA).")] = None,
    preset: Annotated[Preset | None, typer.Option(help="paper (published sizes, default), tiny, or the authors' release components at "
                                                   "either size: release, tiny-release.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (published: 200).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size per process (default 16).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed: init, shuffling, dropout (default 42).")] = None,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Seed of the group-disjoint split (default 42).")] = None,
    lr_head: Annotated[float | None, typer.Option("--lr-head", min=0.0, help="Head learning rate, x0.1 at E/3 and 2E/3 (default 1e-3).")] = None,
    lr_predictor: Annotated[float | None, typer.Option("--lr-predictor", min=0.0, help="Predictor + guidance learning rate, flat (default 1e-4).")] = None,
    levels: Annotated[str | None, typer.Option(help="Captured decoder layers to use, e.g. 0,4,8 (default all).")] = None,
    stream: Annotated[Stream | None, typer.Option(help="VLM token streams used as guidance (default both).")] = None,
    level_mode: Annotated[LevelMode | None, typer.Option("--level-mode", help="Pyramid (all, default) or one level for every layer.")] = None,
    conditioning: Annotated[str | None, typer.Option(help="A registered mode (train/conditioning.py): film (default), adaln, crossattn (needs cached tokens).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use at most this many train and val videos each.")] = None,
    preload: Annotated[bool | None, typer.Option("--preload/--no-preload", help="Read the needed arrays into memory first.")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", min=0, help="DataLoader worker processes (default 0).")] = None,
    row_cache: Annotated[str | None, typer.Option("--row-cache", help="Keep what is read from the store in this local directory "
                                                  "(for stores on object storage; off by default).")] = None,
    row_cache_gib: Annotated[float | None, typer.Option("--row-cache-gib", min=0.001, help="Size bound of --row-cache in GiB (default 50).")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="fp16 autocast + grad scaler, CUDA only (default on).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue RUN's checkpoint, or start over.")] = True,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu, cuda or cuda:N.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    rollout: Annotated[bool, typer.Option(
        "--rollout/--no-rollout", help="Train the run's window model for `tjepa eval --rollout` into OUT/rollout/ "
                                       "(leak-free windows; needs a store made with --window-frames).")] = False,
    rollout_obs: Annotated[int, typer.Option("--rollout-obs", min=1, help="Observed tubelets per window.")] = 2,
    rollout_fut: Annotated[int, typer.Option("--rollout-fut", min=1, help="Predicted tubelets per window.")] = 2,
    storage_options: StorageOptions = None,
) -> None:
    """Train ThinkJEPA (or a baseline) on cached features; DDP when launched with torchrun."""
    use_storage_options(storage_options)
    from rich.console import Console

    from tjepa.config_io import load_file, merge, overrides, select
    from tjepa.train.loop import Trainer
    from tjepa.train.rollout import ROLLOUT_DIR
    from tjepa.train.run_config import run_settings
    from tjepa.train.windows import WindowSpec

    flags = flag_settings(
        train__epochs=epochs, train__batch_size=batch_size, train__seed=seed, train__split_seed=split_seed,
        train__lr_head=lr_head, train__lr_predictor=lr_predictor, train__levels=_levels(levels),
        train__preset=preset, train__limit=limit, train__preload=preload, train__num_workers=num_workers,
        train__row_cache=row_cache, train__row_cache_gib=row_cache_gib,
        train__amp=amp, train__device=device, model__variant=variant, model__stream=stream,
        model__level_mode=level_mode, model__conditioning=conditioning)
    if only and config is None:
        raise typer.BadParameter("--section selects sections of --config; give --config too")
    from_file = load_file(config) if config else {}
    doc = merge(select(from_file, only, str(config)) if only else from_file, flags, overrides(settings or []))
    cfg, model = run_settings(doc)
    window = WindowSpec(rollout_obs, rollout_fut) if rollout else None
    run_dir = out / ROLLOUT_DIR if rollout else out
    trainer = Trainer(cfg, cache, run_dir, resume=resume, progress=progress, model_overrides=model, window=window,
                      splits_from=out if rollout else None)
    console = Console(stderr=True)
    if trainer.d.main:
        what = f"resuming after epoch {trainer.epoch}" if trainer.resuming else "starting"
        kind = f" {rollout_obs}->{rollout_fut} window model" if rollout else ""
        console.print(f"{what}: {trainer.model_cfg.variant} ({cfg.preset}){kind} on {len(trainer.train_ds)} "
                      f"train{' windows' if rollout else ''} / "
                      f"{len(trainer.splits.val)} val videos, device {trainer.d.device}"
                      f"{' x' + str(trainer.d.world) if trainer.d.world > 1 else ''}, "
                      f"amp {'on' if trainer.amp else 'off'}", highlight=False)
    trainer.fit()
    if trainer.d.main:
        console.print(f"done: best val ADE {trainer.best:.4f} m -> {trainer.paths.best}", highlight=False)
