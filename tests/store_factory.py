"""Tiny feature stores, written through `tjepa.cache_schema.FeatureStore` (so paths, dtypes, chunking,
sharding and attributes are exactly the real ones), filled with random but *learnable* data (no
encoders or videos needed).

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

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr

from tjepa.cache_schema.layout import StoreLayout
from tjepa.cache_schema.store import DONE, FAILED, FeatureStore, RowData

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
    status: tuple[int, ...] = field(default_factory=tuple)  # per row 0/1/2; default all done
    rows_per_shard: int = 4
    window_tubelets: int = 0  # > 0: also vjepa/windows (here the same per-tubelet latents)


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

    groups = [f"task_{i % cfg.groups:02d}" for i in range(n)]
    videos = [f"{g}/{i}.mp4" for i, g in enumerate(groups)]
    n_frames = rng.integers(4 * (to + tf), 8 * (to + tf), n)
    lat_past, lat_fut = latents(c_past), latents(c_fut)
    # other noise than the single-forward clips, so a test can tell which array a reader used
    wnoise = np.random.default_rng(cfg.seed + 1).normal(0, cfg.noise, (n, (to + tf) // tb, p, d))
    windows = (np.concatenate([lat_past, lat_fut], axis=1) + wnoise).astype(np.float16)
    layout = StoreLayout(n_past=to, n_future=tf, tubelet=tb, patches=p, vjepa_width=d, levels=L, vlm_width=h,
                         max_new_tokens=k, with_targets=cfg.with_targets, keep_tokens=cfg.keep_tokens,
                         max_prompt_tokens=cfg.prompt_tokens_max if cfg.keep_tokens else 0, thumb_size=(6, 8),
                         rows_per_shard=cfg.rows_per_shard, window_tubelets=cfg.window_tubelets)
    config = {"sampling": {"n_past": to, "n_future": tf},  # shaped like stage one's extraction config
              "encoders": {"preset": "factory", "layers": list(cfg.layers), "max_new_tokens": k,
                           "keep_tokens": cfg.keep_tokens},
              "factory": {k_: (list(v) if isinstance(v, tuple) else v) for k_, v in asdict(cfg).items()}}
    if path.exists():
        shutil.rmtree(path)
    store = FeatureStore.create(path, layout, config, {"writer": "tests/store_factory.py"})
    rows = store.add_rows(videos, groups, [1000 + i for i in range(n)], [1.7e9 + i for i in range(n)])
    status = list(cfg.status) if cfg.status else [DONE] * n
    datas, done_rows = [], []
    for i in range(n):
        if status[i] != DONE:
            continue
        m = int(n_frames[i])
        r = RowData(
            n_frames=m, fps=30.0, width=64, height=48,
            past_idx=np.linspace(0, m // 2 - 1, to).astype(np.int64),
            future_idx=np.linspace(m // 2, m - 1, tf).astype(np.int64),
            vjepa_past=lat_past[i], vjepa_future=lat_fut[i],
            prompt_mean=prompt_mean[i].astype(np.float32), think_mean=think_mean[i].astype(np.float32),
            prompt_len=int(prompt_len[i]), think_len=int(think_len[i]),
            think_ids=np.full(int(think_len[i]), 7, np.int32), think_text="hmm",
            thumb=rng.integers(0, 255, (6, 8, 3)).astype(np.uint8),
            vjepa_windows=windows[i] if cfg.window_tubelets else None)
        if cfg.keep_tokens:  # tokens whose masked mean is the stored mean
            r.prompt_tokens = np.repeat(prompt_mean[i][:, None], prompt_len[i], axis=1).astype(np.float16)
            r.think_tokens = np.repeat(think_mean[i][:, None], think_len[i], axis=1).astype(np.float16)
        if cfg.with_targets:
            r.joints_past, r.joints_future, r.valid_past, r.valid_future = jp[i], jf[i], vp[i], vf[i]
            r.cam_past, r.cam_future = np.repeat(cam[i][None], to, 0), np.repeat(cam[i][None], tf, 0)
            r.intrinsics = np.array([[50, 0, 32], [0, 50, 24], [0, 0, 1]], np.float32)
        datas.append(r)
        done_rows.append(int(rows[i]))
    store.write_rows(done_rows, datas)  # data first, statuses last (the store's own rule)
    for i in range(n):
        if status[i] == FAILED:
            store.mark_failed(int(rows[i]), videos[i], "factory: marked failed")
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
