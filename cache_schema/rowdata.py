"""`RowData` (everything one video contributes to the store) and its checked conversion to stored arrays.

The store promises that a done row is complete, finite and causal, so `encode_row` checks before
anything is written and raises `RowDataError` (the caller marks that video failed and goes on).
Values must also fit their stored dtype: float16 V-JEPA latents, float32 means and targets, and the
per-token VLM states as bfloat16 bit patterns (uint16), which keep float32's range; `decode_row`
hands tokens back as float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tjepa.cache_schema.bf16 import BF16_MAX, count_non_finite_bits, from_bf16_bits, to_bf16_bits
from tjepa.cache_schema.layout import BFLOAT16, ArraySpec, StoreLayout

TARGET_FIELDS = ("joints_past", "joints_future", "valid_past", "valid_future", "cam_past", "cam_future",
                 "intrinsics")


class RowDataError(ValueError):
    """One video's data does not fit the store (wrong shape, non-finite, non-causal indices, ...)."""


@dataclass
class RowData:
    """One video's row. Targets are None for plain videos; tokens None unless the layout keeps them.

    Arrays may be numpy arrays or anything `np.asarray` accepts (CPU torch tensors included).
    `think_ids` may be unpadded (length think_len) or padded with -1 to max_new_tokens; token arrays
    may hold exactly the used tokens or be zero padded to capacity.
    """

    n_frames: int
    fps: float
    width: int
    height: int
    past_idx: Any  # int [To]
    future_idx: Any  # int [Tf]
    vjepa_past: Any  # [To/tubelet, P, D]
    vjepa_future: Any  # [Tf/tubelet, P, D]
    prompt_mean: Any  # [L, H]
    think_mean: Any  # [L, H]
    prompt_len: int
    think_len: int
    think_ids: Any  # int [<= K]
    think_text: str
    prompt_tokens: Any = None  # [L, S, H]
    think_tokens: Any = None  # [L, k, H]
    joints_past: Any = None  # f32 [To, J, 3] world metres
    joints_future: Any = None  # f32 [Tf, J, 3]
    valid_past: Any = None  # bool [To, J]
    valid_future: Any = None  # bool [Tf, J]
    cam_past: Any = None  # f32 [To, 4, 4] camera-to-world
    cam_future: Any = None  # f32 [Tf, 4, 4]
    intrinsics: Any = None  # f32 [3, 3]
    thumb: Any = None  # uint8 [th, tw, 3]
    vjepa_windows: Any = None  # [(To+Tf)/tubelet, P, D], only when the layout has window_tubelets


