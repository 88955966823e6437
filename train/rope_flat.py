"""RoPE over (frame, flattened patch index): the positions of the authors' release predictor.

Two axes instead of (t, h, w): the frame and the patch's row-major index in the grid (0..P-1), so
horizontal neighbours are one step apart and vertical ones grid_w steps. Each axis rotates
2*((head_dim // 2) // 2) channels (frame first); leftover channels pass unrotated.

V-JEPA's duplicated-frequency layout: an axis's d/2 frequencies are tiled twice over its d channels
([w_0 .. w_{d/2-1}, w_0 .. w_{d/2-1}]) while the rotated pairs are adjacent channels (2i, 2i+1), so
the two channels of a pair turn at different rates. That is not an exact rotation (norms change);
it is kept because the `release` preset reproduces the release, not because it is right.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def flat_axis_dim(head_dim: int) -> int:
    """Channels rotated per axis (even)."""
    return 2 * ((head_dim // 2) // 2)


class FramePatchRope(nn.Module):
    def __init__(self, head_dim: int, grid_w: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.grid_w = head_dim, grid_w
        self.d = flat_axis_dim(head_dim)
        if self.d < 2:
            raise ValueError(f"head_dim {head_dim} too small for (frame, patch) RoPE (needs >= 4)")
        half = self.d // 2
        inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq.repeat(2), persistent=False)  # tiled, [d]

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions [N, 3] (t, h, w), as token_positions gives them -> (cos, sin), each [N, 2, d];
        per-sample positions [B, N, 3] -> [B, 1, N, 2, d] (broadcast over heads)."""
        pos = positions.float()
        axes = torch.stack((pos[..., 0], pos[..., 1] * self.grid_w + pos[..., 2]), dim=-1)  # (frame, flat patch)
        ang = axes[..., None] * self.inv_freq.to(pos.device)
        if ang.dim() == 4:
            ang = ang[:, None]
        return ang.cos(), ang.sin()

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.angles(positions)


def apply_rope_interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [..., N, head_dim] with angles [N, 2, d]: pairs (2i, 2i+1) turned by the tiled angles;
    float32 math, returned in x's dtype."""
    n_rot = cos.shape[-2] * cos.shape[-1]
    rot = x[..., :n_rot].float()
    pairs = rot.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    out = rot * cos.flatten(-2) + turned * sin.flatten(-2)
    return torch.cat((out.to(x.dtype), x[..., n_rot:]), dim=-1)
