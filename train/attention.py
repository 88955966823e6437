"""Frame-causal self-attention (a token sees its own and earlier frames) and cross-attention to the
VLM tokens (ours inside each block; the release's before each block).

Tokens are frame-major: token i belongs to frame i // frame_len. Implementations of the mask:
- `sdpa_per_frame`: queries of frame f against keys of frames 0..f, one plain SDPA call per frame
  (exact and mask-free, so the fused kernels apply); `frames_per_call` > 1 groups frames into fewer
  calls with a small mask of shape [c*frame_len, (f+1)*frame_len] for the in-group causality.
- `flex`: flex_attention with a block mask (compiled on CUDA; eager on CPU, which materialises scores).
- `dense`: SDPA with the full [N, N] boolean mask. The reference for tests and benchmarks only:
  at the published size (16,384 tokens) the mask alone is 268 MB.
- `auto`: flex on CUDA; on CPU one dense-mask SDPA call up to DENSE_AUTO_MAX_TOKENS tokens (the tiny
  demo: with 16 tokens a frame, one call per frame pays its overhead 16-64 times per layer;
  `python -m benchmarks --only attention` has the demo's size as its first case), sdpa_per_frame
  above (where the [N, N] mask and the masked-out half of the scores cost more).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tjepa.train.rope import apply_rope

IMPLS = ("sdpa_per_frame", "flex", "dense")
DENSE_AUTO_MAX_TOKENS = 2048


def resolve_impl(impl: str, device: torch.device, n_tokens: int | None = None) -> str:
    if impl == "auto":
        if device.type == "cuda":
            return "flex"
        small = n_tokens is not None and n_tokens <= DENSE_AUTO_MAX_TOKENS
        return "dense" if small else "sdpa_per_frame"
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; choose auto or one of {IMPLS}")
    return impl


@functools.lru_cache(maxsize=8)
def dense_frame_causal_mask(n_tokens: int, frame_len: int, device: torch.device | None = None) -> Tensor:
    frame = torch.arange(n_tokens, device=device) // frame_len
    return frame[None, :] <= frame[:, None]  # [query, key]: True = may attend


def _sdpa_per_frame(q: Tensor, k: Tensor, v: Tensor, frame_len: int, frames_per_call: int) -> Tensor:
    n_frames = q.shape[-2] // frame_len
    outs = []
    for a in range(0, n_frames, frames_per_call):
        b = min(a + frames_per_call, n_frames)
        qs = q[..., a * frame_len : b * frame_len, :]
        ks, vs = k[..., : b * frame_len, :], v[..., : b * frame_len, :]
        if b - a == 1:
            outs.append(F.scaled_dot_product_attention(qs, ks, vs))
        else:
            qf = torch.arange(a * frame_len, b * frame_len, device=q.device) // frame_len
            kf = torch.arange(b * frame_len, device=q.device) // frame_len
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=kf[None, :] <= qf[:, None]))
    return torch.cat(outs, dim=-2)


@functools.lru_cache(maxsize=16)
def _block_mask(n_tokens: int, frame_len: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def frame_causal(b, h, q_idx, kv_idx):
        return kv_idx // frame_len <= q_idx // frame_len

    return create_block_mask(frame_causal, None, None, n_tokens, n_tokens, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q: Tensor, k: Tensor, v: Tensor, frame_len: int) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    mask = _block_mask(q.shape[-2], frame_len, str(q.device))
    fn = _compiled_flex() if q.device.type == "cuda" else flex_attention
    return fn(q, k, v, block_mask=mask)


def frame_causal_attention(q: Tensor, k: Tensor, v: Tensor, frame_len: int, impl: str = "auto",
                           frames_per_call: int = 1) -> Tensor:
    """q, k, v [B, heads, N, d] with N a multiple of frame_len -> [B, heads, N, d]."""
    n = q.shape[-2]
    if n % frame_len:
        raise ValueError(f"{n} tokens is not a whole number of frames of {frame_len} tokens")
    impl = resolve_impl(impl, q.device, n)
    if impl == "sdpa_per_frame":
        return _sdpa_per_frame(q, k, v, frame_len, frames_per_call)
    if impl == "flex":
        return _flex(q, k, v, frame_len)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dense_frame_causal_mask(n, frame_len, q.device))


class FrameCausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool, dropout: float, impl: str,
                 frames_per_call: int = 1, rotate: Callable[[Tensor, Tensor, Tensor], Tensor] = apply_rope):
        super().__init__()
        self.heads = heads
        self.rotate = rotate  # the RoPE layout's apply function, matching the predictor's angles
        self.impl = impl
        self.frames_per_call = frames_per_call
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        # Dropout on the output projection only: flex and the fused SDPA kernels take no
        # attention-probability dropout, and all implementations must compute the same function.
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, frame_len: int) -> Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
        out = frame_causal_attention(q, k, v.to(q.dtype), frame_len, self.impl, self.frames_per_call)
        return self.drop(self.proj(out.transpose(1, 2).flatten(2)))


class CrossAttention(nn.Module):
    """Queries from the predictor stream, keys/values from projected VLM tokens (no positions)."""

    def __init__(self, width: int, ctx_width: int, heads: int, qkv_bias: bool, dropout: float, eps: float):
        super().__init__()
        self.heads = heads
        self.norm_ctx = nn.LayerNorm(ctx_width, eps=eps)
        self.q = nn.Linear(width, width, bias=qkv_bias)
        self.kv = nn.Linear(ctx_width, 2 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """x [B, N, W], ctx [B, S, G], ctx_mask [B, S] bool (True = real token)."""
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = self.kv(self.norm_ctx(ctx)).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)
        # A sample with no tokens at all (empty stream) would give NaN rows: let it attend to
        # everything, then zero its output so it contributes nothing, as the FiLM path does.
        has_any = ctx_mask.any(dim=1)
        mask = ctx_mask | ~has_any[:, None]
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask[:, None, None, :])
        out = out * has_any[:, None, None, None].to(out.dtype)
        return self.drop(self.proj(out.transpose(1, 2).flatten(2)))


class PreBlockCrossAttention(nn.Module):
    """The release's cross-attention ablation: MHA(LN(x), M, M) over the projected VLM tokens M with a
    key-padding mask; the predictor adds it, gated by tanh(a_i), before block i. A plain
    nn.MultiheadAttention at PyTorch's default init (the release builds it after its init pass)."""

    def __init__(self, width: int, ctx_width: int, heads: int, dropout: float, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, kdim=ctx_width, vdim=ctx_width,
                                          batch_first=True)

    def forward(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        """x [B, N, W], ctx [B, S, G], ctx_mask [B, S] bool (True = real token) -> [B, N, W]."""
        # A sample without tokens would give NaN rows: unmask it, then zero its output (as CrossAttention).
        has_any = ctx_mask.any(dim=1)
        ignore = ~(ctx_mask | ~has_any[:, None])
        out, _ = self.attn(self.norm(x), ctx, ctx, key_padding_mask=ignore, need_weights=False)
        return out * has_any[:, None, None].to(out.dtype)
