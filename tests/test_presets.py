"""Presets, the fingerprinted EncoderConfig, offline model building and loading."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from tjepa.errors import InputError, TjepaError
from tjepa.pipeline.encoders.builders import (
    MARKER,
    QWEN_DIR,
    VJEPA_DIR,
    build_tiny_models,
    full_configs,
    make_models,
    tiny_configs,
)
from tjepa.pipeline.encoders.presets import PAPER_LAYERS, encoder_dims, resolve_encoders


def test_build_is_deterministic_and_fingerprint_is_location_free(tiny_models, tmp_path):
    again = build_tiny_models(tmp_path / "again", seed=0)
    other = build_tiny_models(tmp_path / "other", seed=1)
    a = resolve_encoders("tiny", models_dir=tiny_models)
    b = resolve_encoders("tiny", models_dir=again)
    c = resolve_encoders("tiny", models_dir=other)
    for sub in (VJEPA_DIR, QWEN_DIR):
        assert (tiny_models / sub / "model.safetensors").read_bytes() == (again / sub / "model.safetensors").read_bytes()
    assert a.to_dict() == b.to_dict() and a == b
    assert a.qwen_path != b.qwen_path  # loaded from different places ...
    assert str(tiny_models) not in json.dumps(a.to_dict())  # ... which the fingerprint never sees
    assert a.qwen_sha256 != c.qwen_sha256 and a.vjepa_sha256 != c.vjepa_sha256
    assert a.vjepa_model == a.qwen_model == "local" and a.qwen_revision is None


def test_round_trip_through_from_pretrained_offline(tiny_models):
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration, VJEPA2Model

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    vjepa, qwen = make_models(tiny_configs(), seed=0)
    v2 = VJEPA2Model.from_pretrained(tiny_models / VJEPA_DIR)
    q2 = Qwen3VLForConditionalGeneration.from_pretrained(tiny_models / QWEN_DIR)
    for ref, loaded in ((vjepa, v2), (qwen, q2)):
        sd = loaded.state_dict()
        assert set(sd) == set(ref.state_dict())
        assert all(torch.equal(t, sd[k]) for k, t in ref.state_dict().items())
    assert q2.config.text_config.num_hidden_layers == 8 and v2.config.crop_size == 64
    tok = AutoTokenizer.from_pretrained(tiny_models / QWEN_DIR)
    for name in ("video_token_id", "vision_start_token_id", "vision_end_token_id", "image_token_id"):
        assert tok.convert_ids_to_tokens(getattr(q2.config, name)).startswith("<|")
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids.count(q2.config.video_token_id) == 1 and tok.convert_tokens_to_ids("<think>") in ids
    assert tok.decode(ids) == text
    assert json.loads((tiny_models / MARKER).read_text())["preset"] == "tiny"


def test_tiny_preset_defaults(tiny_models):
    cfg = resolve_encoders("tiny", models_dir=tiny_models)
    d = cfg.to_dict()
    json.dumps(d)  # JSON-able
    assert "qwen_path" not in d and "vjepa_path" not in d
    assert cfg.layers == tuple(range(8)) and cfg.crop_size == 64 and cfg.resize_short == int(64 * 256 / 224)
    assert cfg.vlm_frame_size % 32 == 0 and cfg.greedy and cfg.max_new_tokens == 16 and not cfg.keep_tokens
    dims = encoder_dims(cfg)
    assert dims == {"tubelet": 2, "patches": 16, "vjepa_width": 48, "levels": 8, "vlm_width": 64,
                    "max_new_tokens": 16, "keep_tokens": False, "max_prompt_tokens": 0}
    assert encoder_dims(resolve_encoders("tiny", models_dir=tiny_models, keep_tokens=True))["max_prompt_tokens"] > 16 * 4


def test_tiny_preset_builds_into_an_empty_directory(tmp_path):
    cfg = resolve_encoders("tiny", models_dir=tmp_path / "fresh")
    assert (tmp_path / "fresh" / MARKER).is_file() and cfg.qwen_model == "local"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(TjepaError, match="not empty"):
        resolve_encoders("tiny", models_dir=tmp_path / "junk")


def test_pretrained_without_weights_fails_fast_and_says_what_to_do(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(TjepaError) as err:
        resolve_encoders("pretrained", cache_dir=tmp_path / "empty-hf-cache")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "hf download" in msg and ("Qwen/Qwen3-VL-2B-Thinking" in msg or "facebook/vjepa2-vitl-fpc64-256" in msg)
    assert "local model directory" in msg


def test_pretrained_with_local_directories_and_validation(tiny_models, tmp_path):
    v, q = tiny_models / VJEPA_DIR, tiny_models / QWEN_DIR
    with pytest.raises(TjepaError, match="within 0..7"):  # the paper's layer 27 does not exist in 8 layers
        resolve_encoders("pretrained", vjepa=v, qwen=q, vlm_frame_size=64)
    cfg = resolve_encoders("pretrained", vjepa=str(v), qwen=str(q), layers=[0, 7], vlm_frame_size=64, dtype="float32")
    assert cfg.qwen_model == "local" and cfg.layers == (0, 7) and cfg.preset == "pretrained"
    assert PAPER_LAYERS == (0, 4, 8, 12, 16, 20, 24, 27)
    with pytest.raises(TjepaError, match="multiple of patch"):
        resolve_encoders("pretrained", vjepa=v, qwen=q, layers=[0], vlm_frame_size=48)
    with pytest.raises(TjepaError, match="increasing"):
        resolve_encoders("pretrained", vjepa=v, qwen=q, layers=[3, 1], vlm_frame_size=64)
    with pytest.raises(InputError, match="does not exist"):
        resolve_encoders("pretrained", vjepa=v, qwen=str(tmp_path / "nope" / "qwen"), layers=[0])
    with pytest.raises(TjepaError, match="cannot take effect"):
        resolve_encoders("pretrained", vjepa=v, qwen=q, layers=[0], qwen_revision="abc")
    with pytest.raises(TjepaError, match="random-weight"):  # tiny models are never taken for pretrained ones
        resolve_encoders("pretrained", models_dir=tiny_models)
    with pytest.raises(TjepaError, match="unknown model preset"):
        resolve_encoders("huge")


def test_full_random_configs_have_the_real_sizes():
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, VJEPA2Config, VJEPA2Model

    cfgs = full_configs()
    with torch.device("meta"):
        vjepa = VJEPA2Model(VJEPA2Config(**cfgs["vjepa"]))
        qwen = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**cfgs["qwen"]))
    enc = sum(p.numel() for p in vjepa.encoder.parameters())
    assert 290e6 < enc < 330e6  # ViT-L/16: ~300 M
    n = sum(p.numel() for n_, p in qwen.named_parameters() if n_ != "lm_head.weight")  # tied to the embedding
    assert 1.9e9 < n < 2.3e9  # Qwen3-VL-2B
    tc = qwen.config.text_config
    assert (tc.hidden_size, tc.num_hidden_layers) == (2048, 28)
    assert (vjepa.config.hidden_size, vjepa.config.num_hidden_layers, vjepa.config.num_attention_heads) == (1024, 24, 16)


def test_build_models_cli(tmp_path):
    from typer.testing import CliRunner

    from tjepa.cli import app

    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["build-models", "--out", str(out), "--preset", "tiny", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / MARKER).read_text()) == {
        "format": "tjepa-models", "preset": "tiny", "seed": 3, "vjepa": VJEPA_DIR, "qwen": QWEN_DIR,
    }
    assert resolve_encoders("tiny", models_dir=out).qwen_sha256 != ""


def test_full_random_preset_path_in_bfloat16(tmp_path):
    """The full-random save/resolve/load path (bf16 weights), exercised with tiny sizes."""
    import numpy as np

    from tjepa.pipeline.encoders.builders import _save
    from tjepa.pipeline.encoders.presets import load_encoders

    with pytest.raises(TjepaError, match="no full-random models"):
        resolve_encoders("full-random", models_dir=tmp_path)
    _save(tmp_path, "full-random", 0, tiny_configs(), dtype=torch.bfloat16)
    with pytest.raises(TjepaError, match="within 0..7"):  # the real preset's paper layers need 28 layers
        resolve_encoders("full-random", models_dir=tmp_path, vlm_frame_size=64)
    cfg = resolve_encoders("full-random", models_dir=tmp_path, layers=[1, 6], vlm_frame_size=64, max_new_tokens=2)
    assert cfg.dtype == "bfloat16" and cfg.preset == "full-random"
    vjepa, thinker = load_encoders(cfg)
    assert thinker.model.dtype == torch.bfloat16 and vjepa.model.dtype == torch.bfloat16
    clip = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    assert vjepa.encode([clip]).shape == (1, 2, 16, 48)
    (r,) = thinker.think([clip], fps=[30.0])
    assert r.prompt_mean.shape == (2, 64) and np.isfinite(r.prompt_mean).all() and r.think_len <= 2
