"""`tjepa build-models`: write random-weight encoder models to a directory (offline).

`tiny` is what tests, demos and `dvc repro` use; `full-random` has the real sizes (ViT-L V-JEPA 2,
Qwen3-VL-2B) for GPU throughput measurements. Both are saved with `save_pretrained`, so `tjepa cache
--models <preset> --models-dir DIR` loads them exactly as it loads real checkpoints.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class BuildPreset(str, Enum):
    tiny = "tiny"
    full_random = "full-random"


def build_models(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the models to (vjepa2/, qwen3vl/).")],
    preset: Annotated[BuildPreset, typer.Option("--preset", help="tiny, or full-random (real sizes, ~4.5 GB).")] = BuildPreset.tiny,
    seed: Annotated[int, typer.Option("--seed", help="Weights are a pure function of the seed.")] = 0,
) -> None:
    """Build random-weight V-JEPA 2 + Qwen3-VL models (and a tokenizer) in transformers' own classes."""
    import time

    from rich.console import Console

    from tjepa.errors import TjepaError
    from tjepa.pipeline.encoders.builders import build_full_random_models, build_tiny_models, read_marker

    console = Console(stderr=True)
    existing = read_marker(out) if out.exists() else None
    if existing is None and out.exists() and any(out.iterdir()):
        raise TjepaError(f"{out}: exists, is not empty and holds no tjepa models; choose another --out")
    t0 = time.perf_counter()
    with console.status(f"building {preset.value} models (seed {seed}) in {out}"):
        if preset is BuildPreset.tiny:
            build_tiny_models(out, seed=seed)
        else:
            build_full_random_models(out, seed=seed)
    console.print(f"wrote {preset.value} models to {out} in {time.perf_counter() - t0:.1f} s")
