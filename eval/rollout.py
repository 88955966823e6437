"""The long-horizon rollout protocol (docs/method.md section 8).

A short `obs -> fut` model (2 -> 2 tubelets = 4 observed -> 4 future frames by default) is trained on
windows of the cached sequences (`tjepa.train.windows`) of the run's train split and selected on its
val split by this very protocol; it lives in `RUN/rollout/` and is reused when its configuration
still matches. At test time, per video:

1. the context is the last `obs` observed tubelets;
2. the model predicts `fut` tubelets and their 4 frames of joints;
3. the predicted tubelets (and joints) are appended and the last `obs` tubelets (frames) of the
   sequence become the next context (after the first step with obs = fut, the model sees only its
   own predictions; a model with a residual anchor is anchored at its own last predicted joints);
4. repeat `steps` times (8 on the paper layout: 32 future frames).
The true future latents are never read by the model; they only score the latents (stability).

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

import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from tjepa.errors import ConfigMismatchError, TjepaError
from tjepa.eval.run_loading import LoadedRun
from tjepa.metrics import DEFAULT_HORIZONS, DEFAULT_THRESHOLD, StabilityMeter, TrajectoryMeter
from tjepa.train.checkpoint import load_run_model
from tjepa.train.config import ModelConfig
from tjepa.train.data import to_device
from tjepa.train.model import ThinkJEPA
from tjepa.train.windows import ROW_KEYS, SequenceDataset, WindowSpec, WindowTrainer

CAMERAS = ("last", "oracle")
ROLLOUT_DIR = "rollout"
CAMERA_NOTE = {
    "last": "future camera poses are unknown at test time: every rollout step is mapped to the world "
            "with the true LAST OBSERVED camera pose (error from camera motion grows with the horizon)",
    "oracle": "DIAGNOSTIC, not a forecast: each step is mapped to the world with the TRUE camera pose of "
              "its last context frame (read from the future), to measure the camera approximation",
}


@dataclass(frozen=True)
class RolloutConfig:
    obs: int = 2  # observed tubelets per window (2 = 4 frames)
    fut: int = 2  # predicted tubelets per step (2 = 4 frames)
    steps: int | None = None  # None: as many as the cached future holds (8 on the paper layout)
    epochs: int | None = None  # window-model epochs; None: the parent run's
    retrain: bool = False  # start RUN/rollout over instead of reusing / resuming it
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
        if self.epochs is not None and self.epochs < 1:
            raise TjepaError(f"rollout epochs must be >= 1, got {self.epochs}")

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec(self.obs, self.fut)


def resolve_steps(layout: dict[str, Any], cfg: RolloutConfig) -> int:
    """Rollout steps: `cfg.steps`, or all the cached future holds; TjepaError if it does not fit."""
    tubelet = int(layout["tubelet"])
    past_tub, fut_tub = int(layout["n_past"]) // tubelet, int(layout["n_future"]) // tubelet
    if cfg.obs > past_tub:
        raise TjepaError(f"the rollout context needs {cfg.obs} observed tubelets; the store has {past_tub}")
    most = fut_tub // cfg.fut
    if most < 1 or (cfg.steps or 0) > most:
        raise TjepaError(f"{cfg.steps or 1} rollout step(s) of {cfg.fut} tubelets need more than the "
                         f"{fut_tub} cached future tubelets (at most {most} steps)")
    if cfg.steps is None and fut_tub % cfg.fut:
        warnings.warn(f"the last {fut_tub % cfg.fut} future tubelet(s) do not fill a rollout step and are "
                      f"not scored", RuntimeWarning, stacklevel=2)
    return cfg.steps or most


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


class RolloutScorer:
    """A TrajectoryMeter over the rollout's frames and a StabilityMeter over its steps."""

    def __init__(self, cfg: RolloutConfig, frames: int):
        self.traj = TrajectoryMeter(cfg.threshold, [h for h in cfg.horizons if h <= frames])
        self.stab = StabilityMeter(cfg.collapse_ratio, cfg.explosion_factor)

    def update(self, batch: dict[str, Tensor], out: RolloutOutput) -> None:
        n = out.traj_world.shape[1]
        self.traj.update(out.traj_world, batch["joints_future"][:, :n], batch["valid_future"][:, :n])
        s, f = out.latents.shape[1:3]
        self.stab.update(out.latents, batch["vjepa_future"][:, :s * f].unflatten(1, (s, f)))

    def compute(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.traj.compute(), self.stab.compute()


def score_rollout(model: torch.nn.Module, batches: Iterable[dict[str, Tensor]], cfg: RolloutConfig,
                  steps: int, device: torch.device, camera: str | None = None,
                  keep: int = 0) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Roll out every batch; returns (trajectory metrics, stability, the first `keep` videos'
    predictions as {row, traj_world})."""
    frames = steps * cfg.fut * model.cfg.tubelet
    scorer, kept = RolloutScorer(cfg, frames), []
    model.eval()
    for batch in batches:
        batch = to_device(batch, device)
        out = rollout(model, batch, steps, camera or cfg.camera)
        scorer.update(batch, out)
        for i in range(min(keep - len(kept), len(out.traj_world))):
            kept.append({"row": int(batch["row"][i]), "traj_world": out.traj_world[i].float().cpu().numpy()})
    return (*scorer.compute(), kept)


def _val_scores(model: torch.nn.Module, loader: DataLoader, cfg: RolloutConfig, steps: int,
                device: torch.device) -> dict[str, float]:
    """Checkpoint selection for the window model: the protocol itself on the val split (camera
    "last", whatever the reporting camera, so the selected model never depends on future poses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN metrics are reported, not warned per epoch
        traj, stab, _ = score_rollout(model, loader, cfg, steps, device, camera="last")
    err = stab["latent_error"]
    return {"val_ade": traj["ade"], "val_fde": traj["fde"], "val_acc": traj["acc"],
            "val_latent": float(sum(err) / len(err)), "val_stable": bool(stab["stable"])}


def obtain_rollout_model(run: LoadedRun, cfg: RolloutConfig, *, batch_size: int | None = None,
                         progress: bool = True) -> tuple[ThinkJEPA, dict[str, Any]]:
    """Train, resume or reuse the window model in RUN/rollout/ and load its best checkpoint.

    Same model and training settings as the run (sizes, variant, guidance, seeds, lr schedule), resized
    to the window; `cfg.epochs` (default: the run's) epochs on the run's train split, selected on its
    val split by rollout ADE. A RUN/rollout/ trained with other settings is refused unless `retrain`."""
    spec = cfg.spec
    steps = resolve_steps(run.index.layout, cfg)
    rdir = run.run_dir / ROLLOUT_DIR
    tcfg = dataclasses.replace(run.train_cfg, epochs=cfg.epochs or run.train_cfg.epochs,
                               device=str(run.device), batch_size=batch_size or run.train_cfg.batch_size)
    val_ds = SequenceDataset(run.store, run.splits.val[slice(None, tcfg.limit)], run.levels, run.with_tokens)
    if len(val_ds) == 0:
        raise TjepaError(f"{run.run_dir}: the val split has no rows to select the rollout model on")
    val_loader = DataLoader(val_ds, batch_size=tcfg.batch_size, shuffle=False)
    selection = {"metric": "val rollout ADE", "steps": steps, "camera": "last"}
    try:
        trainer = WindowTrainer(tcfg, run.store, rdir, spec.model_config(run.model_cfg), spec, run.splits,
                                lambda m: _val_scores(m, val_loader, cfg, steps, run.device),
                                levels=run.levels, resume=not cfg.retrain, progress=progress,
                                extra_doc={"selection": selection})
    except ConfigMismatchError as err:
        raise ConfigMismatchError(f"{err} (for `tjepa eval --rollout`: pass --rollout-retrain to train "
                                  f"{rdir} again with the requested settings)") from err
    before = trainer.epoch
    trainer.fit()
    best = trainer.paths.best
    if not best.is_file():
        raise TjepaError(f"{best}: the rollout model never reached a finite val ADE in {trainer.epoch} "
                         f"epoch(s); see {trainer.paths.metrics}")
    model, ckpt = load_run_model(rdir, "best", map_location=run.device)
    info = {"dir": str(rdir), "checkpoint": str(best), "window": f"{spec.obs}->{spec.fut} tubelets "
            f"({spec.obs * model.cfg.tubelet}->{spec.fut * model.cfg.tubelet} frames)",
            "epochs": tcfg.epochs, "epochs_trained_now": trainer.epoch - before,
            "reused": trainer.epoch == before, "best_epoch": int(ckpt["epoch"]),
            "best_val_ade": float(ckpt["best_val_ade"]), "selection": selection, "steps": steps}
    return model, info


def evaluate_rollout(run: LoadedRun, rows: tuple[int, ...], cfg: RolloutConfig, *, batch_size: int = 16,
                     progress: bool = True, keep: int = 0) -> dict[str, Any]:
    """Obtain the window model, roll it out on `rows`; returns {metrics (trajectory, with horizons),
    stability, info (protocol, model, camera note), kept (predictions of the first `keep` videos)}."""
    model, info = obtain_rollout_model(run, cfg, batch_size=batch_size, progress=progress)
    ds = SequenceDataset(run.store, rows, run.levels, run.with_tokens)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    traj, stab, kept = score_rollout(model, loader, cfg, info["steps"], run.device, keep=keep)
    frames = info["steps"] * cfg.fut * model.cfg.tubelet
    info.update(camera=cfg.camera, camera_note=CAMERA_NOTE[cfg.camera], frames=frames,
                protocol=f"{info['steps']} recursive steps of {cfg.fut} tubelets from the last {cfg.obs} "
                         f"observed tubelets; predictions fed back as context")
    return {"metrics": traj, "stability": stab, "info": info, "kept": kept}
