"""The long-horizon rollout protocol (docs/method.md section 8), scored from a checkpoint.

The window model (`obs -> fut` tubelets, 2 -> 2 = 4 -> 4 frames by default) is trained by `tjepa train
--rollout` into `RUN/rollout/` on the leak-free windows of the run's train split and selected on its
val split (train/windows.py, train/rollout.py); this module only reads its best checkpoint and runs
the recursive protocol (`tjepa.train.rollout.rollout`) on the requested rows.

Camera approximation (stated in every report): the head predicts joints in the camera frame of its
context's last frame, but future camera poses are unknown at test time, so by default (`camera=
"last"`) every step is mapped to the world with the TRUE LAST OBSERVED camera pose. For a moving
(head-mounted) camera this adds error that grows with the horizon. `camera="oracle"` instead uses the
true pose of each step's last context frame: a diagnostic that measures the approximation (it reads
future poses, so it is not a forecast).

Scores: ADE / FDE / Acc at horizons 4, 8, 16, 32 frames (`TrajectoryMeter`) and, per rollout step,
latent L2 error, token std of prediction and truth and the non-finite fraction, with the stability
verdict (collapse: predicted token std < 0.1 x true; explosion: latent error > 3 x the first step's;
`StabilityMeter`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from tjepa.errors import ConfigMismatchError, TjepaError
from tjepa.eval.run_loading import LoadedRun
from tjepa.metrics import DEFAULT_HORIZONS, DEFAULT_THRESHOLD
from tjepa.train import rollout as _rollout
from tjepa.train.checkpoint import load_run_model
from tjepa.train.conditioning import needs_tokens
from tjepa.train.model import ThinkJEPA
from tjepa.train.splits import read_splits
from tjepa.train.windows import SequenceDataset

CAMERAS = _rollout.CAMERAS
ROLLOUT_DIR = _rollout.ROLLOUT_DIR
rollout = _rollout.rollout
CAMERA_NOTE = {
    "last": "future camera poses are unknown at test time: every rollout step is mapped to the world "
            "with the true LAST OBSERVED camera pose (error from camera motion grows with the horizon)",
    "oracle": "DIAGNOSTIC, not a forecast: each step is mapped to the world with the TRUE camera pose of "
              "its last context frame (read from the future), to measure the camera approximation",
}


@dataclass(frozen=True)
class RolloutConfig:
    steps: int | None = None  # None: as many as the cached future holds (8 on the paper layout)
    camera: str = "last"
    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    threshold: float = DEFAULT_THRESHOLD
    collapse_ratio: float = 0.1
    explosion_factor: float = 3.0

    def __post_init__(self) -> None:
        if self.camera not in CAMERAS:
            raise TjepaError(f"rollout camera {self.camera!r}: choose one of {CAMERAS}")
        if self.steps is not None and self.steps < 1:
            raise TjepaError(f"rollout steps must be >= 1, got {self.steps}")

    @property
    def scoring(self) -> _rollout.Scoring:
        return _rollout.Scoring(self.threshold, self.horizons, self.collapse_ratio, self.explosion_factor)


def resolve_steps(layout: dict[str, Any], cfg: RolloutConfig, obs: int = 2, fut: int = 2) -> int:
    return _rollout.resolve_steps(layout, obs, fut, cfg.steps)


def score_rollout(model: torch.nn.Module, batches: Iterable[dict[str, Tensor]], cfg: RolloutConfig,
                  steps: int, device: torch.device, camera: str | None = None,
                  keep: int = 0) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """`tjepa.train.rollout.score_rollout` with this config's scoring and camera."""
    return _rollout.score_rollout(model, batches, cfg.scoring, steps, device, camera or cfg.camera, keep)


def train_command(run: LoadedRun) -> str:
    """The `tjepa train` command that makes RUN's rollout model."""
    return f"tjepa train --cache {run.store} --out {run.run_dir} --rollout"


def load_rollout_model(run: LoadedRun) -> tuple[ThinkJEPA, dict[str, Any]]:
    """The best checkpoint of RUN/rollout/ and what the report says about it; a clear error when
    there is none, or when it was trained on another store or other splits than the run."""
    rdir = run.run_dir / ROLLOUT_DIR
    best = rdir / "ckpt_best.pt"
    if not best.is_file():
        raise TjepaError(f"{run.run_dir}: the run has no rollout checkpoint ({best}); make one with "
                         f"`{train_command(run)}` (add the run's training options, e.g. --preset)")
    model, ckpt = load_run_model(rdir, "best", map_location=run.device)
    doc = ckpt["config"]
    if "window" not in doc:
        raise TjepaError(f"{best} is not a rollout checkpoint (its config.json has no `window`)")
    if doc["store"]["fingerprint"] != run.index.fingerprint:
        raise ConfigMismatchError(f"{best} was trained on another store (fingerprint "
                                  f"{doc['store']['fingerprint'][:12]}, this store {run.index.fingerprint[:12]}); "
                                  f"train it again: `{train_command(run)} --no-resume`")
    splits = read_splits(rdir, run.index.videos, run.index.done)
    if (splits.train, splits.val, splits.test) != (run.splits.train, run.splits.val, run.splits.test):
        raise ConfigMismatchError(f"{rdir} was trained on other splits than {run.run_dir}: its scores could "
                                  f"include videos it trained on; train it again: `{train_command(run)} "
                                  f"--no-resume`")
    obs, fut = doc["window"]["obs"], doc["window"]["fut"]
    info = {"dir": str(rdir), "checkpoint": str(best), "window": f"{obs}->{fut} tubelets "
            f"({model.cfg.n_past}->{model.cfg.n_future} frames)", "epochs": int(doc["train"]["epochs"]),
            "best_epoch": int(ckpt["epoch"]), "best_val_ade": float(ckpt["best_val_ade"]),
            "selection": doc.get("selection"), "training": "leak-free windows (train/windows.py)"}
    return model, info


def evaluate_rollout(run: LoadedRun, rows: tuple[int, ...], cfg: RolloutConfig, *, batch_size: int = 16,
                     progress: bool = True, keep: int = 0) -> dict[str, Any]:
    """Load the window model, roll it out on `rows`; returns {metrics (trajectory, with horizons),
    stability, info (protocol, model, camera note), kept (predictions of the first `keep` videos)}."""
    model, info = load_rollout_model(run)
    obs, fut = model.cfg.n_past // model.cfg.tubelet, model.cfg.n_future // model.cfg.tubelet
    steps = _rollout.resolve_steps(run.index.layout.to_dict(), obs, fut, cfg.steps)
    ds = SequenceDataset(run.store, rows, run.levels, needs_tokens(model.cfg.conditioning))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    traj, stab, kept = score_rollout(model, loader, cfg, steps, run.device, keep=keep)
    info.update(steps=steps, camera=cfg.camera, camera_note=CAMERA_NOTE[cfg.camera], frames=steps * model.cfg.n_future,
                protocol=f"{steps} recursive steps of {fut} tubelets from the last {obs} observed tubelets; "
                         f"predictions fed back as context")
    return {"metrics": traj, "stability": stab, "info": info, "kept": kept}
