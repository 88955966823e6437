"""The release's readout head (their `TrajectoryReadoutMLP`), for the `release` presets.

Per frame slot: a multi-head attention pool over the P tokens whose query is a learned std-1 vector
that also passes through the attention's query projection; LayerNorm in; a non-residual
Linear-GELU-Dropout; one residual branch over two Linear-GELU-Dropout layers. Then an average of
consecutive frame pairs over all To + Tf slots ((To + Tf) / 2 steps, the `pairs` pooling of head.py,
with its flaw: the first half of the horizon reads observed frames only), LayerNorm out, and the
output Linear (xavier-uniform weight, zero bias). Every other parameter keeps PyTorch's default
init and eps, as their plain nn modules have them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tjepa.train.config import ModelConfig
from tjepa.train.head import cam_to_world


def _dense(width: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout)]


class ReleaseReadoutHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w, p = cfg.head_width, cfg.head_dropout
        self.query = nn.Parameter(torch.randn(1, 1, w))
        self.attn = nn.MultiheadAttention(w, cfg.head_heads, dropout=p, kdim=cfg.vjepa_width,
                                          vdim=cfg.vjepa_width, batch_first=True)
        self.ln_in = nn.LayerNorm(w)
        self.fc_in = nn.Sequential(*_dense(w, p))
        self.residual = nn.Sequential(*_dense(w, p), *_dense(w, p))
        self.time_pool = nn.AvgPool1d(kernel_size=2, stride=2)
        self.ln_out = nn.LayerNorm(w)
        self.fc_out = nn.Linear(w, cfg.n_joints * 3)
        nn.init.xavier_uniform_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def frame_features(self, frames: Tensor) -> Tensor:
        """[B, T, P, D] -> [B, T, head_width], each frame on its own."""
        b, t, p, d = frames.shape
        tokens = frames.reshape(b * t, p, d)
        pooled, _ = self.attn(self.query.expand(b * t, -1, -1).to(tokens.dtype), tokens, tokens,
                              need_weights=False)
        x = self.fc_in(self.ln_in(pooled.view(b, t, -1)))
        return x + self.residual(x)

    def forward(self, observed: Tensor, future: Tensor, cam_last: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """observed [B, To, P, D] (cached latents per slot), future [B, Tf, P, D] (PREDICTED), To == Tf
        -> (joints in the last observed camera frame [B, Tf, J, 3], world joints or None)."""
        n_fut = future.shape[1]
        if observed.shape[1] != n_fut:
            raise ValueError(f"the release head pools pairs of all slots: it needs as many observed as "
                             f"future frames (got {observed.shape[1]} and {n_fut})")
        feats = self.frame_features(torch.cat((observed, future), dim=1))  # [B, 2*Tf, C]
        steps = self.time_pool(feats.transpose(1, 2)).transpose(1, 2)  # [B, Tf, C]
        traj_cam = self.fc_out(self.ln_out(steps)).unflatten(-1, (self.cfg.n_joints, 3)).float()
        traj_world = None if cam_last is None else cam_to_world(traj_cam, cam_last)
        return traj_cam, traj_world
