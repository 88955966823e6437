"""The `release` presets: the authors' readout head, RoPE layout, inits and ablation operators."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import store_factory as sf  # noqa: E402

from tjepa.train.config import RELEASE_COMPONENTS, preset  # noqa: E402
from tjepa.train.model import ThinkJEPA, random_batch  # noqa: E402
from tjepa.train.rope import token_positions  # noqa: E402
from tjepa.train.rope_flat import FramePatchRope, apply_rope_interleaved, flat_axis_dim  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

W, D, J3 = 1024, 1024, 52 * 3
LINEAR = {"weight": (W, W), "bias": (W,)}
LN = {"weight": (W,), "bias": (W,)}
# (name, type, own parameter shapes) of every module of the paper-size release head, in order.
RELEASE_HEAD = [
    ("", "ReleaseReadoutHead", {"query": (1, 1, W)}),
    ("attn", "MultiheadAttention", {"in_proj_weight": (3 * W, D), "in_proj_bias": (3 * W,)}),
    ("attn.out_proj", "NonDynamicallyQuantizableLinear", LINEAR),
    ("ln_in", "LayerNorm", LN),
    ("fc_in", "Sequential", {}),
    ("fc_in.0", "Linear", LINEAR), ("fc_in.1", "GELU", {}), ("fc_in.2", "Dropout", {}),
    ("residual", "Sequential", {}),
    ("residual.0", "Linear", LINEAR), ("residual.1", "GELU", {}), ("residual.2", "Dropout", {}),
    ("residual.3", "Linear", LINEAR), ("residual.4", "GELU", {}), ("residual.5", "Dropout", {}),
    ("time_pool", "AvgPool1d", {}),
    ("ln_out", "LayerNorm", LN),
    ("fc_out", "Linear", {"weight": (J3, W), "bias": (J3,)}),
]  # fmt: skip


def _structure(module: torch.nn.Module) -> list[tuple[str, str, dict]]:
    return [(name, type(m).__name__, {k: tuple(p.shape) for k, p in m.named_parameters(recurse=False)})
            for name, m in module.named_modules()]


def _tiny(seed: int = 0, **kw) -> ThinkJEPA:
    torch.manual_seed(seed)
    return ThinkJEPA(preset("tiny-release", n_past=4, n_future=4, **kw)).eval()


def test_release_head_structure_and_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        models = {c: ThinkJEPA(preset("release", conditioning=c)) for c in ("film", "adaln", "crossattn")}
    head = models["film"].head
    assert _structure(head) == RELEASE_HEAD
    assert head.attn.num_heads == 8 and head.attn.dropout == 0.1 and head.attn.batch_first
    assert all(m.p == 0.1 for m in head.modules() if isinstance(m, torch.nn.Dropout))
    assert (head.time_pool.kernel_size, head.time_pool.stride) == ((2,), (2,))
    head_params = W + (3 * W * D + 3 * W) + 4 * (W * W + W) + 2 * (2 * W) + (W * J3 + J3)
    assert head_params == 7_512_220
    assert {c: m.num_params() for c, m in models.items()} == {
        # predictor and film guidance as in `paper` (RoPE has no parameters); the head is theirs
        "film": {"predictor": 22_082_560, "head": head_params, "guidance": 15_780_876, "total": 45_375_656},
        # + one LayerNorm(384) before each of the 12 blocks; FiLM-sized generators (2 x 384 out)
        "adaln": {"predictor": 22_082_560 + 12 * 768, "head": head_params, "guidance": 15_780_876,
                  "total": 45_384_872},
        # + LayerNorm(384) and MHA(384, 6 heads) before each block; no type embeddings, no generators
        "crossattn": {"predictor": 22_082_560 + 12 * (768 + 4 * (384 * 384 + 384)), "head": head_params,
                      "guidance": 2 * 2048 * 384 + 12, "total": 38_273_192},
    }


def test_release_preset_is_paper_with_the_release_components():
    paper, release = preset("paper"), preset("release")
    assert release == paper.replace(**RELEASE_COMPONENTS)
    assert (release.head, release.step_pool, release.rope, release.init, release.cond_style) == (
        "release", "pairs", "frame_patch", "release", "release")
    assert preset("tiny-release") == preset("tiny").replace(**RELEASE_COMPONENTS)
    with pytest.raises(ValueError, match="step_pool='pairs'"):
        preset("release", step_pool="future")


def test_release_head_inits_and_operation_order():
    model = _tiny()
    head = model.head
    torch.manual_seed(1)  # init statistics at the paper width
    paper_head = type(head)(preset("release"))
    assert 0.9 < paper_head.query.std().item() < 1.1  # std-1 normal, 1024 draws
    bound = math.sqrt(6 / (W + J3))  # xavier-uniform
    w = paper_head.fc_out.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound and not paper_head.fc_out.bias.any()

    # The pool's query goes through W_q; LN in -> Linear-GELU (kept) -> x + two Linear-GELU layers.
    frames = torch.randn(2, 3, model.cfg.patches, model.cfg.vjepa_width)
    a, w_d = head.attn, model.cfg.head_width
    heads = a.num_heads
    q = F.linear(head.query[0], a.q_proj_weight, a.in_proj_bias[:w_d])  # kdim != width: separate weights
    k = F.linear(frames, a.k_proj_weight, a.in_proj_bias[w_d:2 * w_d])
    v = F.linear(frames, a.v_proj_weight, a.in_proj_bias[2 * w_d:])
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(-2, -3)  # noqa: E731  [..., heads, S, d]
    pooled = F.scaled_dot_product_attention(split(q).expand(2, 3, -1, -1, -1), split(k), split(v))
    pooled = a.out_proj(pooled.transpose(-2, -3).flatten(-2)).squeeze(-2)  # [2, 3, width]
    x = F.gelu(head.fc_in[0](head.ln_in(pooled)))
    r0, r3 = head.residual[0], head.residual[3]
    expect = x + F.gelu(r3(F.gelu(r0(x))))
    with torch.no_grad():
        torch.testing.assert_close(head.frame_features(frames), expect, rtol=1e-5, atol=1e-5)


def test_release_head_pools_pairs_of_all_slots():
    model = _tiny()
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    obs, fut = (torch.randn(2, 4, cfg.patches, cfg.vjepa_width, generator=g) for _ in range(2))
    with torch.no_grad():
        ref, _ = model.head(obs, fut)
        assert ref.shape == (2, 4, cfg.n_joints, 3)
        by_future = (model.head(obs, fut + 1.0)[0] - ref).abs().amax(dim=(0, 2, 3)) > 0
        by_past = (model.head(obs + 1.0, fut)[0] - ref).abs().amax(dim=(0, 2, 3)) > 0
        slot5 = fut.clone()
        slot5[:, 1] += 1.0  # slot 4 + 1 = the second of pair 2
        by_slot5 = (model.head(obs, slot5)[0] - ref).abs().amax(dim=(0, 2, 3)) > 0
    assert by_future.tolist() == [False, False, True, True] and by_past.tolist() == [True, True, False, False]
    assert by_slot5.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="as many observed as future"):
        model.head(obs[:, :2], fut)


def test_frame_patch_rope_is_vjepas_rotation_over_frame_and_flat_patch_index():
    """Against V-JEPA 2's own rotation (transformers' port), one axis at a time."""
    from transformers.models.vjepa2.modeling_vjepa2 import rotate_queries_or_keys

    head_dim, n_frames, gh, gw = 20, 3, 2, 3
    rope = FramePatchRope(head_dim, grid_w=gw)
    d = flat_axis_dim(head_dim)
    assert d == 10
    pos = token_positions(n_frames, gh, gw)
    x = torch.randn(2, 4, n_frames * gh * gw, head_dim, dtype=torch.float64)
    ours = apply_rope_interleaved(x, *rope.angles(pos))
    frame = torch.arange(n_frames).repeat_interleave(gh * gw).double()
    flat = torch.arange(gh * gw).repeat(n_frames).double()  # row-major patch index, 0..P-1 per frame
    expect = torch.cat((rotate_queries_or_keys(x[..., :d], frame), rotate_queries_or_keys(x[..., d:2 * d], flat),
                        x[..., 2 * d:]), dim=-1)
    torch.testing.assert_close(ours, expect.to(ours.dtype), rtol=1e-6, atol=1e-6)
    assert ours.dtype == x.dtype
    # the layout's quirk, kept on purpose: the pair (0, 1) turns at two rates, so norms change
    assert not torch.allclose(ours.norm(dim=-1), x.norm(dim=-1))
    # ... and scores are not relative: shifting every frame by 3 changes them
    later = apply_rope_interleaved(x, *rope.angles(pos + torch.tensor([3.0, 0.0, 0.0])))
    assert not torch.allclose(ours @ ours.transpose(-1, -2), later @ later.transpose(-1, -2), atol=1e-3)


def test_release_init_zero_mask_token_and_default_init_guidance():
    rel, ours = _tiny(), _tiny(**{"init": "ours"})
    assert not rel.predictor.mask_token.any() and ours.predictor.mask_token.any()
    for model, default in ((rel, True), (ours, False)):
        for lin in (m for m in model.guidance.modules() if isinstance(m, torch.nn.Linear)):
            fan_in = lin.weight.shape[1]
            std = lin.weight.std().item()
            if default:  # kaiming-uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                assert lin.weight.abs().max() <= 1 / math.sqrt(fan_in)
                assert abs(std - 1 / math.sqrt(3 * fan_in)) < 0.15 / math.sqrt(3 * fan_in)
                assert lin.bias is None or lin.bias.any()
            else:
                assert abs(std - 0.02) < 0.004 and (lin.bias is None or not lin.bias.any())
    # the predictor keeps its trunc-normal pass in both
    assert abs(rel.predictor.embed.weight.std().item() - 0.02) < 0.004 and not rel.predictor.embed.bias.any()


def test_release_adaln_normalises_the_stream_before_each_block():
    """LN of the residual stream, then FiLM: the predictor no longer sees the input's scale."""
    outs = {}
    for style in ("release", "ours"):
        model = _tiny(conditioning="adaln", cond_style=style)
        with torch.no_grad():
            model.guidance.gate.fill_(0.5)  # FiLM active
        batch = random_batch(model.cfg, past_tubelets=2, future_tubelets=2)
        scaled = {**batch, "vjepa_past": batch["vjepa_past"] * 10.0}
        with torch.no_grad():
            outs[style] = (model(batch).pred_frames, model(scaled).pred_frames)
    a, b = outs["release"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # embed bias is zero, the mask token zero
    a, b = outs["ours"]
    assert (a - b).abs().max() > 1e-2
    model = _tiny(conditioning="adaln")
    assert len(model.predictor.pre_norm) == model.cfg.depth and model.guidance.film[0][-1].out_features == 2 * 64


def test_release_crossattn_is_a_gated_pre_block_attention_with_padding_mask():
    model = _tiny(conditioning="crossattn")
    assert model.guidance.type_embed is None and model.predictor.pre_cross is not None
    assert all(blk.conditioning is None for blk in model.predictor.blocks)  # nothing inside the blocks
    batch = random_batch(model.cfg, past_tubelets=2, future_tubelets=2, tokens=(5, 3))
    past = batch["vjepa_past"]
    with torch.no_grad():
        unguided = model.predictor(past, 2, None)
        torch.testing.assert_close(model.predictor(past, 2, model.guidance(batch)), unguided, rtol=0, atol=0)
        model.guidance.gate.fill_(0.5)
        guided = model.predictor(past, 2, model.guidance(batch))
        assert (guided - unguided).abs().max() > 1e-3
        padded = dict(batch)
        for s in ("prompt", "think"):  # change every padding position: the key-padding mask hides them
            tok = batch[f"{s}_tokens"].clone()
            pad = torch.arange(tok.shape[2])[None, :] >= batch[f"{s}_len"][:, None]
            tok[pad[:, None, :, None].expand_as(tok)] = 7.0
            padded[f"{s}_tokens"] = tok
        torch.testing.assert_close(model.predictor(past, 2, model.guidance(padded)), guided, rtol=1e-5, atol=1e-5)
    pre = model.predictor.pre_cross[0].attn.out_proj.weight  # PyTorch default, not trunc-normal(0.02)
    assert pre.std() > 0.05


def test_cli_train_preset_release(tmp_path):
    from tjepa.cli import app

    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=12, groups=6, n_past=4, n_future=4))
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--cache", str(store), "--out", str(run), "--preset", "release",
                                   "--epochs", "1", "--batch-size", "2", "--limit", "2", "--no-progress",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "config.json").read_text())
    assert doc["train"]["preset"] == "release" and doc["train"]["lr_head"] == 1e-3
    model = doc["model"]
    assert {k: model[k] for k in RELEASE_COMPONENTS} == RELEASE_COMPONENTS
    assert (model["width"], model["depth"], model["head_width"]) == (384, 12, 1024)
    (line,) = (run / "metrics.jsonl").read_text().splitlines()
    assert math.isfinite(json.loads(line)["train_loss"])