class _Checker:
    def __init__(self, row: int):
        self.row = row

    def fail(self, msg: str):
        raise RowDataError(f"row {self.row}: {msg}")

    def array(self, value: Any, name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
        if value is None:
            self.fail(f"{name} is missing")
        a = np.asarray(value)
        if a.shape != shape:
            self.fail(f"{name} has shape {a.shape}, the store expects {shape}")
        if kind == "int" and not np.issubdtype(a.dtype, np.integer):
            self.fail(f"{name} must hold integers, got {a.dtype}")
        if kind == "bool" and a.dtype != np.bool_:
            self.fail(f"{name} must be boolean, got {a.dtype}")
        if kind == "uint8" and a.dtype != np.uint8:
            self.fail(f"{name} must be uint8, got {a.dtype}")
        return a

    def floats(self, value: Any, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        raw = self.array(value, name, shape, "float")
        bad = int((~np.isfinite(raw)).sum())
        if bad:
            self.fail(f"{name} has {bad} non-finite value(s)")
        if dtype == BFLOAT16:  # stored as bit patterns (see bf16.py)
            a = to_bf16_bits(raw)
            bad, top = count_non_finite_bits(a), BF16_MAX
        else:
            with np.errstate(over="ignore"):  # reported below, with a better message than numpy's
                a = raw.astype(dtype)
            bad, top = int((~np.isfinite(a)).sum()), float(np.finfo(dtype).max)
        if bad:
            self.fail(f"{name}: {bad} value(s) overflow {dtype} (max {top:g})")
        return a

    def scalar_int(self, value: Any, name: str, lo: int, hi: int | None = None) -> np.int32:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            self.fail(f"{name} must be an int, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            self.fail(f"{name}={value} outside [{lo}, {hi if hi is not None else 'inf'}]")
        return np.int32(value)

    def padded_tokens(self, value: Any, name: str, n_used: int, cap: int, L: int, H: int) -> np.ndarray:
        a = np.asarray(value) if value is not None else self.fail(f"{name} is missing (layout keeps tokens)")
        if a.ndim != 3 or a.shape[0] != L or a.shape[2] != H or a.shape[1] not in (n_used, cap):
            self.fail(f"{name} has shape {a.shape}, expected ({L}, {n_used} or {cap}, {H})")
        a = self.floats(a, name, a.shape, BFLOAT16)
        out = np.zeros((L, cap, H), np.uint16)  # bit pattern 0 is +0.0
        out[:, :n_used] = a[:, :n_used]
        if a.shape[1] == cap and np.any(a[:, n_used:] & np.uint16(0x7FFF)):  # -0.0 counts as zero
            self.fail(f"{name} is non-zero beyond its length {n_used}")
        return out


def encode_row(layout: StoreLayout, specs: list[ArraySpec], d: RowData, row: int) -> dict[str, np.ndarray]:
    """Field -> array at the stored shape and dtype, for every worker-written array of the layout."""
    c = _Checker(row)
    To, Tf, J = layout.n_past, layout.n_future, layout.n_joints
    L, H, K = layout.levels, layout.vlm_width, layout.max_new_tokens
    out: dict[str, Any] = {}
    out["n_frames"] = c.scalar_int(d.n_frames, "n_frames", 1)
    out["width"] = c.scalar_int(d.width, "width", 1)
    out["height"] = c.scalar_int(d.height, "height", 1)
    fps = float(d.fps)
    if not np.isfinite(fps) or fps <= 0:
        c.fail(f"fps={d.fps!r} must be finite and > 0")
    out["fps"] = np.float32(fps)
    past = c.array(d.past_idx, "past_idx", (To,), "int")
    future = c.array(d.future_idx, "future_idx", (Tf,), "int")
    problem = causality_problem(past, future, int(d.n_frames))
    if problem:
        c.fail(problem)
    out["past_idx"], out["future_idx"] = past.astype(np.int32), future.astype(np.int32)

    out["vjepa_past"] = c.floats(d.vjepa_past, "vjepa_past", (layout.past_tubelets, layout.patches,
                                                               layout.vjepa_width), "float16")
    out["vjepa_future"] = c.floats(d.vjepa_future, "vjepa_future", (layout.future_tubelets, layout.patches,
                                                                     layout.vjepa_width), "float16")
    out["prompt_mean"] = c.floats(d.prompt_mean, "prompt_mean", (L, H), "float32")
    out["think_mean"] = c.floats(d.think_mean, "think_mean", (L, H), "float32")
    smax = layout.max_prompt_tokens if layout.keep_tokens else None
    out["prompt_len"] = c.scalar_int(d.prompt_len, "prompt_len", 0, smax)
    out["think_len"] = c.scalar_int(d.think_len, "think_len", 0, K)
    n_think = int(d.think_len)
    ids = np.asarray(d.think_ids if d.think_ids is not None else c.fail("think_ids is missing"))
    if ids.ndim != 1 or not (n_think <= len(ids) <= K) or not np.issubdtype(ids.dtype, np.integer):
        c.fail(f"think_ids must be 1-D integers of length {n_think}..{K}, got {ids.dtype} {ids.shape}")
    ids = np.concatenate([ids, np.full(K - len(ids), -1)]).astype(np.int32)
    problem = think_ids_problem(ids, n_think)
    if problem:
        c.fail(problem)
    out["think_ids"] = ids
    if not isinstance(d.think_text, str):
        c.fail(f"think_text must be a str, got {type(d.think_text).__name__}")
    out["think_text"] = np.asarray(d.think_text, dtype=np.dtypes.StringDType())

    if layout.keep_tokens:
        out["prompt_tokens"] = c.padded_tokens(d.prompt_tokens, "prompt_tokens", int(d.prompt_len),
                                               layout.max_prompt_tokens, L, H)
        out["think_tokens"] = c.padded_tokens(d.think_tokens, "think_tokens", n_think, K, L, H)
    elif d.prompt_tokens is not None or d.think_tokens is not None:
        c.fail("token states were given but the store layout does not keep tokens (keep_tokens=False)")

    given = [f for f in TARGET_FIELDS if getattr(d, f) is not None]
    if given and not layout.with_targets:
        c.fail(f"targets given ({', '.join(given)}) but the store has no target arrays")
    if layout.with_targets and given and len(given) != len(TARGET_FIELDS):
        c.fail(f"incomplete targets: missing {sorted(set(TARGET_FIELDS) - set(given))}")
    if layout.with_targets and not given:  # a plain video in a labelled store: all invalid
        out.update(joints_past=np.zeros((To, J, 3), np.float32), joints_future=np.zeros((Tf, J, 3), np.float32),
                   valid_past=np.zeros((To, J), bool), valid_future=np.zeros((Tf, J), bool),
                   cam_past=np.zeros((To, 4, 4), np.float32), cam_future=np.zeros((Tf, 4, 4), np.float32),
                   intrinsics=np.zeros((3, 3), np.float32))
    elif layout.with_targets:
        for side, T in (("past", To), ("future", Tf)):
            valid = c.array(getattr(d, f"valid_{side}"), f"valid_{side}", (T, J), "bool")
            joints = c.array(getattr(d, f"joints_{side}"), f"joints_{side}", (T, J, 3), "float").astype(np.float32)
            finite = np.isfinite(joints).all(-1)
            if np.any(valid & ~finite):
                c.fail(f"joints_{side} has non-finite values at {int((valid & ~finite).sum())} valid joint(s)")
            out[f"joints_{side}"] = np.where(finite[..., None], joints, np.float32(0))  # 0 where invalid
            out[f"valid_{side}"] = valid
            out[f"cam_{side}"] = c.floats(getattr(d, f"cam_{side}"), f"cam_{side}", (T, 4, 4), "float32")
        out["intrinsics"] = c.floats(d.intrinsics, "intrinsics", (3, 3), "float32")

    if layout.with_windows:
        out["vjepa_windows"] = c.floats(d.vjepa_windows, "vjepa_windows", (
            layout.past_tubelets + layout.future_tubelets, layout.patches, layout.vjepa_width), "float16")
    elif d.vjepa_windows is not None:
        c.fail("window latents were given but the store layout has none (window_tubelets=0)")
    if layout.with_thumbs:
        out["thumb"] = c.array(d.thumb, "thumb", (*layout.thumb_size, 3), "uint8")
    elif d.thumb is not None:
        c.fail("a thumbnail was given but the store layout has none (thumb_size=None)")
    wanted = {s.field for s in specs} - {"video", "group", "status", "source_size", "source_mtime", "run"}
    if wanted != set(out):
        raise RuntimeError(f"encode_row is out of sync with the array table: {sorted(wanted ^ set(out))}")
    return out


def causality_problem(past: np.ndarray, future: np.ndarray, n_frames: int) -> str | None:
    """Why these frame indices break the causal split, or None."""
    for name, idx in (("past_idx", past), ("future_idx", future)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_frames):
            return f"{name} outside [0, {n_frames})"
        if np.any(np.diff(idx) <= 0):
            return f"{name} is not strictly increasing"
    if past.size and future.size and past.max() >= future.min():
        return f"max(past_idx)={int(past.max())} >= min(future_idx)={int(future.min())}: the past sees the future"
    return None


def think_ids_problem(ids: np.ndarray, think_len: int) -> str | None:
    """Why -1 padding of `think_ids` disagrees with `think_len`, or None."""
    if np.any(ids[:think_len] < 0):
        return f"think_ids has negative ids within think_len={think_len}"
    if np.any(ids[think_len:] != -1):
        return f"think_ids is not -1 padded after think_len={think_len}"
    return None


def decode_row(layout: StoreLayout, v: dict[str, Any]) -> RowData:
    """Stored arrays of one row -> RowData (padded shapes as stored)."""
    targets = {f: np.asarray(v[f]) for f in TARGET_FIELDS} if layout.with_targets else {}
    return RowData(
        n_frames=int(v["n_frames"]), fps=float(v["fps"]), width=int(v["width"]), height=int(v["height"]),
        past_idx=np.asarray(v["past_idx"]), future_idx=np.asarray(v["future_idx"]),
        vjepa_past=np.asarray(v["vjepa_past"]), vjepa_future=np.asarray(v["vjepa_future"]),
        prompt_mean=np.asarray(v["prompt_mean"]), think_mean=np.asarray(v["think_mean"]),
        prompt_len=int(v["prompt_len"]), think_len=int(v["think_len"]),
        think_ids=np.asarray(v["think_ids"]), think_text=str(v["think_text"]),
        prompt_tokens=from_bf16_bits(v["prompt_tokens"]) if layout.keep_tokens else None,
        think_tokens=from_bf16_bits(v["think_tokens"]) if layout.keep_tokens else None,
        thumb=np.asarray(v["thumb"]) if layout.with_thumbs else None,
        vjepa_windows=np.asarray(v["vjepa_windows"]) if layout.with_windows else None,
        **targets,
    )
