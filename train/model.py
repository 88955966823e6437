"""ThinkJEPA: pyramid guidance + guided latent predictor + trajectory head, and the joint loss.

Variants (docs/method.md section 8): `thinkjepa`; `jepa` (no guidance module at all); `vlm` (the visual
inputs of the predictor and of the head's observed half are zeros, guidance kept).

Latent space: the predictor works on frame slots (each tubelet repeated once per frame), so it emits
two slots per future tubelet. `pred_frames` [B, Tf, P, D] is what the head reads and what the latent
loss scores (each slot against its tubelet's cached latent, as in the release); `pred_future`
[B, Tf/t, P, D] averages the slots of each tubelet back into the cached per-tubelet space, for latent
metrics and for feeding a rollout's next window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tjepa.errors import ConfigMismatchError
from tjepa.train.config import ModelConfig
from tjepa.train.guidance import PyramidGuidance
from tjepa.train.head import TrajectoryHead
from tjepa.train.predictor import GuidedPredictor
from tjepa.train.release_head import ReleaseReadoutHead


@dataclass
class ModelOutput:
    pred_future: Tensor  # [B, Tf/t, P, D] cached (per-tubelet) latent space
    pred_frames: Tensor  # [B, Tf, P, D] per frame slot
    traj_cam: Tensor  # [B, Tf, J, 3] camera frame of the last observed frame, float32
    traj_world: Tensor | None  # [B, Tf, J, 3] world metres; None when the batch has no cam_last


class ThinkJEPA(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # Built in this order so that, for one seed, every variant gets the same predictor and head.
        self.predictor = GuidedPredictor(cfg)
        self.head = ReleaseReadoutHead(cfg) if cfg.head == "release" else TrajectoryHead(cfg)
        self.guidance = PyramidGuidance(cfg) if cfg.guided else None

    def check_batch(self, batch: Mapping[str, Tensor]) -> None:
        """Raise ConfigMismatchError when the batch's feature sizes differ from the config's."""
        cfg = self.cfg
        expect = {
            "vjepa_past": (cfg.patches, cfg.vjepa_width),
            "vjepa_future": (cfg.patches, cfg.vjepa_width),
            "prompt_mean": (cfg.levels, cfg.vlm_width),
            "think_mean": (cfg.levels, cfg.vlm_width),
        }
        for key, tail in expect.items():
            if key in batch and tuple(batch[key].shape[-2:]) != tail:
                raise ConfigMismatchError(
                    f"batch['{key}'] has trailing shape {tuple(batch[key].shape[-2:])}, the model expects {tail}; "
                    f"build the config with ModelConfig.from_store_layout(store layout)"
                )
        for key in ("prompt_tokens", "think_tokens"):
            if key in batch and (batch[key].shape[1], batch[key].shape[-1]) != (cfg.levels, cfg.vlm_width):
                raise ConfigMismatchError(f"batch['{key}'] has shape {tuple(batch[key].shape)}; expected "
                                          f"[B, {cfg.levels}, S, {cfg.vlm_width}]")

    def forward(self, batch: Mapping[str, Tensor], *, future_tubelets: int | None = None,
                time_offset: float = 0.0, use_guidance: bool = True) -> ModelOutput:
        """`batch` follows the stage-two contract. Reads vjepa_past, the VLM features and cam_last;
        of vjepa_future only its length (else `future_tubelets`, else cfg.n_future / tubelet)."""
        cfg = self.cfg
        self.check_batch(batch)
        # Loaders keep fp16 arrays fp16 (half the bytes to move); upcast here, on the model's device.
        batch = {k: v.float() if v.dtype == torch.float16 else v for k, v in batch.items()}
        past = batch["vjepa_past"]
        if future_tubelets is None:
            future_tubelets = batch["vjepa_future"].shape[1] if "vjepa_future" in batch else cfg.n_future // cfg.tubelet
        if cfg.variant == "vlm":
            past = torch.zeros_like(past)
        guidance = self.guidance(batch) if (self.guidance is not None and use_guidance) else None
        times = slot_times(batch, past.shape[1] * cfg.tubelet, future_tubelets * cfg.tubelet)
        if cfg.positions == "frame_time" and times is None:
            raise ConfigMismatchError("positions='frame_time' needs the batch keys past_idx and future_idx "
                                      "(the store's frame indices)")
        pred_frames = self.predictor(past, future_tubelets, guidance, time_offset,
                                     frame_times=times if cfg.positions == "frame_time" else None)
        pred_future = pred_frames.unflatten(1, (future_tubelets, cfg.tubelet)).mean(dim=2)
        # "future" pooling reads only the last observed frame slot, which is the last tubelet.
        if cfg.step_pool == "future":
            observed = past[:, -1:]
        else:
            observed = past.repeat_interleave(cfg.tubelet, dim=1)
        traj_cam, traj_world = self.head(observed.to(pred_frames.dtype), pred_frames, batch.get("cam_last"))
        if cfg.anchor == "last_observed" and "cam_last" in batch:  # unlabelled batches have no trajectory
            scale = elapsed_fraction(times, traj_cam.shape[1]) if cfg.time_scaled_offsets else None
            traj_cam, traj_world = self._add_anchor(batch, traj_cam, traj_world, scale)
        return ModelOutput(pred_future, pred_frames, traj_cam, traj_world)

    @staticmethod
    def _add_anchor(batch: Mapping[str, Tensor], traj_cam: Tensor, traj_world: Tensor | None,
                    scale: Tensor | None = None):
        """Offsets -> positions: add each joint's last observed position (zero where it was invalid),
        after multiplying the offsets by `scale` [B or 1, Tf] when given."""
        missing = [k for k in ("joints_past", "valid_past") if k not in batch]
        if missing:
            raise ConfigMismatchError(f"anchor='last_observed' needs batch keys {missing}")
        last = batch["joints_past"][:, -1].float() * batch["valid_past"][:, -1, :, None]  # [B, J, 3] world
        pose = batch["cam_last"].float()
        rot, trans = pose[:, :3, :3], pose[:, :3, 3]
        if scale is not None:
            scale = scale[..., None, None].to(traj_cam)
            traj_cam = traj_cam * scale
            if traj_world is not None:  # world = R @ cam + t, so scaling the offset scales (world - t)
                traj_world = (traj_world - trans[:, None, None]) * scale + trans[:, None, None]
        offset_world = last - trans[:, None]  # = R @ anchor_cam
        anchor_cam = torch.einsum("bji,bkj->bki", rot, offset_world)  # R^T (p - t)
        traj_cam = traj_cam + anchor_cam[:, None]
        if traj_world is not None:
            traj_world = traj_world + offset_world[:, None]
        return traj_cam, traj_world

    def loss(self, batch: Mapping[str, Tensor], out: ModelOutput) -> dict[str, Tensor]:
        """total = w_traj * MSE(world joints, valid entries only) + w_latent * MSE(latents); float32."""
        cfg = self.cfg
        target = batch["vjepa_future"].float().repeat_interleave(cfg.tubelet, dim=1)
        latent = F.mse_loss(out.pred_frames.float(), target)
        if cfg.w_traj > 0:
            missing = [k for k in ("joints_future", "valid_future", "cam_last") if k not in batch]
            if missing:
                raise ConfigMismatchError(f"the trajectory loss needs batch keys {missing} (a store without "
                                          f"targets, e.g. plain videos, can only train with w_traj=0)")
            valid = batch["valid_future"].to(torch.bool)[..., None]  # [B, Tf, J, 1]
            err = torch.where(valid, out.traj_world - batch["joints_future"].float(), 0.0)
            traj = err.square().sum() / (3 * valid.sum()).clamp_min(1)
        else:
            traj = latent.new_zeros(())
        total = cfg.w_traj * traj + cfg.w_latent * latent
        return {"total": total, "traj": traj, "latent": latent}

    def param_groups(self, lr_head: float, lr_predictor: float, weight_decay: float) -> list[dict]:
        """AdamW groups as published: the head; the predictor with the guidance (same decay for all).
        Each group carries a `name` ("head" / "predictor") for schedulers."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        return [
            {"name": "head", "params": head, "lr": lr_head, "weight_decay": weight_decay},
            {"name": "predictor", "params": rest, "lr": lr_predictor, "weight_decay": weight_decay},
        ]

    def num_params(self) -> dict[str, int]:
        parts = {"predictor": self.predictor, "head": self.head, "guidance": self.guidance}
        counts = {k: sum(p.numel() for p in m.parameters()) if m is not None else 0 for k, m in parts.items()}
        counts["total"] = sum(counts.values())
        return counts


