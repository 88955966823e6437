"""Windowed training for the long-horizon rollout protocol (docs/method.md section 8): a short
`obs -> fut` model (2 -> 2 tubelets = 4 -> 4 frames by default) trained on windows of each video's
whole cached sequence.

The sequence. Per video the store holds To/t observed and Tf/t future tubelets (two independent
encoder forwards) and the targets at the To + Tf sampled frames; concatenated they form one sequence
of (To + Tf)/t tubelets and To + Tf frames. A window starting at tubelet s observes tubelets
[s, s+obs) and predicts [s+obs, s+obs+fut); its joints and validity are those of the matching frames
and its `cam_last` is the camera pose of its last observed frame (so the head learns, as in the main
model, joints in that camera's frame). The VLM guidance is the video's own, computed from its
observed frames only: it never saw a frame after the window's start that the window did not.

The loop reuses the trainer's pieces (EpochSampler, EpochBar, the lr schedule `TrainConfig.lr_at`,
atomic weights-only checkpoints, run documents and `prepare_run_dir` for resume/mismatch rules).
An epoch reads each train video once: blocks of `batch_size` videos are loaded, all their windows
shuffled together and cut into minibatches of `batch_size` windows. Checkpoint selection calls a
`validate(model) -> {"val_ade": ..., ...}` function given by the caller (the rollout evaluator uses
the recursive protocol on the val split); lower `val_ade` is better.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from tjepa.errors import ConfigMismatchError, TjepaError
from tjepa.train.checkpoint import (
    atomic_save,
    make_checkpoint,
    restore_training,
    rng_state,
    set_rng_state,
    truncate_metrics,
)
from tjepa.train.config import ModelConfig
from tjepa.train.data import CacheDataset, read_index, to_device
from tjepa.train.loop import EpochBar, EpochSampler, NonFiniteLossError
from tjepa.train.model import ThinkJEPA
from tjepa.train.run_config import RunPaths, TrainConfig, prepare_run_dir, run_document
from tjepa.train.splits import Splits, write_splits

# keys of a stage-two item that belong to the video, not to a time step: shared by all its windows
ROW_KEYS = ("prompt_mean", "think_mean", "prompt_tokens", "prompt_len", "think_tokens", "think_len", "row")


@dataclass(frozen=True)
class WindowSpec:
    obs: int = 2  # observed tubelets per window
    fut: int = 2  # predicted tubelets per window

    def __post_init__(self) -> None:
        if self.obs < 1 or self.fut < 1:
            raise TjepaError(f"a window needs >= 1 observed and >= 1 future tubelet, got {self.obs}, {self.fut}")

    def n_windows(self, tubelets: int) -> int:
        """Windows in a sequence of `tubelets` tubelets (stride one tubelet)."""
        return max(tubelets - self.obs - self.fut + 1, 0)

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """`base` resized to this window (n_past = obs frames, n_future = fut frames)."""
        return base.replace(n_past=self.obs * base.tubelet, n_future=self.fut * base.tubelet)


class SequenceDataset(Dataset):
    """`CacheDataset` items plus the camera pose of every sampled frame: `cams_past` [To,4,4],
    `cams_future` [Tf,4,4] (small: read for all rows up front)."""

    def __init__(self, store: str | Path, rows: Sequence[int], levels: tuple[int, ...] | None = None,
                 with_tokens: bool = False, preload: bool = False):
        self.base = CacheDataset(store, rows, levels, with_tokens, preload)
        self.rows = self.base.rows
        g = zarr.open_group(self.base.path, mode="r")
        idx = np.asarray(self.rows, np.int64)
        cams = {}
        for side in ("past", "future"):
            arr = g[f"targets/cam_{side}"]
            cams[side] = (np.asarray(arr.oindex[idx], np.float32) if idx.size
                          else np.zeros((0, *arr.shape[1:]), np.float32))
        self.cams_past, self.cams_future = cams["past"], cams["future"]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.base[i]
        item["cams_past"] = torch.from_numpy(self.cams_past[i])
        item["cams_future"] = torch.from_numpy(self.cams_future[i])
        return item


def sequence(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of SequenceDataset items -> whole sequences: `latents` [B, (To+Tf)/t, P, D],
    `joints` [B, To+Tf, J, 3], `valid` [B, To+Tf, J], `cams` [B, To+Tf, 4, 4], plus the row keys."""
    seq = {k: batch[k] for k in ROW_KEYS if k in batch}
    seq["latents"] = torch.cat((batch["vjepa_past"], batch["vjepa_future"]), dim=1)
    seq["joints"] = torch.cat((batch["joints_past"], batch["joints_future"]), dim=1)
    seq["valid"] = torch.cat((batch["valid_past"], batch["valid_future"]), dim=1)
    seq["cams"] = torch.cat((batch["cams_past"], batch["cams_future"]), dim=1)
    return seq


