"""`tjepa eval`: score a trained run on a split of its feature store, against baselines."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tjepa.commands.storage_options import StorageOptions, use_storage_options


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"


class Checkpoint(str, Enum):
    best = "best"
    latest = "latest"


class Camera(str, Enum):
    last = "last"
    oracle = "oracle"


def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run directory written by `tjepa train`.")],
    cache: Annotated[str, typer.Option("--cache", help="The feature store the run was trained on (path or s3:// URL).")],
    split: Annotated[Split, typer.Option(help="Split to score; test = the videos training never read.")] = Split.test,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default RUN/eval).")] = None,
    rollout: Annotated[bool, typer.Option(
        "--rollout/--no-rollout", help="Also score the long-horizon rollout protocol with the window model "
                                       "in RUN/rollout/ (made by `tjepa train --out RUN --rollout`).")] = False,
    rollout_steps: Annotated[int | None, typer.Option(
        "--rollout-steps", min=1, help="Recursive steps (default: all the cached future holds, 8 on EgoDex).")] = None,
    rollout_camera: Annotated[Camera, typer.Option(
        "--rollout-camera", help="last: map every step with the last observed camera (honest); oracle: "
                                 "true future cameras (a diagnostic, not a forecast).")] = Camera.last,
    checkpoint: Annotated[Checkpoint, typer.Option(help="best (selected on val) or latest.")] = Checkpoint.best,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Videos per forward pass.")] = 16,
    figures: Annotated[int, typer.Option(min=0, help="Trajectory pictures to draw (first videos of the split).")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    storage_options: StorageOptions = None,
) -> None:
    """Evaluate a run: ADE/FDE/Acc@5cm, latent metrics, baselines, figures, metrics.json + report.md."""
    use_storage_options(storage_options)
    from rich.console import Console
    from rich.table import Table

    from tjepa.eval.evaluate import EvalConfig, evaluate_run
    from tjepa.eval.report import fmt
    from tjepa.eval.rollout import RolloutConfig

    cfg = EvalConfig(split=split.value, checkpoint=checkpoint.value, batch_size=batch_size, device=device,
                     figures=figures, progress=progress)
    rcfg = RolloutConfig(steps=rollout_steps, camera=rollout_camera.value) if rollout else None
    m = evaluate_run(run, cache, out, cfg, rcfg)
    table = Table(title=f"{m['meta']['run']} on {m['split']} ({m['n']} videos); world metres")
    for col in ("", "ADE", "FDE", "Acc@5cm"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row(m["meta"]["variant"], fmt(m["ade"]), fmt(m["fde"]), fmt(m["acc"], 3))
    for name, b in m.get("baselines", {}).items():
        table.add_row(f"{name} (baseline)", fmt(b["ade"]), fmt(b["fde"]), fmt(b["acc"], 3), style="dim")
    console = Console()
    console.print(table)
    eg = m.get("egodex")
    if eg:
        hs = list(eg["counts"])
        et = Table(title="EgoDex protocol: 12 keypoints, camera frame, metres (average / final)")
        for col in ("", *[f"{h}" for h in hs]):
            et.add_column(col, justify="left" if not col else "right")
        rows = [(m["meta"]["variant"], eg, None)] + [(f"{b} (baseline)", v, "dim") for b, v in eg["baselines"].items()]
        for name, block, style in rows:
            et.add_row(name, *[f"{fmt(block[h]['ade'])} / {fmt(block[h]['fde'])}" for h in hs], style=style)
        et.add_row("samples", *[str(eg["counts"][h]) for h in hs], style="italic")
        console.print(et)
    if "rollout" in m:
        rt = Table(title=f"rollout ADE by horizon (camera: {rcfg.camera})")
        hs = sorted({int(h) for v in m["rollout"].values() for h in v})
        rt.add_column("")
        for h in hs:
            rt.add_column(f"H={h}", justify="right")
        for name, by_h in m["rollout"].items():
            rt.add_row(name, *[fmt(by_h.get(h)) for h in hs])
        console.print(rt)
        st = m["stability"]
        console.print(f"rollout stability: {'stable' if st['stable'] else 'UNSTABLE'} (non-finite "
                      f"{st['any_nonfinite']}, collapse {st['any_collapse']}, explosion {st['any_explosion']})",
                      highlight=False)
    where = out if out is not None else run / "eval"
    Console(stderr=True).print(f"wrote {where / 'metrics.json'}, {where / 'report.md'}, {where / 'figures'}/",
                               highlight=False)
