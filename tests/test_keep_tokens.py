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


def _scale_embeddings(model) -> None:
    model.model.language_model.embed_tokens.weight.mul_(1e6)  # residual stream far beyond float16's 65504


def test_activations_beyond_float16_are_stored_not_failed(synth_root, tiny_models, tmp_path):
    """Issue 11.1/11.2 as seen: embeddings x1e6 with --keep-tokens ended in a traceback and exit 1 (fp16
    tokens overflowed). bfloat16 tokens keep the range: every row is done and decodes to finite floats."""
    from cache_helpers import altered_models, cache_args, copy_tree, run_cli

    from tjepa.cache_schema.store import FeatureStore

    models = altered_models(tiny_models, tmp_path / "models", qwen=_scale_embeddings)
    videos = copy_tree(synth_root, tmp_path / "videos", n=4)
    out = tmp_path / "store.zarr"
    res = run_cli(cache_args(videos, out, models, "--keep-tokens", "--think-tokens", "2"))
    assert res.returncode == 0, res.stdout + res.stderr
    store = FeatureStore.open(out)
    assert (store.status() == 1).all() and store.n_rows == 4
    row = store.read_row(0)
    assert row.prompt_tokens.dtype == np.float32 and np.isfinite(row.prompt_tokens).all()
    assert np.abs(row.prompt_tokens).max() > 65504
    used = row.prompt_tokens[:, : row.prompt_len].astype(np.float64)
    np.testing.assert_allclose(used.mean(1), row.prompt_mean, rtol=2.0**-7, atol=np.abs(used).max() * 2.0**-7)
    # issue 11.4: the run record and the worker's environment, as `tjepa cache` writes them
    import hashlib

    from transformers import AutoTokenizer

    from tjepa.pipeline.encoders.builders import QWEN_DIR
    from tjepa.pipeline.encoders.prompt import chat_template

    prov = store.provenance
    assert prov["batch_size"] == 2 and prov["compute_dtype"] == "float32" and prov["generator"] == "transformers"
    assert {"tjepa", "torch", "transformers", "zarr", "pyav"} <= set(prov["libraries"]) and prov["host"]
    (worker,) = prov["workers"]
    template = chat_template(AutoTokenizer.from_pretrained(models / QWEN_DIR), models / QWEN_DIR)
    assert worker["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    assert worker["device"] == "cpu" and worker["device_name"] and worker["libraries"] == prov["libraries"]
    assert store.array("index/run")[:4].tolist() == [0, 0, 0, 0]