def all_windows(n_rows: int, n_windows: int, device: torch.device | None = None) -> torch.Tensor:
    """Every (row in batch, window start) pair: long [n_rows * n_windows, 2]."""
    b = torch.arange(n_rows, device=device).repeat_interleave(n_windows)
    s = torch.arange(n_windows, device=device).repeat(n_rows)
    return torch.stack((b, s), dim=1)


def window_batch(seq: dict[str, torch.Tensor], pairs: torch.Tensor, spec: WindowSpec,
                 tubelet: int) -> dict[str, torch.Tensor]:
    """The stage-two batch of the windows `pairs` [M, 2] = (row in `seq`, start tubelet)."""
    b, s = pairs[:, 0], pairs[:, 1]
    n_tub = spec.obs + spec.fut
    tub = s[:, None] + torch.arange(n_tub, device=pairs.device)  # [M, obs+fut]
    frames = s[:, None] * tubelet + torch.arange(n_tub * tubelet, device=pairs.device)
    lat = seq["latents"][b[:, None], tub]
    joints, valid = seq["joints"][b[:, None], frames], seq["valid"][b[:, None], frames]
    n_obs = spec.obs * tubelet
    out = {k: seq[k][b] for k in ROW_KEYS if k in seq}
    out.update(vjepa_past=lat[:, :spec.obs], vjepa_future=lat[:, spec.obs:],
               joints_past=joints[:, :n_obs], valid_past=valid[:, :n_obs],
               joints_future=joints[:, n_obs:], valid_future=valid[:, n_obs:],
               cam_last=seq["cams"][b, frames[:, n_obs - 1]], window_start=s)
    return out


Validate = Callable[[ThinkJEPA], dict[str, float]]


