"""The tiny preset's residual anchor: a zero head output means 'hold the last observed pose'."""

from __future__ import annotations

import torch

from tjepa.train.config import preset
from tjepa.train.head import cam_to_world
from tjepa.train.model import ThinkJEPA, random_batch


def _random_pose(b: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(b, 3, 3))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]  # a proper rotation
    pose = torch.eye(4).repeat(b, 1, 1)
    pose[:, :3, :3], pose[:, :3, 3] = q, torch.randn(b, 3)
    return pose


def test_zero_head_output_is_the_persistence_forecast():
    torch.manual_seed(0)
    cfg = preset("tiny")
    assert cfg.anchor == "last_observed"
    model = ThinkJEPA(cfg).eval()
    torch.nn.init.zeros_(model.head.out.weight)
    torch.nn.init.zeros_(model.head.out.bias)
    batch = random_batch(cfg, batch_size=3)
    batch["cam_last"] = _random_pose(3)
    out = model(batch)
    last = batch["joints_past"][:, -1] * batch["valid_past"][:, -1, :, None]
    torch.testing.assert_close(out.traj_world, last[:, None].expand_as(out.traj_world), atol=1e-5, rtol=0)
    # The camera-frame output is the same forecast seen from the last observed camera.
    torch.testing.assert_close(cam_to_world(out.traj_cam, batch["cam_last"]), out.traj_world, atol=1e-5, rtol=0)


def test_paper_preset_predicts_absolute_positions():
    cfg = preset("tiny", anchor="none", time_scaled_offsets=False)
    model = ThinkJEPA(cfg).eval()
    torch.nn.init.zeros_(model.head.out.weight)
    torch.nn.init.zeros_(model.head.out.bias)
    batch = random_batch(cfg, batch_size=2)
    batch["cam_last"] = _random_pose(2)
    out = model(batch)
    torch.testing.assert_close(out.traj_cam, torch.zeros_like(out.traj_cam))
    assert preset("paper").anchor == "none"


def test_step_bias_starts_at_zero_and_is_per_step():
    torch.manual_seed(0)
    cfg = preset("tiny", time_scaled_offsets=False)  # the bias alone, not scaled by elapsed time
    assert cfg.step_bias and not preset("paper").step_bias
    model = ThinkJEPA(cfg).eval()
    batch = random_batch(cfg, batch_size=2)
    before = model(batch).traj_cam
    unbiased = ThinkJEPA(cfg.replace(step_bias=False)).eval()
    unbiased.load_state_dict({k: v for k, v in model.state_dict().items() if k != "head.step_bias"})
    torch.testing.assert_close(unbiased(batch).traj_cam, before)  # zero init: no effect
    with torch.no_grad():
        model.head.step_bias[3].fill_(0.1)
    delta = model(batch).traj_cam - before
    assert torch.allclose(delta[:, 3], torch.full_like(delta[:, 3], 0.1), atol=1e-6)
    assert torch.count_nonzero(delta[:, :3]) == 0 and torch.count_nonzero(delta[:, 4:]) == 0


def test_an_anchored_model_starts_at_the_persistence_forecast():
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = ThinkJEPA(cfg).eval()
    batch = random_batch(cfg, batch_size=2)
    batch["cam_last"] = _random_pose(2)
    out = model(batch)
    last = batch["joints_past"][:, -1] * batch["valid_past"][:, -1, :, None]
    torch.testing.assert_close(out.traj_world, last[:, None].expand_as(out.traj_world), atol=1e-5, rtol=0)
