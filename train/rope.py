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
                    device: torch.device | None = None, frame_times: Tensor | None = None) -> Tensor:
    """[(n_frames*grid_h*grid_w), 3] float positions (t, h, w), frame-major then row-major patches.

    The time of frame slot i is i (uniform sampling), or `frame_times[..., i]` when given
    ([n_frames] or per sample [B, n_frames] -> positions [B, N, 3]); `time_offset` is added to both."""
    if frame_times is None:
        t = torch.arange(n_frames, device=device, dtype=torch.float32)
    else:
        if frame_times.shape[-1] != n_frames:
            raise ValueError(f"frame_times has {frame_times.shape[-1]} frames, expected {n_frames}")
        t = frame_times.to(device=device, dtype=torch.float32)
    t = t + float(time_offset)
    hw = torch.stack(torch.meshgrid(torch.arange(grid_h, device=device, dtype=torch.float32),
                                    torch.arange(grid_w, device=device, dtype=torch.float32), indexing="ij"), -1)
    hw = hw.reshape(-1, 2)  # [P, 2]
    tt = t[..., :, None, None].expand(*t.shape, hw.shape[0], 1)  # [..., F, P, 1]
    grid = torch.cat((tt, hw.expand(*t.shape, *hw.shape)), dim=-1)
    return grid.flatten(-3, -2)


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
        """positions [N, 3] -> (cos, sin), each [N, 3, d/2] in float32; per-sample positions
        [B, N, 3] -> [B, 1, N, 3, d/2] (broadcast over the heads of q, k [B, heads, N, d])."""
        ang = positions.float()[..., None] * self.inv_freq.to(positions.device)
        if ang.dim() == 4:
            ang = ang[:, None]
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
