"""The recursive rollout of a window model (docs/method.md section 8), shared by checkpoint selection
in `tjepa train --rollout` (val split) and by `tjepa eval --rollout` (eval/rollout.py).

Per video: the context is the last `obs` observed tubelets; the model predicts `fut` tubelets and
their frames of joints; predictions are appended and the last `obs` tubelets (frames) become the next
context (with obs = fut, after the first step the model sees only its own predictions; a model with a
residual anchor is anchored at its own last predicted joints); repeated `steps` times. The true
future latents are never read by the model; they only score the latents (stability).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tjepa.errors import TjepaError
from tjepa.metrics import DEFAULT_HORIZONS, DEFAULT_THRESHOLD, StabilityMeter, TrajectoryMeter
from tjepa.train.config import ModelConfig
from tjepa.train.data import to_device
from tjepa.train.windows import ROW_KEYS

CAMERAS = ("last", "oracle")
ROLLOUT_DIR = "rollout"  # RUN/rollout/: the window model of RUN (`tjepa train --out RUN --rollout`)


def resolve_steps(layout: dict[str, Any], obs: int, fut: int, steps: int | None = None) -> int:
    """Rollout steps: `steps`, or all the cached future holds; TjepaError if it does not fit."""
    tubelet = int(layout["tubelet"])
    past_tub, fut_tub = int(layout["n_past"]) // tubelet, int(layout["n_future"]) // tubelet
    if obs > past_tub:
        raise TjepaError(f"the rollout context needs {obs} observed tubelets; the store has {past_tub}")
    most = fut_tub // fut
    if most < 1 or (steps or 0) > most:
        raise TjepaError(f"{steps or 1} rollout step(s) of {fut} tubelets need more than the "
                         f"{fut_tub} cached future tubelets (at most {most} steps)")
    if steps is None and fut_tub % fut:
        warnings.warn(f"the last {fut_tub % fut} future tubelet(s) do not fill a rollout step and are "
                      f"not scored", RuntimeWarning, stacklevel=2)
    return steps or most


@dataclass
class RolloutOutput:
    latents: Tensor  # [B, S, fut, P, D] predicted tubelets, per step
    traj_world: Tensor  # [B, S * fut * t, J, 3]
    contexts: list[Tensor]  # [B, obs, P, D] what each step observed (inspection, tests)


@torch.no_grad()
def rollout(model: torch.nn.Module, batch: dict[str, Tensor], steps: int, camera: str = "last") -> RolloutOutput:
    """Recursive forecast: `steps` windows, each fed the previous predictions as context.

    `model` is a window model (`cfg.n_past` / `cfg.n_future` frames = obs / fut tubelets); `batch` a
    stage-two batch of whole videos (camera "oracle" also needs `cams_future`, see SequenceDataset).
    Both the latents and the joints are fed back: a model with `anchor="last_observed"` anchors step
    k > 0 at its own last predicted joints (the true ones are the future), step 0 at the observed."""
    cfg: ModelConfig = model.cfg
    obs, fut = cfg.n_past // cfg.tubelet, cfg.n_future // cfg.tubelet
    past = batch["vjepa_past"]
    if past.shape[1] < obs:
        raise TjepaError(f"the rollout context needs {obs} observed tubelets, the batch has {past.shape[1]}")
    if camera not in CAMERAS:
        raise TjepaError(f"rollout camera {camera!r}: choose one of {CAMERAS}")
    video = {k: batch[k] for k in ROW_KEYS if k in batch and k != "row"}
    context, frames = past[:, -obs:], fut * cfg.tubelet
    joints, valid = batch["joints_past"][:, -cfg.n_past:], batch["valid_past"][:, -cfg.n_past:]
    latents, trajs, contexts = [], [], []
    for k in range(steps):
        cam = batch["cam_last"] if camera == "last" or k == 0 else batch["cams_future"][:, k * frames - 1]
        contexts.append(context)
        out = model({**video, "vjepa_past": context, "joints_past": joints, "valid_past": valid,
                     "cam_last": cam}, future_tubelets=fut)
        latents.append(out.pred_future)
        trajs.append(out.traj_world)
        context = torch.cat((context, out.pred_future.to(context.dtype)), dim=1)[:, -obs:]
        joints = torch.cat((joints, out.traj_world.to(joints.dtype)), dim=1)[:, -cfg.n_past:]
        valid = torch.cat((valid, torch.ones_like(valid[:, :1]).expand(-1, frames, -1)), dim=1)[:, -cfg.n_past:]
    return RolloutOutput(torch.stack(latents, dim=1), torch.cat(trajs, dim=1), contexts)


@dataclass(frozen=True)
class Scoring:
    threshold: float = DEFAULT_THRESHOLD
    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    collapse_ratio: float = 0.1
    explosion_factor: float = 3.0


class RolloutScorer:
    """A TrajectoryMeter over the rollout's frames and a StabilityMeter over its steps."""

    def __init__(self, scoring: Scoring, frames: int):
        self.traj = TrajectoryMeter(scoring.threshold, [h for h in scoring.horizons if h <= frames])
        self.stab = StabilityMeter(scoring.collapse_ratio, scoring.explosion_factor)

    def update(self, batch: dict[str, Tensor], out: RolloutOutput) -> None:
        n = out.traj_world.shape[1]
        self.traj.update(out.traj_world, batch["joints_future"][:, :n], batch["valid_future"][:, :n])
        s, f = out.latents.shape[1:3]
        self.stab.update(out.latents, batch["vjepa_future"][:, :s * f].unflatten(1, (s, f)))

    def compute(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.traj.compute(), self.stab.compute()


def score_rollout(model: torch.nn.Module, batches: Iterable[dict[str, Tensor]], scoring: Scoring, steps: int,
                  device: torch.device, camera: str = "last",
                  keep: int = 0) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Roll out every batch; returns (trajectory metrics, stability, the first `keep` videos'
    predictions as {row, traj_world})."""
    cfg: ModelConfig = model.cfg
    frames = steps * cfg.n_future
    scorer, kept = RolloutScorer(scoring, frames), []
    model.eval()
    for batch in batches:
        batch = to_device(batch, device)
        out = rollout(model, batch, steps, camera)
        scorer.update(batch, out)
        for i in range(min(keep - len(kept), len(out.traj_world))):
            kept.append({"row": int(batch["row"][i]), "traj_world": out.traj_world[i].float().cpu().numpy()})
    return (*scorer.compute(), kept)


def rollout_validation(model: torch.nn.Module, batches: Iterable[dict[str, Tensor]], steps: int,
                       device: torch.device) -> dict[str, float]:
    """Checkpoint selection of a window model: the protocol itself on the val split (camera "last",
    so the selected model never depends on future poses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN metrics are reported, not warned per epoch
        traj, stab, _ = score_rollout(model, batches, Scoring(), steps, device)
    err = stab["latent_error"]
    return {"val_ade": traj["ade"], "val_fde": traj["fde"], "val_acc": traj["acc"],
            "val_latent": float(sum(err) / len(err)), "val_stable": bool(stab["stable"])}
