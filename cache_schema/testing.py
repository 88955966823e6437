"""Helpers for tests and demos: small layouts, random valid rows, and filled stores (real zarr)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tjepa.cache_schema.layout import StoreLayout
from tjepa.cache_schema.rowdata import RowData
from tjepa.cache_schema.store import FeatureStore

SMALL = StoreLayout(n_past=4, n_future=4, tubelet=2, patches=3, vjepa_width=8, levels=2, vlm_width=5,
                    max_new_tokens=3, thumb_size=(4, 6), rows_per_shard=2)


def small_layout(**overrides) -> StoreLayout:
    """A layout small enough for unit tests (every dimension distinct where that catches mix-ups)."""
    return replace(SMALL, **overrides)


def small_config(**overrides) -> dict:
    """A stand-in extraction config (nested, like the real one)."""
    cfg = {"vjepa": {"model": "tiny-vjepa", "revision": "r1"}, "vlm": {"model": "tiny-qwen", "layers": [0, 2],
           "max_new_tokens": 3, "prompt": "Describe this video."}, "sampling": {"n_past": 4, "n_future": 4}}
    cfg.update(overrides)
    return cfg


def random_row(layout: StoreLayout, rng: np.random.Generator, n_frames: int = 40,
               targets: bool | None = None) -> RowData:
    """A valid row: causal indices, finite features, -1 padded ids, targets if the layout has them."""
    L, H, K = layout.levels, layout.vlm_width, layout.max_new_tokens
    m = n_frames // 2
    past = np.linspace(0, m - 1, layout.n_past).astype(np.int64)
    future = np.linspace(m, n_frames - 1, layout.n_future).astype(np.int64)
    think_len = int(rng.integers(0, K + 1))
    prompt_len = int(rng.integers(1, layout.max_prompt_tokens + 1)) if layout.keep_tokens else int(rng.integers(1, 50))
    ids = np.full(K, -1, np.int32)
    ids[:think_len] = rng.integers(0, 1000, think_len)
    row = RowData(
        n_frames=n_frames, fps=float(rng.uniform(24, 60)), width=640, height=360,
        past_idx=past, future_idx=future,
        vjepa_past=rng.normal(size=(layout.past_tubelets, layout.patches, layout.vjepa_width)).astype(np.float16),
        vjepa_future=rng.normal(size=(layout.future_tubelets, layout.patches, layout.vjepa_width)).astype(np.float16),
        prompt_mean=rng.normal(size=(L, H)).astype(np.float32),
        think_mean=rng.normal(size=(L, H)).astype(np.float32),
        prompt_len=prompt_len, think_len=think_len, think_ids=ids,
        think_text="".join(rng.choice(list("abc déf✓ "), size=think_len * 3)),
    )
    if layout.keep_tokens:
        pt = np.zeros((L, layout.max_prompt_tokens, H), np.float16)
        pt[:, :prompt_len] = rng.normal(size=(L, prompt_len, H))
        tt = np.zeros((L, K, H), np.float16)
        tt[:, :think_len] = rng.normal(size=(L, think_len, H))
        row.prompt_tokens, row.think_tokens = pt, tt
    if layout.with_targets if targets is None else targets:
        J = layout.n_joints
        for side, T in (("past", layout.n_past), ("future", layout.n_future)):
            setattr(row, f"joints_{side}", rng.normal(0, 0.3, (T, J, 3)).astype(np.float32))
            setattr(row, f"valid_{side}", rng.random((T, J)) > 0.1)
            cam = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
            cam[:, :3, 3] = rng.normal(size=(T, 3))
            setattr(row, f"cam_{side}", cam)
        row.intrinsics = np.array([[500, 0, 320], [0, 500, 180], [0, 0, 1]], np.float32)
    if layout.with_thumbs:
        row.thumb = rng.integers(0, 256, (*layout.thumb_size, 3), dtype=np.uint8)
    return row


def make_store(path: str | Path, layout: StoreLayout | None = None, n: int = 5, done: int | None = None,
               seed: int = 0, config: dict | None = None) -> FeatureStore:
    """A store with `n` rows (videos `g{i%2}/v{i}.mp4`), the first `done` of them (default all) written."""
    layout = layout or small_layout()
    rng = np.random.default_rng(seed)
    store = FeatureStore.create(path, layout, config or small_config(), {"code_version": "test"})
    rows = store.add_rows([f"g{i % 2}/v{i}.mp4" for i in range(n)], [f"g{i % 2}" for i in range(n)],
                          [1000 + i for i in range(n)], [1.7e9 + i for i in range(n)])
    k = n if done is None else done
    if k:
        store.write_rows(list(rows[:k]), [random_row(layout, rng) for _ in range(k)])
    return store