def slot_times(batch: Mapping[str, Tensor], n_obs: int, n_fut: int) -> Tensor | None:
    """Real time of every frame slot [B, n_obs + n_fut] from the batch's source frame indices, or None
    when it carries none. Unit: the horizon's mean step (last observed -> last future frame, over
    n_fut steps); the last observed frame sits at n_obs - 1, so uniform sampling gives about the slot
    indices while a dense observed window packs its slots just before the split."""
    if "past_idx" not in batch or "future_idx" not in batch:
        return None
    past, fut = batch["past_idx"].double(), batch["future_idx"].double()
    if past.shape[-1] != n_obs or fut.shape[-1] != n_fut:
        raise ConfigMismatchError(f"past_idx / future_idx have {past.shape[-1]} / {fut.shape[-1]} frames; the "
                                  f"model has {n_obs} observed and {n_fut} future frame slots")
    last = past[:, -1:]
    step = ((fut[:, -1:] - last) / n_fut).clamp_min(1e-9)
    return ((torch.cat((past, fut), dim=1) - last) / step + (n_obs - 1)).float()


def elapsed_fraction(times: Tensor | None, n_fut: int) -> Tensor:
    """(t_j - t_last) / (t_end - t_last) per future step: [B, n_fut] from `slot_times`, or the
    uniform (j + 1) / n_fut as [1, n_fut] when the batch has no frame indices (e.g. window batches)."""
    if times is None:
        return (torch.arange(1, n_fut + 1, dtype=torch.float32) / n_fut)[None]
    n_obs = times.shape[1] - n_fut
    return (times[:, n_obs:] - (n_obs - 1)) / n_fut


