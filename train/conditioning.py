"""Conditioning modes: how the pyramid guidance enters the predictor, one registered class per mode.

A mode says what the guidance produces for each predictor layer (pooled modulations `mod` of
`mod_chunks * width`, or the VLM tokens of the layer's level `ctx`) and what the predictor does with
it: submodules it adds to each block or to the predictor, and hooks at the four points of a pre-norm
block. `ModelConfig.conditioning` / `cond_style` choose a registered `(name, style)`; a new mode is
one subclass plus `register(...)`, nothing else to edit. Hooks receive the owning block or predictor,
so submodules keep the state-dict names and initialisation order they always had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from tjepa.train.attention import CrossAttention, PreBlockCrossAttention

if TYPE_CHECKING:
    from tjepa.train.config import ModelConfig


class Conditioning:
    """The base mode does nothing; subclasses override what their mode changes."""

    name: str | None = None  # set by `register`; what `Block.conditioning` reports
    tokens = False  # the guidance hands each layer its level's VLM tokens (ctx) instead of pooled `mod`
    mod_chunks = 2  # pooled modes: the guidance MLP emits mod_chunks * width per layer
    type_embed = False  # token modes: a learned embedding tells the prompt and thinking streams apart
    norm_affine = True  # the block's LayerNorms keep their own affine parameters
    in_block = True  # False: the blocks run unconditioned (everything happens before them)

    # --- building ---
    def build_block(self, block: nn.Module, cfg: ModelConfig) -> None:
        """Add submodules to a block (after its own, so the init order stays stable)."""

    def build_predictor(self, predictor: nn.Module, cfg: ModelConfig) -> None:
        """Add modules to the predictor; called after its init pass (they keep PyTorch's default init)."""

    # --- the predictor, before block i (mod / ctx / gate: that layer's guidance) ---
    def before_block(self, predictor: nn.Module, i: int, x: Tensor, mod: Tensor | None,
                     ctx: tuple[Tensor, Tensor] | None, gate: Tensor | None) -> Tensor:
        return x

    # --- inside a block ---
    def stream(self, block: nn.Module, x: Tensor, mod: Tensor | None) -> Tensor:
        """The residual stream as the block receives it."""
        return x

    def norm(self, block: nn.Module, h: Tensor, mod: Tensor | None, which: int) -> Tensor:
        """The output of norm1 (which=0, before attention) or norm2 (which=1, before the MLP)."""
        return h

    def after_attention(self, block: nn.Module, x: Tensor, ctx: tuple[Tensor, Tensor] | None,
                        gate: Tensor | None) -> Tensor:
        return x


_REGISTRY: dict[tuple[str, str], Conditioning] = {}


def register(name: str, mode: Conditioning, style: str = "ours") -> Conditioning:
    """Make `mode` selectable as `ModelConfig(conditioning=name, cond_style=style)`."""
    mode.name = name
    _REGISTRY[(name, style)] = mode
    return mode


def names() -> tuple[str, ...]:
    """Every registered conditioning name, in registration order."""
    return tuple(dict.fromkeys(n for n, _ in _REGISTRY))


def get(name: str, style: str = "ours") -> Conditioning:
    try:
        return _REGISTRY[(name, style)]
    except KeyError:
        styles = sorted(s for n, s in _REGISTRY if n == name)
        if styles:
            raise ValueError(f"conditioning {name!r} has no cond_style={style!r} operator; it has {styles}") from None
        raise ValueError(f"unknown conditioning {name!r}; choose one of {names()}") from None


def needs_tokens(name: str) -> bool:
    """Whether a mode reads the cached VLM tokens (the data loader must bring them)."""
    return any(mode.tokens for (n, _), mode in _REGISTRY.items() if n == name)


# --- the built-in modes (docs/method.md section 8; the release's operators: README "ours vs release") ---

def _modulate(h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return h * (1 + scale[:, None, :]) + shift[:, None, :]


class FiLM(Conditioning):
    """Scale and shift of the residual stream entering each block."""

    def stream(self, block, x, mod):
        return x if mod is None else _modulate(x, *mod.chunk(2, dim=-1))


class AdaLN(Conditioning):
    """The affine parameters of both block norms come from the guidance (4 x width)."""

    mod_chunks = 4
    norm_affine = False

    def norm(self, block, h, mod, which):
        if mod is None:
            return h
        parts = mod.chunk(4, dim=-1)
        return _modulate(h, parts[2 * which], parts[2 * which + 1])


class CrossAttn(Conditioning):
    """A gated cross-attention to the level's VLM tokens after self-attention, inside each block."""

    tokens = True
    type_embed = True

    def build_block(self, block, cfg):
        block.norm_cross = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        block.cross = CrossAttention(cfg.width, cfg.guidance_width, cfg.heads, cfg.qkv_bias, cfg.dropout, cfg.ln_eps)

    def after_attention(self, block, x, ctx, gate):
        if ctx is None:
            return x
        return x + block.drop_path(gate * block.cross(block.norm_cross(x), *ctx))


class ReleaseAdaLN(FiLM):
    """The release's AdaLN: a LayerNorm of the stream before each block, then the same FiLM."""

    def build_predictor(self, predictor, cfg):
        predictor.pre_norm = nn.ModuleList(nn.LayerNorm(cfg.width, eps=cfg.ln_eps) for _ in range(cfg.depth))

    def before_block(self, predictor, i, x, mod, ctx, gate):
        return x if mod is None else predictor.pre_norm[i](x)


class ReleaseCrossAttn(Conditioning):
    """The release's cross-attention: a gated MHA before each block; the blocks themselves run plain."""

    tokens = True
    in_block = False

    def build_predictor(self, predictor, cfg):
        predictor.pre_cross = nn.ModuleList(
            PreBlockCrossAttention(cfg.width, cfg.guidance_width, cfg.heads, cfg.dropout, cfg.ln_eps)
            for _ in range(cfg.depth))

    def before_block(self, predictor, i, x, mod, ctx, gate):
        return x if ctx is None else x + gate * predictor.pre_cross[i](x, *ctx)


register("film", FiLM())
register("film", FiLM(), style="release")
register("adaln", AdaLN())
register("adaln", ReleaseAdaLN(), style="release")
register("crossattn", CrossAttn())
register("crossattn", ReleaseCrossAttn(), style="release")

PLAIN = Conditioning()  # an unguided block (the jepa variant; the release's cross-attention blocks)
