"""Real frame time in the model: time-scaled anchor offsets (the first future steps stay at
persistence) and RoPE positions from frame indices (dense-window stores)."""

from __future__ import annotations

import pytest
import torch

from tjepa.errors import ConfigMismatchError, TjepaError
from tjepa.train.config import preset
from tjepa.train.loop import store_model_overrides
from tjepa.train.model import ThinkJEPA, random_batch, slot_times


def _indices(batch_size: int, past: list[int], future: list[int]) -> dict[str, torch.Tensor]:
    return {"past_idx": torch.tensor([past] * batch_size), "future_idx": torch.tensor([future] * batch_size)}


def _trained_like(cfg, seed: int = 0) -> ThinkJEPA:
    torch.manual_seed(seed)
    model = ThinkJEPA(cfg).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.5)  # as after training: offsets far from zero
    return model


def _offset_norm(model, batch) -> torch.Tensor:
    """Mean distance of each future step's forecast from the anchor (the last observed joints), [Tf]."""
    with torch.no_grad():
        traj = model(batch).traj_world
    last = batch["joints_past"][:, -1:].float()
    return (traj - last).norm(dim=-1).mean(dim=(0, 2))


def test_first_future_step_stays_near_persistence():
    """One frame after the split the forecast may move one frame's worth of the horizon, not the whole
    horizon's motion (without the time scaling, step 0 moves as far as the last step)."""
    cfg = preset("tiny", n_past=8, n_future=8)
    batch = random_batch(cfg, batch_size=3)
    batch["valid_past"][:] = True
    past, future = list(range(0, 40, 5)), [40 + 5 * j for j in range(8)]  # step 0 is 5 frames after the last (35)
    batch.update(_indices(3, past, future))
    dist = _offset_norm(_trained_like(cfg), batch)
    unscaled = _offset_norm(_trained_like(cfg.replace(time_scaled_offsets=False)), batch)  # same weights
    frac = torch.tensor([(f - 35) / (75 - 35) for f in future])
    assert torch.allclose(dist, frac * unscaled, rtol=1e-4)
    assert unscaled[0] > 0.5 * unscaled[-1]  # what the scaling fixes: step 0 moved like the last step


def test_slot_times_are_about_the_slot_indices_for_uniform_sampling():
    b = _indices(1, [0, 2, 4, 6], [8, 10, 12, 14])
    t = slot_times(b, 4, 4)[0]
    assert torch.allclose(t, torch.tensor([-0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]) + 0.5)


def test_frame_time_positions_follow_the_frame_indices():
    cfg = preset("tiny", n_past=4, n_future=4, positions="frame_time")
    torch.manual_seed(0)
    model = ThinkJEPA(cfg).eval()
    batch = random_batch(cfg, batch_size=2)
    uniform = {**batch, **_indices(2, [0, 10, 20, 30], [40, 50, 60, 70])}
    dense = {**batch, **_indices(2, [36, 37, 38, 39], [40, 50, 60, 70])}
    with torch.no_grad():
        a, b = model(uniform).pred_frames, model(dense).pred_frames
        slots = ThinkJEPA(cfg.replace(positions="slots")).eval()
        slots.load_state_dict(model.state_dict())
        s1, s2 = slots(uniform).pred_frames, slots(dense).pred_frames
    assert not torch.allclose(a, b, atol=1e-5)  # the predictor sees when the observed frames were
    assert torch.equal(s1, s2)  # slot positions cannot tell the two samplings apart
    with pytest.raises(ConfigMismatchError, match="past_idx"):
        model(batch)


def test_a_dense_store_trains_with_frame_time_positions():
    dense = {"sampling": {"dense_window": 8}}
    assert store_model_overrides(dense, {})["positions"] == "frame_time"
    assert store_model_overrides({"sampling": {"dense_window": 0}}, {}) == {}
    with pytest.raises(TjepaError, match="frame_time"):
        store_model_overrides(dense, {"positions": "slots"})
