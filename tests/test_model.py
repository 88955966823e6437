"""ThinkJEPA end to end: shapes, variants, zero-init guidance, leakage, loss masking, overfitting."""

from __future__ import annotations

import pytest
import torch

from tjepa.errors import ConfigMismatchError, StoreFormatError
from tjepa.train.config import ModelConfig, preset
from tjepa.train.model import ThinkJEPA, random_batch

CONDITIONINGS = ["film", "adaln", "crossattn"]


def _model(seed: int = 0, **kw) -> ThinkJEPA:
    torch.manual_seed(seed)
    return ThinkJEPA(preset("tiny", **kw)).eval()


def _batch(model: ThinkJEPA, **kw) -> dict:
    kw.setdefault("past_tubelets", 3)
    kw.setdefault("future_tubelets", 2)
    if model.cfg.conditioning == "crossattn":
        kw.setdefault("tokens", (5, 3))
    return random_batch(model.cfg, **kw)


def _outputs(model: ThinkJEPA, batch: dict, **kw) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(batch, **kw)
    return [out.pred_future, out.pred_frames, out.traj_cam, out.traj_world]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("variant", ["thinkjepa", "jepa", "vlm"])
def test_shapes(variant, conditioning):
    model = _model(variant=variant, conditioning=conditioning)
    batch = _batch(model)
    out = model(batch)
    cfg = model.cfg
    assert out.pred_future.shape == (2, 2, cfg.patches, cfg.vjepa_width)
    assert out.pred_frames.shape == (2, 4, cfg.patches, cfg.vjepa_width)
    assert out.traj_cam.shape == out.traj_world.shape == (2, 4, cfg.n_joints, 3)
    torch.testing.assert_close(out.pred_future, out.pred_frames.unflatten(1, (2, 2)).mean(2))
    losses = model.loss(batch, out)
    assert set(losses) == {"total", "traj", "latent"} and all(torch.isfinite(v) for v in losses.values())
    assert (model.guidance is None) == (variant == "jepa")


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_zero_init_gates_make_guidance_a_no_op_then_it_learns(conditioning):
    model = _model(conditioning=conditioning)
    batch = _batch(model, seed=1)
    guided = _outputs(model, batch)
    assert _same(guided, _outputs(model, batch, use_guidance=False))
    vlm_keys = [k for k in batch if k.startswith(("prompt_", "think_")) and batch[k].is_floating_point()]
    assert _same(guided, _outputs(model, {**batch, **{k: batch[k] * 3 + 1 for k in vlm_keys}}))
    if conditioning == "film":  # same seed, no guidance module: the very same network
        assert _same(guided, _outputs(_model(variant="jepa"), batch))
    # one optimiser step opens the gates; the VLM inputs then matter
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.loss(batch, model(batch))["total"].backward()
    assert model.guidance.gate.grad.abs().max() > 0
    opt.step()
    model.eval()
    assert not _same(_outputs(model, batch), _outputs(model, {**batch, **{k: batch[k] * 3 + 1 for k in vlm_keys}}))


def test_vlm_variant_ignores_visual_inputs():
    model = _model(variant="vlm")
    with torch.no_grad():
        model.guidance.gate.fill_(0.5)  # guidance active, so the check is not trivially about zeros
    batch = _batch(model, seed=2)
    ref = _outputs(model, batch)
    assert _same(ref, _outputs(model, {**batch, "vjepa_past": torch.randn_like(batch["vjepa_past"])}))
    assert not _same(ref, _outputs(model, {**batch, "prompt_mean": batch["prompt_mean"] + 1}))


def test_jepa_variant_ignores_vlm_inputs():
    model = _model(variant="jepa")
    batch = _batch(model, seed=3)
    ref = _outputs(model, batch)
    no_vlm = {k: v for k, v in batch.items() if not k.startswith(("prompt_", "think_"))}
    assert _same(ref, _outputs(model, no_vlm))
    assert not _same(ref, _outputs(model, {**batch, "vjepa_past": batch["vjepa_past"] + 1}))


def test_never_reads_the_true_future():
    model = _model()
    with torch.no_grad():
        model.guidance.gate.fill_(0.5)
    batch = _batch(model, seed=4)
    ref = _outputs(model, batch)
    assert _same(ref, _outputs(model, {**batch, "vjepa_future": torch.randn_like(batch["vjepa_future"])}))
    no_future = {k: v for k, v in batch.items() if k != "vjepa_future"}
    assert _same(ref, _outputs(model, no_future, future_tubelets=2))


