"""Tiny feature stores with the exact paths, dtypes and attributes of the store contract (schema v1),
filled with random but *learnable* data, written with plain zarr (no stage one needed).

The generative story (everything in the camera frame of the last observed frame unless noted):
- each video has two hand centres moving at a constant velocity; the 52 joints are a fixed hand
  template around their hand's centre;
- every V-JEPA tubelet latent is a fixed random linear map of the hand centres at that time (plus a
  little noise), so future latents are a linear extrapolation of past ones and the joints can be
  decoded from latents;
- `think_mean` encodes the velocity and `prompt_mean` the last centres (fixed random maps per level),
  so the VLM branch carries useful guidance;
- joints are stored in the world frame through a static per-video camera-to-world pose; a few joints
  are marked invalid (and zeroed, as the contract asks for non-finite labels).
The persistence baseline (last observed pose held) therefore has a clear, learnable error to beat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr

J = 52


@dataclass(frozen=True)
class FactoryConfig:
    n: int = 24
    groups: int = 6
    n_past: int = 8
    n_future: int = 8
    tubelet: int = 2
    patches: int = 4
    vjepa_width: int = 32
    layers: tuple[int, ...] = (0, 2, 4)
    vlm_width: int = 16
    max_new_tokens: int = 4
    prompt_tokens_max: int = 6
    with_targets: bool = True
    keep_tokens: bool = False
    speed: float = 0.02  # metres per future step (persistence error grows with it)
    spread: float = 0.1  # std of the hand centres in the camera frame (metres)
    noise: float = 0.01
    seed: int = 0
    status: tuple[int, ...] = field(default_factory=tuple)  # per-row override; default all done


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def write_store(path: str | Path, cfg: FactoryConfig = FactoryConfig()) -> Path:
    """Write a complete store at `path` (overwritten) and return the path."""
    path = Path(path)
    rng = np.random.default_rng(cfg.seed)
    fixed = np.random.default_rng(12345)  # the "world": shared maps, independent of the data seed
    n, to, tf, tb = cfg.n, cfg.n_past, cfg.n_future, cfg.tubelet
    p, d, h, k, L = cfg.patches, cfg.vjepa_width, cfg.vlm_width, cfg.max_new_tokens, len(cfg.layers)
    template = fixed.normal(0, 0.03, (J, 3)).astype(np.float32)
    latent_map = fixed.normal(0, 1.0, (p, d, 6)).astype(np.float32) * 2.0
    think_map = fixed.normal(0, 1.0, (L, h, 6)).astype(np.float32) * 20.0
    prompt_map = fixed.normal(0, 1.0, (L, h, 6)).astype(np.float32) * 2.0

    centre = rng.normal(0, cfg.spread, (n, 2, 3)).astype(np.float32) + np.array([0, 0, 0.4], np.float32)
    direction = rng.normal(0, 1, (n, 2, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    vel = (direction * rng.uniform(0.5, 1.5, (n, 2, 1)) * cfg.speed).astype(np.float32)
    t_past = np.arange(to, dtype=np.float32) - (to - 1)  # last observed step at 0
    t_fut = np.arange(1, tf + 1, dtype=np.float32)

    def centres(t: np.ndarray) -> np.ndarray:  # [N, T, 2, 3]
        return centre[:, None] + vel[:, None] * t[None, :, None, None]

    c_past, c_fut = centres(t_past), centres(t_fut)

    def joints_cam(c: np.ndarray) -> np.ndarray:  # [N, T, 52, 3]
        out = np.empty(c.shape[:2] + (J, 3), np.float32)
        out[:, :, :26] = c[:, :, 0:1] + template[None, None, :26]
        out[:, :, 26:] = c[:, :, 1:2] + template[None, None, 26:]
        return out

    def latents(c: np.ndarray) -> np.ndarray:  # tubelet = mean of its frames' states -> [N, T/tb, P, D]
        s = c.reshape(n, c.shape[1] // tb, tb, 6).mean(axis=2)
        lat = np.einsum("pdk,ntk->ntpd", latent_map, s)
        return (lat + rng.normal(0, cfg.noise, lat.shape)).astype(np.float16)

    yaw = rng.uniform(-np.pi, np.pi, n)
    cam = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    for i in range(n):
        cam[i, :3, :3] = _rot_z(yaw[i])
        cam[i, :3, 3] = rng.normal(0, 0.5, 3)

    def to_world(jc: np.ndarray) -> np.ndarray:
        r, tr = cam[:, None, None, :3, :3], cam[:, None, None, :3, 3]
        return (np.einsum("ntjab,ntjb->ntja", np.broadcast_to(r, jc.shape[:3] + (3, 3)), jc) + tr).astype(np.float32)

    jp, jf = to_world(joints_cam(c_past)), to_world(joints_cam(c_fut))
    vp, vf = rng.random((n, to, J)) > 0.02, rng.random((n, tf, J)) > 0.02
    jp[~vp], jf[~vf] = 0.0, 0.0

    v6, c6 = vel.reshape(n, 6), c_past[:, -1].reshape(n, 6)
    think_mean = np.einsum("lhk,nk->nlh", think_map, v6) + rng.normal(0, cfg.noise, (n, L, h))
    prompt_mean = np.einsum("lhk,nk->nlh", prompt_map, c6) + rng.normal(0, cfg.noise, (n, L, h))
    think_len = rng.integers(1, k + 1, n).astype(np.int32)
    prompt_len = rng.integers(2, cfg.prompt_tokens_max + 1, n).astype(np.int32)

    groups = np.array([f"task_{i % cfg.groups:02d}" for i in range(n)])
    videos = np.array([f"{g}/{i}.mp4" for i, g in enumerate(groups)])
    n_frames = rng.integers(4 * (to + tf), 8 * (to + tf), n).astype(np.int32)
    past_idx = np.stack([np.linspace(0, m // 2 - 1, to).astype(np.int32) for m in n_frames])
    fut_idx = np.stack([np.linspace(m // 2, m - 1, tf).astype(np.int32) for m in n_frames])

    layout = {"n_past": to, "n_future": tf, "tubelet": tb, "patches": p, "vjepa_width": d,
              "levels": L, "vlm_width": h, "max_new_tokens": k, "with_targets": cfg.with_targets,
              "keep_tokens": cfg.keep_tokens}
    config = {"sampling": {"n_past": to, "n_future": tf},
              "thinker": {"model": "tiny", "layers": list(cfg.layers), "max_new_tokens": k},
              "vjepa": {"model": "tiny"}, "factory": asdict(cfg)}
    g = zarr.open_group(str(path), mode="w")
    g.attrs.update({
        "format": "tjepa-cache", "version": 1, "config": config, "layout": layout,
        "fingerprint": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "provenance": {"writer": "tests/store_factory.py"},
    })

    def put(name: str, data: np.ndarray, dtype: str | None = None) -> None:
        data = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
        chunks = (1,) + data.shape[1:] if data.ndim > 1 else (n,)
        arr = g.create_array(name, shape=data.shape, dtype=data.dtype if dtype != "str" else str,
                             chunks=chunks, compressors=None)
        arr[...] = data

    put("index/video", videos, "str")
    put("index/group", groups, "str")
    put("index/n_frames", n_frames)
    put("index/fps", np.full(n, 30.0, np.float32))
    put("index/width", np.full(n, 64, np.int32))
    put("index/height", np.full(n, 48, np.int32))
    put("index/source_size", rng.integers(1000, 9000, n).astype(np.int64))
    put("index/source_mtime", np.full(n, 1.7e9, np.float64))
    put("index/past_idx", past_idx)
    put("index/future_idx", fut_idx)
    put("vjepa/past", latents(c_past))
    put("vjepa/future", latents(c_fut))
    put("vlm/prompt_mean", prompt_mean, "float32")
    put("vlm/think_mean", think_mean, "float32")
    put("vlm/prompt_len", prompt_len)
    put("vlm/think_len", think_len)
    put("vlm/think_ids", np.where(np.arange(k)[None] < think_len[:, None], 7, -1).astype(np.int32))
    put("vlm/think_text", np.array(["hmm" for _ in range(n)]), "str")
    if cfg.keep_tokens:
        pt = np.zeros((n, L, cfg.prompt_tokens_max, h), np.float16)
        tt = np.zeros((n, L, k, h), np.float16)
        for i in range(n):  # tokens whose masked mean is the stored mean
            pt[i, :, : prompt_len[i]] = prompt_mean[i][:, None]
            tt[i, :, : think_len[i]] = think_mean[i][:, None]
        put("vlm/prompt_tokens", pt)
        put("vlm/think_tokens", tt)
    if cfg.with_targets:
        put("targets/joints_past", jp)
        put("targets/joints_future", jf)
        put("targets/valid_past", vp)
        put("targets/valid_future", vf)
        put("targets/cam_past", np.repeat(cam[:, None], to, axis=1))
        put("targets/cam_future", np.repeat(cam[:, None], tf, axis=1))
        put("targets/intrinsics", np.tile(np.array([[50, 0, 32], [0, 50, 24], [0, 0, 1]], np.float32), (n, 1, 1)))
    put("thumbs/last_past", rng.integers(0, 255, (n, 6, 8, 3)).astype(np.uint8))
    status = np.ones(n, np.uint8) if not cfg.status else np.asarray(cfg.status, np.uint8)
    put("index/status", status)  # last, as the contract requires
    return path


def persistence_ade(path: str | Path, rows: Sequence[int]) -> float:
    """Sample-weighted masked ADE of holding the last observed pose over the given rows."""
    g = zarr.open_group(str(path), mode="r")
    rows = np.asarray(sorted(rows))
    jp = g["targets/joints_past"].oindex[rows][:, -1:]
    jf = g["targets/joints_future"].oindex[rows]
    vf = g["targets/valid_future"].oindex[rows]
    vp = g["targets/valid_past"].oindex[rows][:, -1:]
    v = vf & vp
    e = np.linalg.norm(jf - jp, axis=-1)
    return float(np.mean((e * v).sum(axis=(1, 2)) / v.sum(axis=(1, 2))))
