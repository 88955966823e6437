"""3-D rotary position embedding over (time, height, width) for frame-major token sequences.

The head dimension is split V-JEPA-2 style: each axis rotates 2*((head_dim // 3) // 2) channels
(rotate-half within its segment); leftover channels (head_dim not a multiple of 6) pass unrotated.
Only relative offsets survive q.k, so a constant time offset does not change attention scores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def axis_dim(head_dim: int) -> int:
    """Channels rotated per axis (even)."""
    return 2 * ((head_dim // 3) // 2)


def token_positions(n_frames: int, grid_h: int, grid_w: int, time_offset: float = 0.0,
                    device: torch.device | None = None) -> Tensor:
    """[(n_frames*grid_h*grid_w), 3] float positions (t, h, w), frame-major then row-major patches."""
    t = torch.arange(n_frames, device=device, dtype=torch.float32) + float(time_offset)
    h = torch.arange(grid_h, device=device, dtype=torch.float32)
    w = torch.arange(grid_w, device=device, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


class Rope3D(nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.d = axis_dim(head_dim)
        if self.d < 2:
            raise ValueError(f"head_dim {head_dim} too small for 3-D RoPE (needs >= 6)")
        inv_freq = 1.0 / theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions [N, 3] -> (cos, sin), each [N, 3, d/2] in float32."""
        ang = positions.float()[:, :, None] * self.inv_freq.to(positions.device)[None, None, :]
        return ang.cos(), ang.sin()

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.angles(positions)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [..., N, head_dim] by angles [N, 3, d/2]; float32 math, returned in x's dtype
    (under autocast q/k arrive in half precision and attention needs q, k, v in one dtype)."""
    half = cos.shape[-1]
    n_rot = 3 * 2 * half
    rot = x[..., :n_rot].float().unflatten(-1, (3, 2, half))
    x1, x2 = rot[..., 0, :], rot[..., 1, :]
    out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-2).flatten(-3)
    return torch.cat((out.to(x.dtype), x[..., n_rot:]), dim=-1)
