"""Qwen3-VL thinker on the tiny random model: prompt, greedy generation, layer capture, batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.capture import capture, encode_vision, pack
from tjepa.pipeline.encoders.presets import load_encoders, resolve_encoders
from tjepa.pipeline.encoders.thinker import Thinker


@pytest.fixture(scope="module")
def thinker(tiny_models):
    return Thinker.load(resolve_encoders("tiny", models_dir=tiny_models, keep_tokens=True))


def _videos(n, t=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, 48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(n)]


def _think(th, videos, **kw):
    return th.think(videos, fps=[30.0] * len(videos), frame_indices=[np.arange(len(v)) * 2 for v in videos], **kw)


def test_prompt_layout(thinker):
    (p,) = thinker.prompts(_videos(1, t=6), fps=[10.0], frame_indices=[np.array([0, 2, 4, 6, 8, 10])])
    mc = thinker.model.config
    tok = thinker.tokenizer
    assert p.timestamps == pytest.approx((0.1, 0.5, 0.9))
    assert p.text.startswith("<|im_start|>user\n<0.1 seconds><|vision_start|>")
    assert p.text.endswith("<|vision_end|>Describe this video.<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert p.text.count("<|vision_start|>") == 3 == p.text.count("<|vision_end|>")  # one framed run per group
    run = "<|vision_start|>" + "<|video_pad|>" * p.video.tokens_per_group + "<|vision_end|>"
    assert "<0.5 seconds>" + run + "<0.9 seconds>" + run in p.text
    ids = p.ids.tolist()
    assert ids == tok(p.text, add_special_tokens=False).input_ids
    assert ids.count(mc.video_token_id) == p.video.n_tokens == 3 * 4
    batch = pack([p], [np.array([5, 6])], thinker.pad_id, mc.video_token_id)
    assert batch.mm_token_type_ids[0].tolist() == [2 if i == mc.video_token_id else 0 for i in ids + [5, 6]]


def test_results_shapes_and_greedy_determinism(thinker):
    videos = _videos(2)
    a, b = _think(thinker, videos), _think(thinker, videos)
    k, lay, h = thinker.cfg.max_new_tokens, len(thinker.cfg.layers), 64
    for r, r2, p in zip(a, b, thinker.prompts(videos, [30.0] * 2, [np.arange(8) * 2] * 2), strict=True):
        assert r.prompt_mean.shape == r.think_mean.shape == (lay, h) and r.prompt_mean.dtype == np.float32
        assert r.prompt_len == len(p.ids) and 1 <= r.think_len <= k
        assert r.think_ids.shape == (k,) and r.think_ids.dtype == np.int32
        assert (r.think_ids[r.think_len :] == -1).all() and (r.think_ids[: r.think_len] >= 0).all()
        assert r.think_text == thinker.tokenizer.decode(r.think_ids[: r.think_len].tolist())
        assert r.prompt_tokens.shape == (lay, r.prompt_len, h) and r.prompt_tokens.dtype == np.float32  # never fp16: its range is too small
        assert r.think_tokens.shape == (lay, r.think_len, h)
        for f in ("prompt_mean", "think_mean", "think_ids", "prompt_tokens", "think_tokens"):
            assert np.array_equal(getattr(r, f), getattr(r2, f))  # bit-identical reruns
        # means are the masked means of the kept tokens
        np.testing.assert_allclose(r.prompt_mean, r.prompt_tokens.astype(np.float32).mean(1), atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(r.think_mean, r.think_tokens.astype(np.float32).mean(1), atol=2e-3, rtol=1e-3)
    assert not np.array_equal(a[0].think_ids, a[1].think_ids)  # tokens depend on the video


def test_generation_matches_argmax_and_states_cover_all_generated_tokens(thinker):
    (p,) = thinker.prompts(_videos(1, seed=3), [30.0], [np.arange(8)])
    gen = thinker.generate_ids([p])[0]
    seq = torch.cat([p.ids, torch.as_tensor(gen)])[None]
    mc = thinker.model.config
    with torch.no_grad():
        logits = thinker.model(
            input_ids=seq, attention_mask=torch.ones_like(seq), mm_token_type_ids=(seq == mc.video_token_id).long() * 2,
            pixel_values_videos=p.video.pixel_values, video_grid_thw=torch.tensor([p.video.grid_thw]),
        ).logits[0]
    s = len(p.ids)
    # teacher forcing reproduces greedy generation: each generated id is the argmax at the previous position
    assert logits[s - 1 : s - 1 + len(gen)].argmax(-1).tolist() == gen.tolist()
    (r,) = capture(thinker.model, thinker.tokenizer, [p], [gen], thinker.cfg.layers, thinker.cfg.max_new_tokens, True)
    assert r.think_len == len(gen) == r.think_tokens.shape[1]  # the last generated token has states too


def test_layer_semantics(thinker):
    (p,) = thinker.prompts(_videos(1, seed=4), [30.0], [np.arange(8)])
    gen = np.array([7, 8, 9])
    (r,) = capture(thinker.model, thinker.tokenizer, [p], [gen], thinker.cfg.layers, 16, keep_tokens=True)
    seq = torch.cat([p.ids, torch.as_tensor(gen)])[None]
    mc = thinker.model.config
    with torch.no_grad():
        hs = thinker.model.model(
            input_ids=seq, attention_mask=torch.ones_like(seq), mm_token_type_ids=(seq == mc.video_token_id).long() * 2,
            pixel_values_videos=p.video.pixel_values, video_grid_thw=torch.tensor([p.video.grid_thw]),
            output_hidden_states=True,
        ).hidden_states
    assert len(hs) == 9  # embeddings + 8 layers
    s = len(p.ids)
    for level, k in enumerate(thinker.cfg.layers[:-1]):  # layer k == hidden_states[k + 1] (not the last)
        torch.testing.assert_close(torch.from_numpy(r.prompt_tokens[level]).float(), hs[k + 1][0, :s], atol=5e-3, rtol=2e-3)
        torch.testing.assert_close(torch.from_numpy(r.think_tokens[level]).float(), hs[k + 1][0, s:], atol=5e-3, rtol=2e-3)
    # The last level is the residual stream BEFORE the final norm: HF's last entry is norm(it).
    last = torch.from_numpy(np.concatenate([r.prompt_tokens[-1], r.think_tokens[-1]], 0)).float()
    norm = thinker.model.model.language_model.norm
    torch.testing.assert_close(norm(last), hs[-1][0], atol=2e-2, rtol=2e-2)
    assert not torch.allclose(last, hs[-1][0], atol=1e-1)


def test_batched_equals_one_by_one(thinker):
    videos = _videos(3, seed=5)
    videos[1] = videos[1][:4]  # different lengths -> different prompt lengths -> left padding
    batched = _think(thinker, videos)
    for v, b in zip(videos, batched, strict=True):
        (one,) = _think(thinker, [v])
        assert np.array_equal(one.think_ids, b.think_ids) and one.prompt_len == b.prompt_len
        np.testing.assert_allclose(b.prompt_mean, one.prompt_mean, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(b.think_mean, one.think_mean, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(b.prompt_tokens.astype(np.float32), one.prompt_tokens.astype(np.float32), atol=2e-3, rtol=2e-3)
    assert batched[1].prompt_len < batched[0].prompt_len


def test_only_the_given_frames_matter(thinker):
    rng = np.random.default_rng(6)
    episode_a = rng.integers(0, 256, (16, 48, 64, 3), dtype=np.uint8)
    episode_b = episode_a.copy()
    episode_b[8:] = rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)  # a different "future"
    (a,) = _think(thinker, [episode_a[:8]])
    (b,) = _think(thinker, [episode_b[:8]])
    for f in ("prompt_mean", "think_mean", "think_ids", "prompt_tokens", "think_tokens"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    observed = episode_a[:8].copy()
    observed[3] = 255 - observed[3]
    (c,) = _think(thinker, [observed])
    assert not np.allclose(c.prompt_mean, a.prompt_mean, atol=1e-4)  # the observed frames do matter


def test_capture_path_with_given_ids(thinker):
    prompts = thinker.prompts(_videos(2, seed=7), [30.0] * 2, [np.arange(8)] * 2)
    generated = [np.array([3, 4, 5]), np.zeros(0, np.int64)]
    vision = encode_vision(thinker.model, prompts)
    with_vision = capture(thinker.model, thinker.tokenizer, prompts, generated, (0, 7), 4, False, vision=vision)
    fresh = capture(thinker.model, thinker.tokenizer, prompts, generated, (0, 7), 4, False)
    for r, s in zip(with_vision, fresh, strict=True):
        np.testing.assert_allclose(r.prompt_mean, s.prompt_mean, atol=1e-6)
        assert r.prompt_tokens is None and r.think_tokens is None and r.prompt_mean.shape == (2, 64)
    assert with_vision[0].think_ids.tolist() == [3, 4, 5, -1] and with_vision[0].think_len == 3
    assert with_vision[1].think_len == 0 and not with_vision[1].think_mean.any()  # empty stream -> zeros
    with pytest.raises(ValueError, match="exceed"):
        capture(thinker.model, thinker.tokenizer, prompts[:1], [np.arange(5)], (0,), 4)


def test_generation_stops_at_eos(thinker):
    (p,) = thinker.prompts(_videos(1, seed=8), [30.0], [np.arange(8)])
    first = int(thinker.generate_ids([p])[0][0])
    stopping = Thinker(thinker.model, thinker.tokenizer, thinker.cfg, generator=None)
    stopping.eos_ids = [first]
    (r,) = capture(stopping.model, stopping.tokenizer, [p], stopping.generate_ids([p]), stopping.cfg.layers, 16)
    assert r.think_len == 1 and r.think_ids[0] == first and (r.think_ids[1:] == -1).all()


def test_config_guards_and_vllm_without_gpu(tiny_models, thinker):
    cfg = resolve_encoders("tiny", models_dir=tiny_models)
    with pytest.raises(TjepaError, match="unknown generator"):
        load_encoders(cfg, generator="bogus")
    with pytest.raises(TjepaError, match="decoder layers"):
        Thinker(thinker.model, thinker.tokenizer, dataclasses.replace(cfg, layers=(0, 8)))
    from tjepa.pipeline.encoders.vllm_generator import require_vllm

    try:
        import vllm  # noqa: F401

        has_vllm = torch.cuda.is_available()
    except ImportError:
        has_vllm = False
    if not has_vllm:
        with pytest.raises(TjepaError, match=r"install the \[vllm\] extra on a GPU machine"):
            require_vllm()


def _assert_tight(actual, desired):
    """fp32 agreement up to summation order: 1e-5 of the array's scale (activations reach ~20 here)."""
    scale = max(1.0, float(np.abs(desired).max()))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-5 * scale)


