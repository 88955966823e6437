"""The store's geometry (`StoreLayout`) and the table of every array it holds (`ARRAYS`).

Schema v2. One row per video; every array's first dimension is the row ("video").
v2 stores the per-token VLM states as bfloat16 bit patterns in uint16 (array attribute
`dtype: "bfloat16"`; v1 had float16, which real checkpoints' massive activations overflow) and adds
`index/run`, the run that wrote each row.

Chunking. Two kinds, chosen so that exactly one process ever writes a given file:
- "row" arrays (the features, targets, thumbnails): one video per chunk, `rows_per_shard` videos
  per shard (zarr `shards=`), so a training reader fetches one chunk per video and a shard is one
  file per array per `rows_per_shard` videos.
- "block" arrays (index, lengths, ids, text, intrinsics: a few bytes per video): `rows_per_shard`
  videos per chunk, unsharded. The chunk boundaries coincide with the shard boundaries of the row
  arrays, so the worker that owns a shard also owns that shard's status chunk.
Measured: processes writing whole shards (or whole unsharded chunks) lose nothing; processes
interleaving writes inside one shard silently lose rows. Hence one writer per shard.

Compression, measured on 64 rows (ratio = raw bytes / bytes on disk; see cache_schema/README.md):
- fp16 V-JEPA latents and VLM tokens, fp32 VLM means: zstd-3 gives 1.06-1.09x and halves write
  throughput (1.2 -> 0.57 GB/s on 1 GiB of fp16); blosc-lz4 gives 1.00x. Stored raw.
- joints (f32, smooth) 1.22x, camera poses 1.32x, validity masks 12x, thumbnails 1.55x with
  blosc-zstd-3 + byte shuffle; these are small, so they are compressed. Index arrays and text
  likewise (zstd-3).
Strings are zarr v3 variable-length UTF-8 strings (numpy StringDType in memory): xarray.open_zarr
reads them (checked with zarr 3.1 / xarray 2026.9), and no pickle codec is involved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tjepa.cache_schema.joints import N_JOINTS
from tjepa.config_io import ConfigMixin

# Raw (no codec) for activations; compressed for everything small. Why: see the module docstring.
RAW = "raw"
BFLOAT16 = "bfloat16"  # a logical dtype: stored as its uint16 bit pattern (bf16.py)
SHUFFLE_ZSTD = "blosc-zstd3-shuffle"
ZSTD = "zstd3"


@dataclass(frozen=True)
class StoreLayout(ConfigMixin):
    """Every size the arrays of one store depend on (all rows share it)."""

    n_past: int  # sampled observed frames (To)
    n_future: int  # sampled future frames (Tf)
    tubelet: int  # frames per V-JEPA tubelet
    patches: int  # P: spatial patches per tubelet
    vjepa_width: int  # D
    levels: int  # L: captured VLM decoder layers
    vlm_width: int  # H
    max_new_tokens: int  # K: generated ("thinking") tokens
    with_targets: bool = True
    keep_tokens: bool = False  # also store per-token VLM states (cross-attention ablations)
    max_prompt_tokens: int = 0  # Smax for vlm/prompt_tokens
    n_joints: int = N_JOINTS
    thumb_size: tuple[int, int] | None = (96, 128)  # (th, tw); None: no thumbnails
    rows_per_shard: int = 8
    window_tubelets: int = 0  # > 0: also vjepa/windows, every run of this many tubelets its own forward

    def __post_init__(self) -> None:
        for name in ("n_past", "n_future", "tubelet", "patches", "vjepa_width", "levels", "vlm_width",
                     "n_joints", "rows_per_shard"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StoreLayout.{name} must be a positive int, got {value!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"StoreLayout.max_new_tokens must be an int >= 0, got {self.max_new_tokens!r}")
        for name, frames in (("n_past", self.n_past), ("n_future", self.n_future)):
            if frames % self.tubelet:
                raise ValueError(f"StoreLayout.{name}={frames} is not a multiple of tubelet={self.tubelet}")
        if not isinstance(self.window_tubelets, int) or self.window_tubelets < 0:
            raise ValueError(f"StoreLayout.window_tubelets must be an int >= 0, got {self.window_tubelets!r}")
        if self.window_tubelets and (self.past_tubelets % self.window_tubelets
                                     or self.future_tubelets % self.window_tubelets):
            # a window straddling the split would let an observed latent attend to a future frame
            raise ValueError(f"StoreLayout.window_tubelets={self.window_tubelets} must divide both the observed "
                             f"({self.past_tubelets}) and the future ({self.future_tubelets}) tubelet counts")
        if self.keep_tokens and self.max_prompt_tokens < 1:
            raise ValueError("StoreLayout.keep_tokens needs max_prompt_tokens >= 1 (the prompt-token capacity)")
        if self.thumb_size is not None:
            if isinstance(self.thumb_size, list):
                object.__setattr__(self, "thumb_size", tuple(self.thumb_size))
            if len(self.thumb_size) != 2 or min(self.thumb_size) < 1:
                raise ValueError(f"StoreLayout.thumb_size must be (height, width) >= 1, got {self.thumb_size!r}")

    @property
    def past_tubelets(self) -> int:
        return self.n_past // self.tubelet

    @property
    def future_tubelets(self) -> int:
        return self.n_future // self.tubelet

    @property
    def with_windows(self) -> bool:
        return self.window_tubelets > 0

    @property
    def with_thumbs(self) -> bool:
        return self.thumb_size is not None

    def sizes(self) -> dict[str, int]:
        """Values of the symbols used in `ArraySpec.shape`."""
        th, tw = self.thumb_size or (0, 0)
        return {
            "To": self.n_past, "Tf": self.n_future, "To/t": self.past_tubelets, "Tf/t": self.future_tubelets,
            "T/t": self.past_tubelets + self.future_tubelets,
            "P": self.patches, "D": self.vjepa_width, "L": self.levels, "H": self.vlm_width,
            "K": self.max_new_tokens, "Smax": self.max_prompt_tokens, "J": self.n_joints,
            "th": th, "tw": tw, "3": 3, "4": 4,
        }


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store. `shape` is symbolic and excludes the leading row dimension N."""

    path: str
    shape: tuple[str, ...]
    dtype: str  # numpy dtype name, "bfloat16" (stored as uint16 bits) or "str" (zarr v3 variable-length UTF-8)
    dims: tuple[str, ...]  # dimension names, including the leading "video"
    meaning: str
    chunking: str  # "row" (one video per chunk, sharded) or "block" (rows_per_shard per chunk)
    codec: str  # RAW, SHUFFLE_ZSTD or ZSTD
    fill: object  # what unwritten (pending) rows read as
    when: str | None = None  # None (always), "targets", "tokens", "thumbs" or "windows"

    @property
    def field(self) -> str:
        """The `RowData` field (or coordinator-owned index column) this array holds."""
        return _FIELD_NAMES.get(self.path, self.path.split("/", 1)[1])

    @property
    def stored_dtype(self) -> str:
        """The dtype zarr holds: bfloat16 is kept as its uint16 bit pattern."""
        return "uint16" if self.dtype == BFLOAT16 else self.dtype

    def decode(self, x):
        """Stored values -> what readers get (bfloat16 bits -> float32; everything else as stored)."""
        if self.dtype != BFLOAT16:
            return x
        from tjepa.cache_schema.bf16 import from_bf16_bits

        return from_bf16_bits(x)

    def row_shape(self, layout: StoreLayout) -> tuple[int, ...]:
        sizes = layout.sizes()
        return tuple(sizes[s] for s in self.shape)

    def chunks(self, layout: StoreLayout) -> tuple[int, ...]:
        lead = 1 if self.chunking == "row" else layout.rows_per_shard
        return (lead, *self.row_shape(layout))

    def shards(self, layout: StoreLayout) -> tuple[int, ...] | None:
        if self.chunking != "row":
            return None
        return (layout.rows_per_shard, *self.row_shape(layout))

    def row_nbytes(self, layout: StoreLayout) -> int | None:
        """Uncompressed bytes per row (None for variable-length strings)."""
        if self.dtype == "str":
            return None
        import numpy as np

        return int(math.prod(self.row_shape(layout)) * np.dtype(self.stored_dtype).itemsize)


