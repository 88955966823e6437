"""Guided latent predictor: a V-JEPA-2-style pre-norm transformer over (observed + future) frame slots.

Observed tubelet latents are embedded and repeated once per frame of their tubelet; future slots are
a learned mask token. Positions come only from RoPE on q/k: 3-D (t, h, w), or the release's (frame,
flattened patch); the frame coordinate is the slot index, or the real time of the slot's frame when
the sampling is not uniform (ModelConfig.positions). Attention is frame-causal. Before every block the guidance conditions the stream
(FiLM), the block's norms (AdaLN), or adds a gated cross-attention to the VLM tokens of the block's
level. `cond_style="release"` swaps in the release's operators: AdaLN = LayerNorm of the stream, then
the same FiLM, before each block; cross-attention = a gated MHA before each block, not inside it.
Each mode is a registered class in train/conditioning.py; this module only calls its hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tjepa.train import conditioning
from tjepa.train.attention import FrameCausalSelfAttention
from tjepa.train.conditioning import PLAIN, Conditioning
from tjepa.train.config import ModelConfig
from tjepa.train.guidance import Guidance
from tjepa.train.rope import Rope3D, apply_rope, token_positions
from tjepa.train.rope_flat import FramePatchRope, apply_rope_interleaved


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescale the survivors."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, drop_path: float, cond: Conditioning | None,
                 rotate: Callable[[Tensor, Tensor, Tensor], Tensor] = apply_rope):
        super().__init__()
        self.cond = cond or PLAIN  # the mode's hooks; the plain base mode leaves everything as it is
        self.conditioning = cond.name if cond else None
        w = cfg.width
        affine = self.cond.norm_affine  # False: the mode supplies the norms' affine parameters
        self.norm1 = nn.LayerNorm(w, eps=cfg.ln_eps, elementwise_affine=affine)
        self.attn = FrameCausalSelfAttention(w, cfg.heads, cfg.qkv_bias, cfg.dropout, cfg.attention,
                                             cfg.attn_frames_per_call, rotate)
        self.norm2 = nn.LayerNorm(w, eps=cfg.ln_eps, elementwise_affine=affine)
        self.mlp = Mlp(w, int(w * cfg.mlp_ratio), cfg.dropout)
        self.drop_path = DropPath(drop_path)
        self.cond.build_block(self, cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, frame_len: int,
                mod: Tensor | None = None, ctx: tuple[Tensor, Tensor] | None = None,
                gate: Tensor | None = None) -> Tensor:
        """x [B, N, W]; mod [B, k*W] (pooled modes, gated); ctx (tokens, mask) + gate (token modes)."""
        c = self.cond
        x = c.stream(self, x, mod)
        x = x + self.drop_path(self.attn(c.norm(self, self.norm1(x), mod, 0), cos, sin, frame_len))
        x = c.after_attention(self, x, ctx, gate)
        return x + self.drop_path(self.mlp(c.norm(self, self.norm2(x), mod, 1)))


def make_rope(cfg: ModelConfig) -> tuple[nn.Module, Callable[[Tensor, Tensor, Tensor], Tensor]]:
    """(angles module, apply function) of the configured RoPE layout."""
    head_dim = cfg.width // cfg.heads
    if cfg.rope == "frame_patch":
        return FramePatchRope(head_dim, cfg.grid_w, cfg.rope_theta), apply_rope_interleaved
    return Rope3D(head_dim, cfg.rope_theta), apply_rope


class GuidedPredictor(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mode = conditioning.get(cfg.conditioning, cfg.cond_style) if cfg.guided else None
        in_block = self.mode if self.mode is not None and self.mode.in_block else None
        self.embed = nn.Linear(cfg.vjepa_width, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(cfg.width))
        self.rope, rotate = make_rope(cfg)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, r, in_block, rotate) for r in rates)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.out = nn.Linear(cfg.width, cfg.vjepa_width)
        self._init_weights()
        if self.mode is not None:  # after the init pass, as the release builds its pre-block modules
            self.mode.build_predictor(self, cfg)

    def _init_weights(self) -> None:
        if self.cfg.init == "ours":
            nn.init.trunc_normal_(self.mask_token, std=0.02)  # (the release keeps it at zero)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # V-JEPA's depth rescaling of the residual output projections.
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    def forward(self, past: Tensor, future_tubelets: int, guidance: Guidance | None = None,
                time_offset: float = 0.0, return_all: bool = False, frame_times: Tensor | None = None) -> Tensor:
        """past [B, To/t, P, D] tubelet latents -> predicted future frame slots [B, Tf, P, D]
        (Tf = future_tubelets * tubelet), or all To + Tf slots with `return_all` (for tests).
        `frame_times` [B, To + Tf]: the real time of each frame slot for RoPE (default: slot index)."""
        cfg = self.cfg
        b, n_tub, p, _ = past.shape
        if p != cfg.patches:
            raise ValueError(f"past latents have {p} patches; the model expects {cfg.patches}")
        n_obs, n_fut = n_tub * cfg.tubelet, future_tubelets * cfg.tubelet
        obs = self.embed(past).repeat_interleave(cfg.tubelet, dim=1)  # embed-then-repeat == repeat-then-embed
        fut = self.mask_token.to(obs.dtype).expand(b, n_fut, p, cfg.width)
        x = torch.cat((obs, fut), dim=1).flatten(1, 2)  # [B, (To+Tf)*P, W], frame-major
        pos = token_positions(n_obs + n_fut, cfg.grid_h, cfg.grid_w, time_offset, x.device, frame_times)
        cos, sin = self.rope.angles(pos)
        for i, blk in enumerate(self.blocks):
            if guidance is None or self.mode is None:
                x = blk(x, cos, sin, p)
                continue
            mod = None if guidance.mod is None else guidance.mod[i]
            ctx = None if guidance.ctx is None else guidance.ctx[i]
            gate = None if guidance.gate is None else guidance.gate[i]
            x = self.mode.before_block(self, i, x, mod, ctx, gate)
            x = blk(x, cos, sin, p, mod=mod, ctx=ctx, gate=gate)
        x = x.view(b, n_obs + n_fut, p, cfg.width)
        if not return_all:
            x = x[:, n_obs:]
        return self.out(self.norm(x))