class WindowTrainer:
    """Train (or resume) an `obs -> fut` window model in `run_dir` on the train rows of `splits`."""

    def __init__(self, cfg: TrainConfig, store: str | Path, run_dir: str | Path, model_cfg: ModelConfig,
                 spec: WindowSpec, splits: Splits, validate: Validate, *, levels: tuple[int, ...] | None = None,
                 resume: bool = True, progress: bool = True, extra_doc: dict[str, Any] | None = None):
        self.cfg, self.spec, self.validate, self.progress = cfg, spec, validate, progress
        if (model_cfg.n_past, model_cfg.n_future) != (spec.obs * model_cfg.tubelet, spec.fut * model_cfg.tubelet):
            raise ConfigMismatchError(f"model config n_past/n_future {model_cfg.n_past}/{model_cfg.n_future} "
                                      f"do not match the window {spec}; use spec.model_config(base)")
        self.device = _device(cfg.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        index = read_index(store)
        layout = index.layout
        total = (int(layout["n_past"]) + int(layout["n_future"])) // int(layout["tubelet"])
        self.n_windows = spec.n_windows(total)
        if self.n_windows < 1:
            raise TjepaError(f"{index.path}: a video holds {total} tubelets, too few for a window of "
                             f"{spec.obs} + {spec.fut}")
        self.model_cfg = model_cfg
        doc = run_document(cfg, model_cfg.to_dict(), index.path, index.fingerprint,
                           levels if levels is not None else index.layers)
        self.doc = {**doc, "window": dataclasses.asdict(spec), **(extra_doc or {})}
        self.paths = RunPaths(Path(run_dir))
        prepare_run_dir(run_dir, self.doc, resume)
        self.resuming = resume and self.paths.latest.exists()
        write_splits(run_dir, splits, index.videos)
        with_tokens = model_cfg.conditioning == "crossattn"
        self.train_ds = SequenceDataset(store, splits.train[slice(None, cfg.limit)], levels, with_tokens,
                                        cfg.preload)
        if len(self.train_ds) == 0:
            raise TjepaError(f"{run_dir}: the train split has no rows to cut windows from")
        torch.manual_seed(cfg.seed)
        self.model = ThinkJEPA(model_cfg).to(self.device)
        groups = self.model.param_groups(cfg.lr_head, cfg.lr_predictor, cfg.weight_decay)
        self.head_groups = [str(g["name"]).startswith("head") for g in groups]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr_predictor, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sampler = EpochSampler(len(self.train_ds), cfg.seed)
        self.loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                                 pin_memory=self.device.type == "cuda")
        self.epoch, self.best = 0, math.inf
        if self.resuming:
            self._restore()

    def _restore(self) -> None:
        ckpt = restore_training(self.paths.latest, self.model, self.opt, self.scaler)
        self.epoch, self.best = int(ckpt["epoch"]), float(ckpt["best_val_ade"])
        set_rng_state(ckpt["rng"][0])
        truncate_metrics(self.paths.metrics, self.epoch)

    def _step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(batch)
            losses = self.model.loss(batch, out)
        if not torch.isfinite(losses["total"].detach()):
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise NonFiniteLossError(f"non-finite window loss at epoch {self.epoch + 1} ({parts}; store rows "
                                     f"{batch['row'].tolist()}); {self.paths.latest} is untouched")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return losses

    def _train_epoch(self, bar: EpochBar | None) -> dict[str, float]:
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch + 1)  # window order
        sums = torch.zeros(4, dtype=torch.float64)
        t0 = time.perf_counter()
        for block in self.loader:
            block = to_device(block, self.device)
            seq = sequence(block)
            pairs = all_windows(len(block["row"]), self.n_windows)
            pairs = pairs[torch.randperm(len(pairs), generator=g)].to(self.device)
            for chunk in pairs.split(self.cfg.batch_size):
                losses = self._step(window_batch(seq, chunk, self.spec, self.model_cfg.tubelet))
                n = len(chunk)
                sums += torch.tensor([float(losses[k].detach()) * n for k in ("total", "traj", "latent")] + [n],
                                     dtype=torch.float64)
                if bar is not None:
                    bar.advance(n, float(losses["total"].detach()))
        dt = time.perf_counter() - t0
        s = sums.tolist()
        return {"train_loss": s[0] / s[3], "train_traj": s[1] / s[3], "train_latent": s[2] / s[3],
                "samples_per_s": s[3] / dt if dt > 0 else float("nan")}

    def _save(self, metrics: dict[str, Any], improved: bool) -> None:
        ckpt = make_checkpoint(model=self.model, optimizer=self.opt, scaler=self.scaler, epoch=self.epoch,
                               best_val_ade=self.best, config=self.doc, metrics=metrics)
        ckpt["rng"] = [rng_state()]
        with open(self.paths.metrics, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if improved:
            atomic_save(ckpt, self.paths.best)
        atomic_save(ckpt, self.paths.latest)

    def fit(self, max_epochs: int | None = None) -> list[dict[str, Any]]:
        """Train until `cfg.epochs` (or for at most `max_epochs` more); returns this call's per-epoch
        metrics (also appended to metrics.jsonl)."""
        history = []
        end = self.cfg.epochs if max_epochs is None else min(self.cfg.epochs, self.epoch + max_epochs)
        while self.epoch < end:
            t0 = time.perf_counter()
            lr_head, lr_pred = self.cfg.lr_at(self.epoch)
            for group, is_head in zip(self.opt.param_groups, self.head_groups, strict=True):
                group["lr"] = lr_head if is_head else lr_pred
            with EpochBar(self.epoch + 1, self.cfg.epochs, len(self.train_ds) * self.n_windows,
                          enabled=self.progress) as bar:
                train = self._train_epoch(bar)
            self.model.eval()
            with torch.no_grad():
                val = self.validate(self.model)
            self.epoch += 1
            improved = math.isfinite(val["val_ade"]) and val["val_ade"] < self.best
            if improved:
                self.best = val["val_ade"]
            metrics = {"epoch": self.epoch, **train, **val, "lr_head": lr_head, "lr_predictor": lr_pred,
                       "best": improved, "time": time.perf_counter() - t0}
            self._save(metrics, improved)
            if self.progress:
                EpochBar.summary({"val_fde": math.nan, "val_acc": math.nan, **metrics})
            history.append(metrics)
        return history


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TjepaError(f"device {name}: CUDA is not available on this machine")
    return dev