def _a(path, shape, dtype, dims, meaning, chunking, codec, fill, when=None) -> ArraySpec:
    return ArraySpec(path, tuple(shape), dtype, ("video", *dims), meaning, chunking, codec, fill, when)


WINDOWS = "vjepa/windows"
_FIELD_NAMES = {"vjepa/past": "vjepa_past", "vjepa/future": "vjepa_future", WINDOWS: "vjepa_windows",
                "thumbs/last_past": "thumb"}
NAN = float("nan")
BF16_NAN_BITS = 0x7FC0  # unwritten bfloat16 rows read as NaN, like the float arrays
B, R = "block", "row"
# fmt: off
ARRAYS: tuple[ArraySpec, ...] = (
    _a("index/video", (), "str", (), "source video id: POSIX path relative to the videos root", B, ZSTD, ""),
    _a("index/group", (), "str", (), "group for disjoint splits (EgoDex task folder)", B, ZSTD, ""),
    _a("index/status", (), "uint8", (), "0 pending, 1 done, 2 failed; written last", B, ZSTD, 0),
    _a("index/source_size", (), "int64", (), "source file size in bytes (staleness check)", B, ZSTD, 0),
    _a("index/source_mtime", (), "float64", (), "source file mtime, seconds (staleness check)", B, ZSTD, NAN),
    _a("index/n_frames", (), "int32", (), "decoded frame count of the source video", B, ZSTD, 0),
    _a("index/fps", (), "float32", (), "source frame rate", B, ZSTD, NAN),
    _a("index/width", (), "int32", (), "source video width in pixels", B, ZSTD, 0),
    _a("index/height", (), "int32", (), "source video height in pixels", B, ZSTD, 0),
    _a("index/run", (), "int16", (), "run that wrote the row: 0 the creating run, k the k-th of attribute runs; -1 "
       "unwritten", B, ZSTD, -1),
    _a("index/past_idx", ("To",), "int32", ("past_frame",), "source frame index of each observed frame", B, ZSTD, -1),
    _a("index/future_idx", ("Tf",), "int32", ("future_frame",), "source frame index of each future frame", B, ZSTD, -1),
    _a("vjepa/past", ("To/t", "P", "D"), "float16", ("past_tubelet", "patch", "channel"),
       "V-JEPA 2 latents of the observed clip (own forward)", R, RAW, NAN),
    _a("vjepa/future", ("Tf/t", "P", "D"), "float16", ("future_tubelet", "patch", "channel"),
       "V-JEPA 2 latents of the future clip (own forward)", R, RAW, NAN),
    _a(WINDOWS, ("T/t", "P", "D"), "float16", ("tubelet", "patch", "channel"),
       "V-JEPA 2 latents of the observed then future frames, each run of window_tubelets tubelets encoded "
       "in its own forward (leak-free rollout windows)", R, RAW, NAN, "windows"),
    _a("vlm/prompt_mean", ("L", "H"), "float32", ("level", "hidden"),
       "masked mean of the prompt tokens' hidden states per captured layer", R, RAW, NAN),
    _a("vlm/think_mean", ("L", "H"), "float32", ("level", "hidden"),
       "masked mean of the generated tokens' hidden states per captured layer (zeros if none)", R, RAW, NAN),
    _a("vlm/prompt_len", (), "int32", (), "prompt tokens behind prompt_mean", B, ZSTD, 0),
    _a("vlm/think_len", (), "int32", (), "generated tokens behind think_mean", B, ZSTD, 0),
    _a("vlm/think_ids", ("K",), "int32", ("think_token",), "generated token ids, -1 padded after think_len", B, ZSTD, -1),
    _a("vlm/think_text", (), "str", (), "decoded generated text", B, ZSTD, ""),
    _a("vlm/prompt_tokens", ("L", "Smax", "H"), BFLOAT16, ("level", "prompt_token", "hidden"),
       "per-token prompt hidden states, zero padded after prompt_len", R, RAW, BF16_NAN_BITS, "tokens"),
    _a("vlm/think_tokens", ("L", "K", "H"), BFLOAT16, ("level", "think_token", "hidden"),
       "per-token generated hidden states, zero padded after think_len", R, RAW, BF16_NAN_BITS, "tokens"),
    _a("targets/joints_past", ("To", "J", "3"), "float32", ("past_frame", "joint", "xyz"),
       "hand joints at the observed frames, world frame, metres (0 where not finite)", R, SHUFFLE_ZSTD, NAN, "targets"),
    _a("targets/joints_future", ("Tf", "J", "3"), "float32", ("future_frame", "joint", "xyz"),
       "hand joints at the future frames, world frame, metres (0 where not finite)", R, SHUFFLE_ZSTD, NAN, "targets"),
    _a("targets/valid_past", ("To", "J"), "bool", ("past_frame", "joint"),
       "joint label is finite and usable", R, SHUFFLE_ZSTD, False, "targets"),
    _a("targets/valid_future", ("Tf", "J"), "bool", ("future_frame", "joint"),
       "joint label is finite and usable", R, SHUFFLE_ZSTD, False, "targets"),
    _a("targets/cam_past", ("To", "4", "4"), "float32", ("past_frame", "pose_row", "pose_col"),
       "camera-to-world pose at the observed frames", R, SHUFFLE_ZSTD, NAN, "targets"),
    _a("targets/cam_future", ("Tf", "4", "4"), "float32", ("future_frame", "pose_row", "pose_col"),
       "camera-to-world pose at the future frames", R, SHUFFLE_ZSTD, NAN, "targets"),
    _a("targets/intrinsics", ("3", "3"), "float32", ("k_row", "k_col"),
       "camera intrinsics of the source resolution", B, SHUFFLE_ZSTD, NAN, "targets"),
    _a("thumbs/last_past", ("th", "tw", "3"), "uint8", ("y", "x", "rgb"),
       "last observed frame resized to (th, tw); scale intrinsics by tw/width, th/height", R, SHUFFLE_ZSTD, 0,
       "thumbs"),
)
# fmt: on

