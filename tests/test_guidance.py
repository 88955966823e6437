"""PyramidGuidance: level mapping, means == tokens, streams, gates, cross-attention inputs."""

from __future__ import annotations

import pytest
import torch

from tjepa.errors import ConfigMismatchError
from tjepa.train.config import preset
from tjepa.train.guidance import PyramidGuidance, level_map
from tjepa.train.model import random_batch


def _open_gates(g: PyramidGuidance) -> None:
    with torch.no_grad():
        g.gate.copy_(torch.linspace(0.3, 1.2, g.gate.numel()))


def test_level_map_pyramid_and_fixed_modes():
    m = level_map(12, 8, "all")
    # round(i * 7 / 11): shallow predictor layers read shallow VLM layers, deep read deep.
    assert m == [round(i * 7 / 11) for i in range(12)]
    assert m[0] == 0 and m[-1] == 7 and all(a <= b for a, b in zip(m, m[1:], strict=False))
    assert set(m) == set(range(8))  # every captured level is used
    assert level_map(12, 8, "last") == [7] * 12
    assert level_map(12, 8, "mid") == [4] * 12
    assert level_map(1, 8, "all") == [7]


def test_means_path_equals_tokens_path():
    cfg = preset("tiny")
    torch.manual_seed(0)
    g = PyramidGuidance(cfg).eval()
    _open_gates(g)
    batch = random_batch(cfg, batch_size=3, tokens=(7, 5), seed=1)
    batch["think_len"][1] = 0  # an empty thinking stream for one sample
    batch["think_tokens"][1] = 0.0
    batch["think_mean"][1] = 0.0
    from_tokens = {k: v for k, v in batch.items() if not k.endswith("_mean")}
    for stream in ("prompt", "think"):
        a = g.pool_from_means(batch[f"{stream}_mean"], stream, batch[f"{stream}_len"])
        b = g.pool_from_tokens(batch[f"{stream}_tokens"], batch[f"{stream}_len"], stream)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert g.pool_from_tokens(batch["think_tokens"], batch["think_len"], "think")[1].abs().max() == 0
    mod_means, mod_tokens = g(batch).mod, g(from_tokens).mod
    assert mod_means.abs().max() > 1e-3  # gates are open: the comparison is not 0 == 0
    torch.testing.assert_close(mod_means, mod_tokens, rtol=1e-5, atol=1e-6)


def test_zero_gate_gives_exactly_zero_modulation_but_gate_gets_gradient():
    cfg = preset("tiny")
    g = PyramidGuidance(cfg)
    mod = g(random_batch(cfg)).mod
    assert mod.shape == (cfg.depth, 2, 2 * cfg.width)
    assert torch.equal(mod, torch.zeros_like(mod))
    torch.sum(mod * torch.randn_like(mod)).backward()  # zero at init, yet the gate must train
    assert g.gate.grad.abs().min() > 0


@pytest.mark.parametrize("stream,unused", [("prompt", "think_mean"), ("think", "prompt_mean")])
def test_unused_stream_contributes_nothing(stream, unused):
    cfg = preset("tiny", stream=stream)
    g = PyramidGuidance(cfg).eval()
    _open_gates(g)
    batch = random_batch(cfg, seed=2)
    other = dict(batch, **{unused: batch[unused] * 5 + 1})
    assert torch.equal(g(batch).mod, g(other).mod)
    del other[unused]  # not even needed
    assert torch.equal(g(batch).mod, g(other).mod)
    used = "prompt_mean" if unused == "think_mean" else "think_mean"
    assert not torch.equal(g(batch).mod, g(dict(batch, **{used: batch[used] + 1})).mod)


def test_last_level_mode_reads_only_the_last_level():
    cfg = preset("tiny", level_mode="last")
    g = PyramidGuidance(cfg).eval()
    _open_gates(g)
    batch = random_batch(cfg, seed=3)
    changed = dict(batch, prompt_mean=batch["prompt_mean"].clone(), think_mean=batch["think_mean"].clone())
    changed["prompt_mean"][:, :-1] += 3.0
    changed["think_mean"][:, :-1] -= 2.0
    assert torch.equal(g(batch).mod, g(changed).mod)
    changed["prompt_mean"][:, -1] += 1.0
    assert not torch.equal(g(batch).mod, g(changed).mod)


def test_guidance_stays_float32_under_autocast():
    cfg = preset("tiny")
    g = PyramidGuidance(cfg)
    _open_gates(g)
    batch = random_batch(cfg)
    ref = g(batch).mod
    half = {k: v.bfloat16() if v.is_floating_point() else v for k, v in batch.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mod = g(half).mod
    assert mod.dtype == torch.float32
    torch.testing.assert_close(mod, g(half).mod)  # autocast has no effect inside
    assert (mod - ref).abs().max() < 0.02 * ref.abs().max()  # only the inputs' rounding differs


def test_adaln_generates_four_modulations():
    cfg = preset("tiny", conditioning="adaln")
    mod = PyramidGuidance(cfg)(random_batch(cfg)).mod
    assert mod.shape == (cfg.depth, 2, 4 * cfg.width)


def test_crossattn_context_and_missing_tokens_error():
    cfg = preset("tiny", conditioning="crossattn")
    g = PyramidGuidance(cfg)
    batch = random_batch(cfg, tokens=(6, 4), seed=4)
    out = g(batch)
    assert out.mod is None and len(out.ctx) == cfg.depth and out.gate.shape == (cfg.depth,)
    tokens, mask = out.ctx[0]
    assert tokens.shape == (2, 6 + 4, cfg.guidance_width)
    expect = torch.cat([torch.arange(6)[None] < batch["prompt_len"][:, None],
                        torch.arange(4)[None] < batch["think_len"][:, None]], dim=1)
    assert torch.equal(mask, expect)
    means_only = {k: v for k, v in batch.items() if not k.endswith(("_tokens", "_len"))}
    with pytest.raises(ConfigMismatchError, match=r"prompt_tokens.*--keep-tokens"):
        g(means_only)


def test_paper_guidance_parameter_count():
    cfg = preset("paper")
    g = PyramidGuidance(cfg)
    n = sum(p.numel() for p in g.parameters())
    G, H, W, hid = cfg.guidance_width, cfg.vlm_width, cfg.width, cfg.film_hidden
    per_layer = 2 * 4 * G + (4 * G * hid + hid) + (hid * 2 * W + 2 * W)
    assert n == 2 * H * G + cfg.depth * (per_layer + 1)
    assert 15e6 < n < 17e6  # published: ~16 M
