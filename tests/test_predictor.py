"""GuidedPredictor: 3-D RoPE, frame-causal attention implementations, shapes, schedule, size."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from tjepa.train.attention import dense_frame_causal_mask, frame_causal_attention
from tjepa.train.config import preset
from tjepa.train.predictor import GuidedPredictor
from tjepa.train.rope import Rope3D, apply_rope, axis_dim, token_positions

IMPLS = [("sdpa_per_frame", 1), ("sdpa_per_frame", 3), ("flex", 1), ("dense", 1)]


@pytest.fixture(autouse=True)
def _quiet_eager_flex():
    with warnings.catch_warnings():  # eager flex on CPU warns that it is unfused; expected here
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield


def test_rope_preserves_norm_and_depends_on_relative_position_only():
    head_dim = 16
    rope = Rope3D(head_dim)
    assert axis_dim(head_dim) == 4  # 3 axes x 4 rotated channels, 4 channels pass through
    pos = token_positions(3, 2, 2)
    assert pos.shape == (12, 3) and pos[5].tolist() == [1.0, 0.0, 1.0]
    q, k = torch.randn(2, 12, head_dim), torch.randn(2, 12, head_dim)
    cos, sin = rope.angles(pos)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    assert torch.equal(rq[..., 12:], q[..., 12:])
    assert not torch.allclose(rq, q)
    shifted = token_positions(3, 2, 2, time_offset=5.0) + torch.tensor([0.0, 3.0, -2.0])
    cos2, sin2 = rope.angles(shifted)
    scores = rq @ rk.transpose(-1, -2)
    scores2 = apply_rope(q, cos2, sin2) @ apply_rope(k, cos2, sin2).transpose(-1, -2)
    torch.testing.assert_close(scores, scores2, rtol=1e-4, atol=1e-4)


def test_attention_impls_agree():
    torch.manual_seed(0)
    frame_len, n_frames = 6, 7
    q, k, v = (torch.randn(2, 3, n_frames * frame_len, 8) for _ in range(3))
    ref = frame_causal_attention(q, k, v, frame_len, "dense")
    for impl, per_call in IMPLS:
        out = frame_causal_attention(q, k, v, frame_len, impl, per_call)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5, msg=f"{impl} x{per_call}")
    # and the dense reference is what "frame-causal" means: its mask, spelled out
    mask = dense_frame_causal_mask(n_frames * frame_len, frame_len)
    assert mask[frame_len - 1, frame_len - 1] and not mask[frame_len - 1, frame_len]
    assert mask[2 * frame_len, 2 * frame_len + frame_len - 1] and mask[-1].all()


@pytest.mark.parametrize("impl,per_call", IMPLS)
def test_attention_is_frame_causal(impl, per_call):
    torch.manual_seed(1)
    frame_len, n_frames, f = 4, 5, 2
    q, k, v = (torch.randn(1, 2, n_frames * frame_len, 8) for _ in range(3))
    out = frame_causal_attention(q, k, v, frame_len, impl, per_call)
    k2, v2 = k.clone(), v.clone()
    k2[..., (f + 1) * frame_len :, :] += 10.0
    v2[..., (f + 1) * frame_len :, :] -= 10.0
    out2 = frame_causal_attention(q, k2, v2, frame_len, impl, per_call)
    cut = (f + 1) * frame_len
    assert torch.equal(out[..., :cut, :], out2[..., :cut, :])
    assert not torch.allclose(out[..., cut:, :], out2[..., cut:, :])


def _predictor(impl: str, per_call: int = 1, **kw) -> GuidedPredictor:
    torch.manual_seed(0)
    return GuidedPredictor(preset("tiny", attention=impl, attn_frames_per_call=per_call, variant="jepa", **kw)).eval()


@pytest.mark.parametrize("impl,per_call", IMPLS)
def test_predictor_is_frame_causal_and_impls_agree(impl, per_call):
    cfg = preset("tiny")
    past = torch.randn(2, 3, cfg.patches, cfg.vjepa_width)
    ref = _predictor("dense")
    net = _predictor(impl, per_call)
    with torch.no_grad():
        out = net(past, 2, return_all=True)
        torch.testing.assert_close(out, ref(past, 2, return_all=True), rtol=0, atol=1e-5)
        later = past.clone()
        later[:, 2] += 1.0  # the last observed tubelet = frame slots 4 and 5
        out2 = net(later, 2, return_all=True)
    assert out.shape == (2, (3 + 2) * cfg.tubelet, cfg.patches, cfg.vjepa_width)
    assert torch.equal(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


@pytest.mark.parametrize("n_past,n_future", [(2, 2), (1, 5), (4, 1)])
def test_any_window_sizes_and_time_offset(n_past, n_future):
    cfg = preset("tiny")
    net = _predictor("sdpa_per_frame")
    past = torch.randn(1, n_past, cfg.patches, cfg.vjepa_width)
    with torch.no_grad():
        out = net(past, n_future)
        shifted = net(past, n_future, time_offset=11.0)
    assert out.shape == (1, n_future * cfg.tubelet, cfg.patches, cfg.vjepa_width)
    # RoPE is relative: shifting every time index leaves self-attention unchanged
    torch.testing.assert_close(out, shifted, rtol=1e-4, atol=1e-5)


def test_future_slots_carry_position_and_context():
    cfg = preset("tiny")
    net = _predictor("sdpa_per_frame")
    past = torch.randn(1, 2, cfg.patches, cfg.vjepa_width)
    with torch.no_grad():
        out = net(past, 2)
        other = net(past + 1.0, 2)
    assert not torch.allclose(out[:, 0], out[:, 3])  # identical mask tokens, different positions
    assert not torch.allclose(out, other)  # the forecast depends on the observation


def test_train_mode_dropout_and_autocast():
    cfg = preset("tiny", dropout=0.2, drop_path=0.3)
    net = GuidedPredictor(cfg.replace(variant="jepa"))
    past = torch.randn(2, 2, cfg.patches, cfg.vjepa_width)
    net.train()
    a, b = net(past, 2), net(past, 2)
    assert not torch.equal(a, b)
    net.eval()
    with torch.no_grad():
        ref = net(past, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(past, 2)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_paper_predictor_size_and_drop_path_schedule():
    cfg = preset("paper", variant="jepa")
    net = GuidedPredictor(cfg)
    n = sum(p.numel() for p in net.parameters())
    w, d = cfg.width, cfg.vjepa_width
    block = (3 * w * w + 3 * w) + (w * w + w) + 2 * (w * 4 * w) + 4 * w + w + 2 * (2 * w)
    assert n == cfg.depth * block + (d * w + w) + w + 2 * w + (w * d + d)
    assert 21e6 < n < 23e6  # published: ~22 M
    rates = [blk.drop_path.p for blk in net.blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], cfg.drop_path)
    assert all(math.isclose(b - a, cfg.drop_path / (cfg.depth - 1)) for a, b in zip(rates, rates[1:], strict=False))
    assert net.blocks[0].norm1.eps == 1e-6 and net.blocks[0].attn.qkv.bias is not None
