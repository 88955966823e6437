"""Hierarchical pyramid guidance: VLM hidden states of several layers -> per-predictor-layer conditioning.

Predictor layer i reads VLM level l(i) = round(i*(L-1)/(depth-1)) (or one fixed level). Both token
streams (prompt = "old", thinking = "new") go through bias-free linears shared across levels and are
mean-pooled. Because the projection is linear, mean(W h) = W mean(h): FiLM/AdaLN conditioning needs
only the cached per-level means; cross-attention needs the tokens themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tjepa.errors import ConfigMismatchError
from tjepa.train import conditioning
from tjepa.train.config import ModelConfig


def level_map(depth: int, levels: int, mode: str = "all") -> list[int]:
    """VLM level read by each predictor layer. Rounds half up (no half cases at depth 12, L = 8)."""
    if mode == "last":
        return [levels - 1] * depth
    if mode == "mid":
        return [levels // 2] * depth
    if depth == 1:
        return [levels - 1]
    return [int(math.floor(i * (levels - 1) / (depth - 1) + 0.5)) for i in range(depth)]


@dataclass
class Guidance:
    """What the predictor reads, per layer. Exactly one of `mod` / `ctx` is set."""

    mod: Tensor | None = None  # [depth, B, k*width], already scaled by tanh(a_i); k = 4 for our AdaLN, else 2
    ctx: list[tuple[Tensor, Tensor]] | None = None  # per layer: tokens [B, S, G], mask [B, S]
    gate: Tensor | None = None  # [depth] tanh(a_i) for cross-attention


def _masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """x [B, S, C], lengths [B] -> [B, C]; zeros for an empty stream."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    total = (x * mask[..., None].to(x.dtype)).sum(dim=1)
    return total / lengths.clamp_min(1)[:, None].to(total.dtype)


class PyramidGuidance(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.guidance_width
        self.w_old = nn.Linear(cfg.vlm_width, g, bias=False)  # prompt stream
        self.w_new = nn.Linear(cfg.vlm_width, g, bias=False)  # thinking stream
        self.layer_levels = level_map(cfg.depth, cfg.levels, cfg.level_mode)
        self.gate = nn.Parameter(torch.zeros(cfg.depth))  # a_i; tanh(0) = 0: training starts unguided
        self.mode = conditioning.get(cfg.conditioning, cfg.cond_style)
        self.type_embed = None
        if self.mode.tokens:
            if self.mode.type_embed:  # tells the two streams apart (the release concatenates them as they are)
                self.type_embed = nn.Parameter(torch.zeros(2, g))
                nn.init.trunc_normal_(self.type_embed, std=0.02)
            self.film = None
        else:
            # FiLM of the stream: 2 x width; our AdaLN modulates both block norms: 4 x width.
            k = self.mode.mod_chunks
            # The last layer is NOT zero-initialised: with a zero gate too, neither would get a gradient.
            self.film = nn.ModuleList(
                nn.Sequential(
                    nn.LayerNorm(4 * g, eps=cfg.ln_eps),
                    nn.Linear(4 * g, cfg.film_hidden),
                    nn.GELU(),
                    nn.Linear(cfg.film_hidden, k * cfg.width),
                )
                for _ in range(cfg.depth)
            )
        if cfg.init == "ours":  # the release keeps PyTorch's default init here
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    # --- pooled streams -------------------------------------------------------------------------
    def _proj(self, stream: str) -> nn.Linear:
        return self.w_old if stream == "prompt" else self.w_new

    def _uses(self, stream: str) -> bool:
        return self.cfg.stream in (stream, "both")

    def pool_from_means(self, means: Tensor, stream: str, lengths: Tensor | None = None) -> Tensor:
        """Cached masked means [B, L, H] -> projected [B, L, G] (zeros where lengths == 0)."""
        out = self._proj(stream)(means)
        if lengths is not None:
            out = out * (lengths > 0)[:, None, None].to(out.dtype)
        return out

    def pool_from_tokens(self, tokens: Tensor, lengths: Tensor, stream: str) -> Tensor:
        """Zero-padded tokens [B, L, S, H] + lengths [B] -> projected masked means [B, L, G]."""
        proj = self._proj(stream)(tokens)  # project first, then pool: the definition of the method
        b, n_levels, s, g = proj.shape
        pooled = _masked_mean(proj.transpose(1, 2).reshape(b, s, n_levels * g), lengths)
        return pooled.view(b, n_levels, g)

    def pooled(self, batch: Mapping[str, Tensor], stream: str) -> Tensor | None:
        """[B, L, G] for a used stream (means preferred, tokens otherwise); None if unused."""
        if not self._uses(stream):
            return None
        lengths = batch.get(f"{stream}_len")
        if f"{stream}_mean" in batch:
            return self.pool_from_means(batch[f"{stream}_mean"], stream, lengths)
        if f"{stream}_tokens" in batch:
            if lengths is None:
                raise ConfigMismatchError(f"batch has '{stream}_tokens' but no '{stream}_len'")
            return self.pool_from_tokens(batch[f"{stream}_tokens"], lengths, stream)
        raise ConfigMismatchError(
            f"guidance with stream={self.cfg.stream!r} needs batch['{stream}_mean'] (or '{stream}_tokens')"
        )

    # --- conditioning ---------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Tensor]) -> Guidance:
        # float32 even under autocast: the VLM residual stream has outliers in the thousands and the
        # fusion multiplies two projections (o * n), which can overflow fp16. The work is tiny.
        vlm = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()
               if k.startswith(("prompt_", "think_"))}
        device = self.gate.device.type
        with torch.autocast(device_type=device, enabled=False):
            if self.mode.tokens:
                return self._cross(vlm)
            return self._film(vlm)

    def _film(self, batch: Mapping[str, Tensor]) -> Guidance:
        old, new = self.pooled(batch, "prompt"), self.pooled(batch, "think")
        ref = old if old is not None else new
        old = torch.zeros_like(ref) if old is None else old
        new = torch.zeros_like(ref) if new is None else new
        gate = torch.tanh(self.gate)
        mods = []
        for i, (level, gen) in enumerate(zip(self.layer_levels, self.film, strict=True)):
            o, n = old[:, level], new[:, level]
            fused = torch.cat((o, n, (o - n).abs(), o * n), dim=-1)
            mods.append(gen(fused) * gate[i])
        return Guidance(mod=torch.stack(mods))

    def _cross(self, batch: Mapping[str, Tensor]) -> Guidance:
        streams = [s for s in ("prompt", "think") if self._uses(s)]
        for s in streams:
            for key in (f"{s}_tokens", f"{s}_len"):
                if key not in batch:
                    raise ConfigMismatchError(
                        f"conditioning={self.cfg.conditioning!r} needs batch['{key}'], which this cache lacks: it stores "
                        f"only pooled means. Re-cache with `tjepa cache --keep-tokens`, or use film/adaln."
                    )
        per_level: dict[int, tuple[Tensor, Tensor]] = {}
        for level in sorted(set(self.layer_levels)):
            parts, masks = [], []
            for j, s in enumerate(("prompt", "think")):
                if s not in streams:
                    continue
                tokens, lengths = batch[f"{s}_tokens"][:, level], batch[f"{s}_len"]
                proj = self._proj(s)(tokens)
                parts.append(proj if self.type_embed is None else proj + self.type_embed[j])
                masks.append(torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None])
            per_level[level] = (torch.cat(parts, dim=1), torch.cat(masks, dim=1))
        return Guidance(ctx=[per_level[lv] for lv in self.layer_levels], gate=torch.tanh(self.gate))