def test_loss_by_hand_and_invalid_joints_ignored():
    model = _model()
    batch = _batch(model, seed=5)
    out = model(batch)
    losses = model.loss(batch, out)
    target = batch["vjepa_future"].repeat_interleave(2, dim=1)
    torch.testing.assert_close(losses["latent"], ((out.pred_frames - target) ** 2).mean())
    valid = batch["valid_future"]
    assert not valid.all()
    manual = ((out.traj_world - batch["joints_future"]) ** 2)[valid].mean()
    torch.testing.assert_close(losses["traj"], manual)
    torch.testing.assert_close(losses["total"], losses["traj"] + losses["latent"])
    corrupt = batch["joints_future"].clone()
    corrupt[~valid] = float("nan")
    again = model.loss({**batch, "joints_future": corrupt}, out)
    assert torch.equal(again["traj"], losses["traj"])
    again["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_without_targets():
    model = _model()
    batch = {k: v for k, v in _batch(model).items() if not k.startswith(("joints_", "valid_", "cam_"))}
    out = model(batch)
    assert out.traj_world is None
    with pytest.raises(ConfigMismatchError, match="joints_future"):
        model.loss(batch, out)
    latent_only = ThinkJEPA(model.cfg.replace(w_traj=0.0))
    losses = latent_only.loss(batch, latent_only(batch))
    assert losses["traj"] == 0 and torch.equal(losses["total"], losses["latent"])


def test_overfits_a_tiny_batch():
    model = _model(seed=0)
    batch = _batch(model, past_tubelets=2, future_tubelets=2, seed=6)
    model.train()
    opt = torch.optim.AdamW(model.param_groups(lr_head=3e-3, lr_predictor=3e-3, weight_decay=0.0))
    first = None
    for _ in range(200):
        loss = model.loss(batch, model(batch))["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item())


def test_param_groups_partition_the_parameters():
    model = _model()
    groups = model.param_groups(lr_head=1e-3, lr_predictor=1e-4, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["head", "predictor"]
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    assert id(model.guidance.gate) in {id(p) for p in groups[1]["params"]}
    torch.optim.AdamW(groups)  # accepted as is


def test_autocast_forward_and_backward():
    model = _model()
    batch = _batch(model, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        losses = model.loss(batch, out)
    assert losses["total"].dtype == torch.float32 and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert model.predictor.embed.weight.grad is not None


def test_paper_preset_builds_with_published_sizes_and_runs_a_short_sequence():
    torch.manual_seed(0)
    model = ThinkJEPA(preset("paper")).eval()
    counts = model.num_params()
    assert 21e6 < counts["predictor"] < 23e6  # published ~22 M
    assert 15e6 < counts["guidance"] < 17e6  # published ~16 M
    batch = random_batch(model.cfg, batch_size=1, past_tubelets=1, future_tubelets=1)
    batch["vjepa_past"] = batch["vjepa_past"][:, :, :4]  # few patches: a cheap sequence
    small = ThinkJEPA(model.cfg.replace(grid_h=2, grid_w=2)).eval()
    small.load_state_dict(model.state_dict())  # no parameter depends on the patch count
    batch["vjepa_future"] = batch["vjepa_future"][:, :, :4]
    out = small(batch)
    assert out.traj_world.shape == (1, 2, 52, 3) and out.pred_future.shape == (1, 1, 4, 1024)
    with pytest.raises(ConfigMismatchError, match="from_store_layout"):
        model(batch)  # 4 patches, but the paper model expects 256


def test_crossattn_without_tokens_names_the_key():
    model = _model(conditioning="crossattn")
    batch = random_batch(model.cfg)
    with pytest.raises(ConfigMismatchError, match="prompt_tokens.*--keep-tokens"):
        model(batch)


def test_config_round_trip_and_store_layout():
    cfg = preset("tiny", conditioning="adaln", variant="vlm")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigMismatchError, match="bogus"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="conditioning"):
        preset("tiny", conditioning="concat")
    layout = {"patches": 64, "vjepa_width": 48, "levels": 4, "vlm_width": 96, "tubelet": 2,
              "n_past": 8, "n_future": 8, "max_new_tokens": 16}
    got = ModelConfig.from_store_layout(layout, "tiny", depth=3)
    assert (got.grid_h, got.grid_w, got.vjepa_width, got.levels, got.vlm_width) == (8, 8, 48, 4, 96)
    assert (got.n_past, got.n_future, got.depth, got.width) == (8, 8, 3, 64)
    with pytest.raises(StoreFormatError, match="square"):
        ModelConfig.from_store_layout({**layout, "patches": 24})
    wide = ModelConfig.from_store_layout({**layout, "patches": 24, "grid": [4, 6]}, "tiny")
    assert (wide.grid_h, wide.grid_w, wide.patches) == (4, 6, 24)
    with pytest.raises(StoreFormatError, match="vlm_width"):
        ModelConfig.from_store_layout({k: v for k, v in layout.items() if k != "vlm_width"})