# Field name (`ArraySpec.field`: the RowData / batch name) -> array path. Readers name arrays by field
# (`StoreReader.array("joints_future")`); only cache_schema spells paths.
PATHS: dict[str, str] = {spec.field: spec.path for spec in ARRAYS}

# Written by the coordinator (add_rows / update_source), never by workers.
COORDINATOR_FIELDS = ("video", "group", "source_size", "source_mtime")


def array_specs(layout: StoreLayout) -> list[ArraySpec]:
    """The arrays a store with this layout holds, in table order."""
    enabled = {None: True, "targets": layout.with_targets, "tokens": layout.keep_tokens,
               "thumbs": layout.with_thumbs, "windows": layout.with_windows}
    return [spec for spec in ARRAYS if enabled[spec.when]]


def spec_by_path(layout: StoreLayout) -> dict[str, ArraySpec]:
    return {spec.path: spec for spec in array_specs(layout)}


def markdown_table() -> str:
    """The README table of every array (symbolic shapes)."""
    when = {None: "", "targets": " (targets only)", "tokens": " (keep_tokens only)",
            "thumbs": " (thumbnails on)", "windows": " (window_tubelets > 0 only)"}
    lines = ["| path | shape | dtype | dimension names | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in ARRAYS:
        shape = "(" + ", ".join(("N", *s.shape)) + ("," if not s.shape else "") + ")"
        dtype = "bfloat16 (as uint16 bits)" if s.dtype == BFLOAT16 else s.dtype
        lines.append(f"| `{s.path}` | {shape} | {dtype} | {', '.join(s.dims)} | {s.meaning}{when[s.when]} |")
    return "\n".join(lines)