def _teacher_forced(th, videos, generated):
    prompts = th.prompts(videos, [30.0] * len(videos), [np.arange(len(v)) * 2 for v in videos])
    return capture(th.model, th.tokenizer, prompts, generated, th.cfg.layers, th.cfg.max_new_tokens,
                   keep_tokens=True, pad_id=th.pad_id)


def _count_layer0(model):
    seen = []
    handle = model.model.language_model.layers[0].register_forward_hook(
        lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[:2]))
    return seen, handle


def _assert_streamed_equals_forced(th, videos, streamed):
    forced = _teacher_forced(th, videos, [r.think_ids[: r.think_len] for r in streamed])
    for s, f in zip(streamed, forced, strict=True):
        assert s.prompt_len == f.prompt_len and s.think_len == f.think_len == s.think_tokens.shape[1]
        _assert_tight(s.prompt_mean, f.prompt_mean)
        _assert_tight(s.think_mean, f.think_mean)
        np.testing.assert_allclose(s.prompt_tokens.astype(np.float32), f.prompt_tokens.astype(np.float32), atol=2e-3, rtol=1e-3)
        np.testing.assert_allclose(s.think_tokens.astype(np.float32), f.think_tokens.astype(np.float32), atol=2e-3, rtol=1e-3)


def test_capture_during_generation_equals_teacher_forced(thinker):
    """fp32 on CPU: the states recorded while generating equal one teacher-forced forward's, batched and
    left padded (two prompt lengths), then with a row that stops at EOS while the other goes on."""
    videos = _videos(2, seed=11)
    videos[1] = videos[1][:4]  # a shorter prompt: left padding in the generation batch
    seen, handle = _count_layer0(thinker.model)
    try:
        streamed = _think(thinker, videos)
    finally:
        handle.remove()
    _assert_streamed_equals_forced(thinker, videos, streamed)
    # every prompt and thinking position ran through the text model once (pads included)
    s_max, k_max = max(r.prompt_len for r in streamed), max(r.think_len for r in streamed)
    assert seen == [(2, s_max)] + [(2, 1)] * k_max

    ids0 = streamed[0].think_ids.tolist()
    j = next(j for j in range(1, k_max) if ids0[j] not in ids0[:j] + streamed[1].think_ids[: j + 1].tolist())
    stopping = Thinker(thinker.model, thinker.tokenizer, thinker.cfg)
    stopping.eos_ids = [ids0[j]]  # row 0 now ends at its (j+1)-th token, row 1 goes on
    early = _think(stopping, videos)
    assert early[0].think_len == j + 1 < early[1].think_len
    _assert_streamed_equals_forced(stopping, videos, early)
