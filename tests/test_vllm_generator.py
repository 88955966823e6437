"""`--generator vllm` against a stand-in `vllm` module (tests/vllm_standin; vLLM cannot install here).

The stand-in models vLLM 0.32/0.33's Qwen3-VL prompt expansion, processor loading and SamplingParams
semantics, and generates with the real tiny model, so the ids of both generators are comparable.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.presets import resolve_encoders
from tjepa.pipeline.encoders.thinker import Thinker
from tjepa.pipeline.encoders.vllm_generator import (
    VllmConfig,
    VllmGenerator,
    engine_model_len,
    engine_visible_devices,
)

STANDIN = Path(__file__).parent / "vllm_standin"


@pytest.fixture(scope="module")
def standin():
    sys.path.insert(0, str(STANDIN))
    sys.modules.pop("vllm", None)
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)
    sys.path.remove(str(STANDIN))


@pytest.fixture(scope="module")
def cfg(tiny_models):
    return resolve_encoders("tiny", models_dir=tiny_models)


@pytest.fixture(scope="module")
def thinker(cfg):
    return Thinker.load(cfg)


@pytest.fixture(scope="module")
def reference(standin, cfg):
    """The stand-in's HF-style video processor, from the checkpoint's JSON, stands in for HF's (torchvision)."""
    video_cfg = json.loads((Path(cfg.qwen_path) / "video_preprocessor_config.json").read_text())
    return lambda frames: standin.video_pixels(video_cfg, frames, {"do_resize": False, "do_sample_frames": False})


@pytest.fixture(scope="module")
def generator(cfg, reference):
    return VllmGenerator(cfg, VllmConfig(gpu_memory_utilization=0.3), n_frames=8, device="cpu", reference_pixels=reference)


def _clips(seed=0):
    rng = np.random.default_rng(seed)
    videos = [rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (7, 64, 40, 3), dtype=np.uint8)]
    return videos, [30.0, 29.97], [np.arange(8) * 3 + 5, np.arange(7) * 4]


def test_vllm_prompt_ids_and_greedy_ids_equal_ours(generator, thinker, one_thread):
    videos, fps, idx = _clips()
    prompts = thinker.prompts(videos, fps, idx)
    ours = thinker.generate_ids(prompts)
    theirs = generator.generate_ids(prompts, videos, thinker, fps, idx)  # raises on a prompt id mismatch
    assert [t.tolist() for t in theirs] == [o.tolist() for o in ours]
    assert generator._pixels_checked
    # Through the thinker: the same rows whichever generator made the ids.
    with_vllm = Thinker(thinker.model, thinker.tokenizer, thinker.cfg, generator=generator)
    for a, b in zip(thinker.think(videos, fps, idx), with_vllm.think(videos, fps, idx), strict=True):
        assert np.array_equal(a.think_ids, b.think_ids) and a.prompt_len == b.prompt_len
        np.testing.assert_allclose(a.think_mean, b.think_mean, atol=1e-4, rtol=1e-4)  # captured during generation vs teacher-forced
        np.testing.assert_allclose(a.prompt_mean, b.prompt_mean, atol=1e-4, rtol=1e-4)


def test_engine_settings(generator, cfg):
    kw = generator.llm.engine_kwargs
    assert "enable_chunked_prefill" not in kw and kw["gpu_memory_utilization"] == 0.3 and kw["enforce_eager"]
    assert kw["max_model_len"] == engine_model_len(cfg, VllmConfig(), 8) and kw["model"] == cfg.qwen_path
    assert kw["generation_config"] == "vllm" and kw["limit_mm_per_prompt"]["image"] == 0


def test_stopping_rule_is_transformers(generator, thinker, one_thread):
    videos, fps, idx = _clips(1)
    prompts = thinker.prompts(videos[:1], fps[:1], idx[:1])
    full = thinker.generate_ids(prompts)[0]
    stop_at = int(full[2])  # a token generated third: both must stop right after its first occurrence
    stopping = Thinker(thinker.model, thinker.tokenizer, thinker.cfg)
    stopping.eos_ids = [stop_at]
    ours = stopping.generate_ids(prompts)[0]
    theirs = generator.generate_ids(prompts, videos[:1], stopping, fps[:1], idx[:1])[0]
    assert theirs.tolist() == ours.tolist() and ours[-1] == stop_at and len(ours) <= 3


def test_missing_processor_configs_refused_before_the_engine(standin, cfg, tmp_path):
    d = tmp_path / "qwen"
    shutil.copytree(cfg.qwen_path, d)
    (d / "video_preprocessor_config.json").unlink()
    with pytest.raises(TjepaError, match=r"no video_preprocessor_config\.json.*tjepa build-models"):
        VllmGenerator(dataclasses.replace(cfg, qwen_path=str(d)), device="cpu")
    with pytest.raises(OSError, match="video_preprocessor_config"):  # what vLLM itself would do
        standin.LLM(model=str(d))


def test_model_len_checked_for_the_configuration(cfg):
    need = engine_model_len(cfg, VllmConfig(), 8)
    assert engine_model_len(cfg, VllmConfig(), 16) > need  # more frames, longer prompt
    with pytest.raises(TjepaError, match=rf"8 frames of 64 px \+ 16 thinking tokens need {need} positions.*too small"):
        engine_model_len(cfg, VllmConfig(max_model_len=need - 1), 8)
    with pytest.raises(TjepaError, match="more than the model's 8192"):
        engine_model_len(cfg, VllmConfig(), 2000)


def test_pixel_self_check_stops_on_a_different_patch_order(generator, cfg, reference, thinker, monkeypatch):
    def transposed(frames):  # an HF processor whose patch rows came out in another order
        pixels, grid = reference(frames)
        return pixels.flip(0), grid

    with pytest.raises(TjepaError, match="pixel_values_videos differ from ours"):  # at load: no engine started
        VllmGenerator(cfg, n_frames=8, device="cpu", reference_pixels=transposed)
    videos, fps, idx = _clips(2)
    prompts = thinker.prompts(videos, fps, idx)
    monkeypatch.setattr(generator, "_reference", transposed)  # the same check on the first real batch
    monkeypatch.setattr(generator, "_pixels_checked", False)
    with pytest.raises(TjepaError, match="pixel_values_videos differ from ours"):
        generator.generate_ids(prompts, videos, thinker, fps, idx)


def test_engine_pinned_to_the_workers_gpu(standin, cfg, reference, monkeypatch):
    assert engine_visible_devices("cpu", "3") is None
    assert engine_visible_devices("cuda:1", None) == "1" and engine_visible_devices("cuda", "5,6") == "5"
    assert engine_visible_devices("cuda:1", "4, 7") == "7"
    with pytest.raises(TjepaError, match="not among the visible GPUs"):
        engine_visible_devices("cuda:2", "4,7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    g = VllmGenerator(cfg, n_frames=8, device="cuda:1", reference_pixels=reference)
    assert g.llm.visible_devices == "7"  # what the engine process saw when it started


def test_sampling_params_built_per_call(generator, standin):
    sp = generator.sampling_params([5, 9])
    assert sp._all_stop_token_ids == {5, 9} and sp.ignore_eos and sp.max_tokens == 16
    assert generator.sampling_params([3])._all_stop_token_ids == {3}