def random_batch(cfg: ModelConfig, batch_size: int = 2, past_tubelets: int | None = None,
                 future_tubelets: int | None = None, tokens: tuple[int, int] | None = None,
                 seed: int = 0) -> dict[str, Tensor]:
    """A batch of the stage-two contract's shapes with random values (tests, benchmarks, smoke runs).
    `tokens=(S, K)` adds zero-padded prompt/think tokens (lengths drawn in 1..S / 1..K) whose masked
    means are the `*_mean` entries, exactly as the cache computes them."""
    g = torch.Generator().manual_seed(seed)
    tp = cfg.n_past // cfg.tubelet if past_tubelets is None else past_tubelets
    tf = cfg.n_future // cfg.tubelet if future_tubelets is None else future_tubelets
    b, p, d, n_lv, h = batch_size, cfg.patches, cfg.vjepa_width, cfg.levels, cfg.vlm_width
    n_past, n_fut = tp * cfg.tubelet, tf * cfg.tubelet
    rot, _ = torch.linalg.qr(torch.randn(b, 3, 3, generator=g))
    cam = torch.eye(4).repeat(b, 1, 1)
    cam[:, :3, :3] = rot * torch.linalg.det(rot).sign()[:, None, None]  # a proper rotation
    cam[:, :3, 3] = torch.randn(b, 3, generator=g)
    batch = {
        "vjepa_past": torch.randn(b, tp, p, d, generator=g),
        "vjepa_future": torch.randn(b, tf, p, d, generator=g),
        "joints_past": torch.randn(b, n_past, cfg.n_joints, 3, generator=g) * 0.3,
        "valid_past": torch.rand(b, n_past, cfg.n_joints, generator=g) > 0.05,
        "joints_future": torch.randn(b, n_fut, cfg.n_joints, 3, generator=g) * 0.3,
        "valid_future": torch.rand(b, n_fut, cfg.n_joints, generator=g) > 0.05,
        "cam_last": cam,
    }
    for stream, n_tok in zip(("prompt", "think"), tokens or (None, None), strict=True):
        if n_tok is None:
            batch[f"{stream}_mean"] = torch.randn(b, n_lv, h, generator=g)
            continue
        lengths = torch.randint(1, n_tok + 1, (b,), generator=g)
        mask = (torch.arange(n_tok)[None, :] < lengths[:, None])[:, None, :, None]
        tok = torch.randn(b, n_lv, n_tok, h, generator=g) * mask
        batch[f"{stream}_tokens"], batch[f"{stream}_len"] = tok, lengths
        batch[f"{stream}_mean"] = tok.sum(dim=2) / lengths[:, None, None]
    return batch
