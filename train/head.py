"""Trajectory head: frame-slot latents -> 3-D hand joints per future step.

Per frame: attention pooling of the P tokens (one learned query, multi-head) -> LayerNorm -> two
residual GELU layers; frames are independent. Frames -> steps, two ways:
- "pairs" (the published release): average consecutive pairs of ALL To + Tf slots (observed, then
  predicted) -> (To + Tf) / 2 steps. Future step k then reads slots 2k, 2k+1, so with To == Tf the
  first half of the future trajectory is read from *observed* frames only (step 0, the first future
  frame, from the first two observed frames, the start of the episode) and never sees a prediction.
- "future" (our default): step j reads predicted future slot j concatenated with the last observed
  frame. Every step sees the present and its own, time-aligned, forecast; the predictor's forecast
  informs the whole horizon; and To need not equal Tf (e.g. rollouts with other window sizes).
Joints come out in the camera frame of the last observed frame and are mapped to the world with its
camera-to-world pose (future poses are unknown at test time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tjepa.train.config import ModelConfig


def cam_to_world(points: Tensor, cam_to_world_pose: Tensor) -> Tensor:
    """points [B, T, J, 3] in the camera frame, pose [B, 4, 4] camera-to-world -> world [B, T, J, 3]."""
    pose = cam_to_world_pose.float()
    rot, trans = pose[:, :3, :3], pose[:, :3, 3]
    return torch.einsum("bij,btkj->btki", rot, points.float()) + trans[:, None, None, :]


class AttentionPool(nn.Module):
    """One learned query attends over the tokens of a frame: [..., P, D_in] -> [..., width]."""

    def __init__(self, in_width: int, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(width))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.k = nn.Linear(in_width, width)
        self.v = nn.Linear(in_width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        lead, (p, d_in) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, p, d_in)
        k = self.k(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [M, heads, P, d]
        v = self.v(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        q = self.query.view(1, self.heads, 1, -1).expand(x.shape[0], -1, -1, -1).to(k.dtype)
        out = F.scaled_dot_product_attention(q, k, v.to(k.dtype)).flatten(1)  # [M, width]
        return self.proj(out).view(*lead, -1)


class FrameMLP(nn.Module):
    """LayerNorm, then two residual GELU layers."""

    def __init__(self, width: int, dropout: float, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        x = x + self.drop(F.gelu(self.fc1(x)))
        return x + self.drop(F.gelu(self.fc2(x)))


class TrajectoryHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.pool = AttentionPool(cfg.vjepa_width, cfg.head_width, cfg.head_heads)
        self.frame_mlp = FrameMLP(cfg.head_width, cfg.head_dropout, cfg.ln_eps)
        in_width = 2 * cfg.head_width if cfg.step_pool == "future" else cfg.head_width
        self.out = nn.Linear(in_width, cfg.n_joints * 3)
        self.step_bias = nn.Parameter(torch.zeros(cfg.n_future, cfg.n_joints * 3)) if cfg.step_bias else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if cfg.anchor == "last_observed":
            # Offsets start at exactly zero, i.e. at the persistence forecast: a 0.02-std output layer
            # over ~100 unit-scale features would otherwise start ~20 cm away from it.
            nn.init.zeros_(self.out.weight)

    def frame_features(self, frames: Tensor) -> Tensor:
        """[B, T, P, D] -> [B, T, head_width], each frame on its own."""
        return self.frame_mlp(self.pool(frames))

    def forward(self, observed: Tensor, future: Tensor, cam_last: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """observed [B, To, P, D] (cached latents per frame slot), future [B, Tf, P, D] (PREDICTED)
        -> (joints in the last observed camera frame [B, Tf, J, 3], world joints or None)."""
        n_fut = future.shape[1]
        if self.cfg.step_pool == "future":
            present = self.frame_features(observed[:, -1:])  # [B, 1, C]
            ahead = self.frame_features(future)  # [B, Tf, C]
            steps = torch.cat((present.expand_as(ahead), ahead), dim=-1)
        else:
            if observed.shape[1] != n_fut:
                raise ValueError(f"step_pool='pairs' needs as many observed as future frames "
                                 f"(got {observed.shape[1]} and {n_fut})")
            feats = self.frame_features(torch.cat((observed, future), dim=1))
            steps = feats.unflatten(1, (n_fut, 2)).mean(dim=2)
        out = self.out(steps)
        if self.step_bias is not None:
            if n_fut > self.step_bias.shape[0]:
                raise ValueError(f"step_bias covers {self.step_bias.shape[0]} future steps, asked for {n_fut}")
            out = out + self.step_bias[:n_fut].to(out.dtype)
        traj_cam = out.unflatten(-1, (self.cfg.n_joints, 3)).float()
        traj_world = None if cam_last is None else cam_to_world(traj_cam, cam_last)
        return traj_cam, traj_world
