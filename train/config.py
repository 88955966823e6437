"""Stage-two model configuration: one frozen dataclass and its presets.

`paper`: the published sizes with our components; `tiny`: CPU-sized; `release`: the paper sizes
with every component as the authors' release code builds it (like-for-like comparisons);
`tiny-release`: the tiny sizes with the release's components. Input dimensions come from the store
(`ModelConfig.from_store_layout(store.layout)`); everything else is the published architecture
(docs/method.md sections 4-6, 11) or one of its ablations (section 8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tjepa.config_io import ConfigMixin, check_keys, converted, field_names, from_saved
from tjepa.errors import ConfigError, StoreFormatError

VARIANTS = ("thinkjepa", "jepa", "vlm")
STREAMS = ("prompt", "think", "both")
LEVEL_MODES = ("all", "last", "mid")
ATTENTIONS = ("auto", "sdpa_per_frame", "flex", "dense")
STEP_POOLS = ("future", "pairs")
ANCHORS = ("none", "last_observed")
HEADS = ("ours", "release")
ROPES = ("thw", "frame_patch")
INITS = ("ours", "release")
COND_STYLES = ("ours", "release")
POSITIONS = ("slots", "frame_time")


@dataclass(frozen=True)
class ModelConfig(ConfigMixin):
    # --- inputs, as cached in the store ---
    vjepa_width: int = 1024  # D: V-JEPA 2 latent width
    grid_h: int = 16  # patch grid; P = grid_h * grid_w tokens per tubelet
    grid_w: int = 16
    tubelet: int = 2  # frames per V-JEPA tubelet (latents are repeated this many times per frame slot)
    vlm_width: int = 2048  # H: Qwen3-VL hidden width
    levels: int = 8  # L: captured VLM decoder layers
    n_past: int = 32  # observed frames the model is trained on (To); forward accepts any count
    n_future: int = 32  # future frames (Tf); used when a batch carries no vjepa_future to size by
    # --- predictor (V-JEPA-2-style) ---
    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.1  # on attention/MLP outputs (not on attention probabilities)
    drop_path: float = 0.1  # maximum; linear over depth from 0
    ln_eps: float = 1e-6
    rope_theta: float = 10000.0
    # --- pyramid guidance ---
    guidance_width: int = 384  # G: W_old / W_new project H -> G
    film_hidden: int = 512
    # --- trajectory head ---
    head_width: int = 1024
    head_heads: int = 8
    head_dropout: float = 0.1
    n_joints: int = 52
    # "future": step j reads predicted future frame j + the last observed frame (our default, see
    # head.py); "pairs": the published average of consecutive pairs of all frame slots.
    step_pool: str = "future"
    # "last_observed": the head predicts offsets from the last observed joint positions, so training
    # starts at the persistence baseline (learns with little data; the tiny preset's default).
    # "none": absolute joints in the last observed camera frame, as published (the paper preset).
    anchor: str = "none"
    # A learned, zero-initialised offset per future step (camera frame): the mean motion pattern is
    # then one parameter away instead of something the predicted latents must encode. Tiny preset only.
    step_bias: bool = False
    # Anchor offsets are multiplied by the elapsed fraction of the horizon at each step,
    # (t_j - t_last) / (t_end - t_last), from the frame indices: a step one frame after the split can
    # only move a frame's worth, so the first steps stay at persistence instead of inheriting the
    # whole horizon's motion from features that barely differ between steps. Tiny preset only; it
    # scales offsets from the anchor, so with anchor="none" (no offsets) it has nothing to act on.
    time_scaled_offsets: bool = False
    # RoPE time of each frame slot: "slots" (its index; right for uniform sampling) or "frame_time"
    # (its source frame, in steps of the horizon's sampling: needed when the observed clip is a dense
    # window, whose slots are not evenly spread; needs past_idx/future_idx in the batch).
    positions: str = "slots"
    # --- variant and ablations ---
    variant: str = "thinkjepa"  # thinkjepa | jepa (no guidance) | vlm (visual inputs zeroed)
    stream: str = "both"  # prompt | think | both: the unused stream contributes zeros
    level_mode: str = "all"  # all: pyramid l(i); last / mid: every layer reads that one level
    conditioning: str = "film"  # a registered mode (train/conditioning.py): film | adaln | crossattn (needs tokens)
    attention: str = "auto"  # auto | sdpa_per_frame | flex | dense (dense: reference, tests only)
    attn_frames_per_call: int = 1  # sdpa_per_frame: query frames per SDPA call (1 = mask-free)
    # --- release parity (train/release_head.py, train/rope_flat.py; README "ours vs release") ---
    head: str = "ours"  # ours: TrajectoryHead | release: their TrajectoryReadoutMLP (needs step_pool="pairs")
    rope: str = "thw"  # thw: 3-D (t, h, w) | frame_patch: their (frame, flattened patch index) layout
    init: str = "ours"  # release: zero mask token, guidance at PyTorch's default init (not trunc-normal)
    cond_style: str = "ours"  # release: their adaln (LN of the stream, then FiLM) and crossattn (pre-block MHA)
    # --- loss ---
    w_traj: float = 1.0
    w_latent: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("variant", VARIANTS),
            ("stream", STREAMS),
            ("level_mode", LEVEL_MODES),
            ("attention", ATTENTIONS),
            ("step_pool", STEP_POOLS),
            ("anchor", ANCHORS),
            ("head", HEADS),
            ("rope", ROPES),
            ("init", INITS),
            ("cond_style", COND_STYLES),
            ("positions", POSITIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")
        # Modes live in a registry (train/conditioning.py): imported here, not at the top, so reading a
        # config does not pull in the model code.
        from tjepa.train import conditioning

        try:
            conditioning.get(self.conditioning, self.cond_style)
        except ValueError as err:
            raise ValueError(f"ModelConfig.conditioning: {err}") from None
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.rope == "thw" and (self.width // self.heads) // 3 < 2:
            raise ValueError(f"head dim {self.width // self.heads} is too small for 3-D RoPE (needs >= 6)")
        if self.rope == "frame_patch" and (self.width // self.heads) < 4:
            raise ValueError(f"head dim {self.width // self.heads} is too small for (frame, patch) RoPE (needs >= 4)")
        if self.head_width % self.head_heads:
            raise ValueError(f"head_width {self.head_width} is not divisible by head_heads {self.head_heads}")
        for name in ("n_past", "n_future"):
            if getattr(self, name) % self.tubelet:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of tubelet {self.tubelet}")
        if self.step_pool == "pairs" and self.n_past != self.n_future:
            raise ValueError("step_pool='pairs' needs n_past == n_future (pairs of all slots -> future steps)")
        if self.head == "release" and (self.step_pool != "pairs" or self.step_bias):
            raise ValueError("head='release' pools frame pairs itself: it needs step_pool='pairs' and no step_bias")
        if self.attn_frames_per_call < 1:
            raise ValueError("attn_frames_per_call must be >= 1")

    @property
    def patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def guided(self) -> bool:
        return self.variant != "jepa"

    from_dict = classmethod(from_saved)  # a saved model config (checkpoint, run document)

    @classmethod
    def from_store_layout(
        cls, layout: Mapping[str, Any], preset: str | ModelConfig = "paper", **overrides: Any
    ) -> ModelConfig:
        """A preset with its input dimensions taken from the store's `layout` attribute.

        `layout` (a dict, or a StoreLayout) needs patches (an int, a perfect square, or [h, w]),
        vjepa_width, levels, vlm_width, tubelet, n_past, n_future; `grid` ([h, w]) and `n_joints` are
        used when present. Other keys are ignored.
        """
        if hasattr(layout, "to_dict"):
            layout = layout.to_dict()
        missing = [k for k in ("patches", "vjepa_width", "levels", "vlm_width", "tubelet", "n_past", "n_future")
                   if k not in layout]
        if missing:
            raise StoreFormatError(f"store layout lacks {missing}; got keys {sorted(layout)}")
        grid = layout.get("grid", layout["patches"])
        if isinstance(grid, int):
            side = math.isqrt(grid)
            if side * side != grid:
                raise StoreFormatError(f"layout patches={grid} is not a square grid; add layout['grid']=[h, w]")
            grid = (side, side)
        grid_h, grid_w = (int(g) for g in grid)
        if isinstance(layout["patches"], int) and grid_h * grid_w != layout["patches"]:
            raise StoreFormatError(f"layout grid {grid_h}x{grid_w} disagrees with patches={layout['patches']}")
        base = preset if isinstance(preset, ModelConfig) else PRESETS[preset]
        dims = dict(
            vjepa_width=int(layout["vjepa_width"]),
            grid_h=grid_h,
            grid_w=grid_w,
            tubelet=int(layout["tubelet"]),
            vlm_width=int(layout["vlm_width"]),
            levels=int(layout["levels"]),
            n_past=int(layout["n_past"]),
            n_future=int(layout["n_future"]),
        )
        if "n_joints" in layout:
            dims["n_joints"] = int(layout["n_joints"])
        return base.replace(**{**dims, **overrides})


PAPER = ModelConfig()

# Small enough for a training step on 2 CPU cores in milliseconds; deterministic (no dropout).
TINY = ModelConfig(
    vjepa_width=32,
    grid_h=4,
    grid_w=4,
    vlm_width=64,
    width=64,
    depth=2,
    heads=4,
    dropout=0.0,
    drop_path=0.0,
    guidance_width=32,
    film_hidden=64,
    head_width=64,
    head_heads=4,
    head_dropout=0.0,
    anchor="last_observed",
    step_bias=True,
    time_scaled_offsets=True,
)

# What makes a model the authors' release rather than ours, independent of its size.
RELEASE_COMPONENTS: dict[str, Any] = dict(head="release", step_pool="pairs", rope="frame_patch", init="release",
                                          cond_style="release", anchor="none", step_bias=False,
                                          time_scaled_offsets=False)
RELEASE = PAPER.replace(**RELEASE_COMPONENTS)
TINY_RELEASE = TINY.replace(**RELEASE_COMPONENTS)

PRESETS: dict[str, ModelConfig] = {"paper": PAPER, "tiny": TINY, "release": RELEASE, "tiny-release": TINY_RELEASE}


# Fields that describe the store's arrays: they come from the store layout, never from the user.
STORE_FIELDS = ("vjepa_width", "grid_h", "grid_w", "tubelet", "vlm_width", "levels", "n_past", "n_future",
                "n_joints")


def model_overrides(values: Mapping[str, Any] | None, where: str = "model") -> dict[str, Any]:
    """User settings of ModelConfig fields (a `model:` section, `--set model.KEY=...`), each converted
    to its field's type; an unknown key or a store-derived one is a ConfigError naming it."""
    values = dict(values or {})
    allowed = [f for f in field_names(ModelConfig) if f not in STORE_FIELDS]
    taken = sorted(set(values) & set(STORE_FIELDS))
    if taken:
        raise ConfigError(f"{where} keys {taken} come from the store layout and cannot be set; "
                          f"settable keys: {', '.join(sorted(allowed))}")
    check_keys(ModelConfig, values, where, allowed)
    return converted(ModelConfig, values, where)


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
