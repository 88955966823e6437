"""Per-token VLM states (`--keep-tokens`): capacity follows the sampling (issue 11.5)."""

from __future__ import annotations

import numpy as np

from tjepa.pipeline.encoders.presets import resolve_encoders
from tjepa.pipeline.episode_io import SamplingConfig
from tjepa.pipeline.job import CacheJob, store_layout


def test_prompt_token_capacity_follows_the_configured_past_frames(tiny_models, tmp_path, one_thread):
    """48 observed frames make a longer prompt than 32; the store must have room for it."""
    from tjepa.pipeline.encoders.thinker import Thinker

    enc = resolve_encoders("tiny", models_dir=tiny_models, keep_tokens=True)
    job = CacheJob(videos=tmp_path, out=tmp_path / "s.zarr", encoders=enc, sampling=SamplingConfig(n_past=48))
    capacity = store_layout(job, with_targets=True).max_prompt_tokens
    thinker = Thinker.load(enc)
    frames = np.zeros((48, 64, 64, 3), np.uint8)
    late = 3000 * 30 + 2 * np.arange(48)  # timestamps near 3000 s: the longest "<t seconds>" text
    (prompt,) = thinker.prompts([frames], fps=[30.0], frame_indices=[late])
    short = CacheJob(videos=tmp_path, out=tmp_path / "t.zarr", encoders=enc, sampling=SamplingConfig(n_past=32))
    assert len(prompt.ids) > store_layout(short, with_targets=True).max_prompt_tokens  # 32 frames: too small
    assert len(prompt.ids) <= capacity
