"""TrajectoryHead: camera-to-world mapping, per-frame independence, what each step pooling reads."""

from __future__ import annotations

import math

import pytest
import torch

from tjepa.train.config import preset
from tjepa.train.head import TrajectoryHead, cam_to_world


def test_cam_to_world_by_hand():
    # camera rotated 90 degrees about world z, sitting at (1, 2, 3)
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    pose = torch.tensor([[c, -s, 0, 1.0], [s, c, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])[None]
    pts = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5], [0, 0, 0]]).view(1, 1, 4, 3)
    world = cam_to_world(pts, pose)
    expect = torch.tensor([[1.0, 3.0, 3.0], [0.0, 2.0, 3.0], [1.0, 2.0, 3.5], [1.0, 2.0, 3.0]])
    torch.testing.assert_close(world[0, 0], expect, rtol=0, atol=1e-6)


def _head(step_pool: str) -> tuple[TrajectoryHead, object]:
    cfg = preset("tiny", step_pool=step_pool, n_past=8, n_future=8, anchor="none",
                 time_scaled_offsets=False)  # random init output
    torch.manual_seed(0)
    return TrajectoryHead(cfg).eval(), cfg


def _frames(cfg, n: int, seed: int) -> torch.Tensor:
    return torch.randn(2, n, cfg.patches, cfg.vjepa_width, generator=torch.Generator().manual_seed(seed))


def test_frames_are_pooled_independently():
    head, cfg = _head("future")
    frames = _frames(cfg, 5, 0)
    with torch.no_grad():
        a = head.frame_features(frames)
        frames[:, 2] += 1.0
        b = head.frame_features(frames)
    assert a.shape == (2, 5, cfg.head_width)
    changed = (a - b).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, False, True, False, False]


def test_future_pooling_step_j_reads_future_slot_j_and_the_present():
    head, cfg = _head("future")
    obs, fut = _frames(cfg, 8, 1), _frames(cfg, 8, 2)
    cam = torch.eye(4).repeat(2, 1, 1)
    with torch.no_grad():
        cam_pts, world = head(obs, fut, cam)
        assert cam_pts.shape == (2, 8, cfg.n_joints, 3) and cam_pts.dtype == torch.float32
        torch.testing.assert_close(world, cam_pts)  # identity pose
        fut2 = fut.clone()
        fut2[:, 3] += 1.0
        changed = (head(obs, fut2)[0] - cam_pts).abs().amax(dim=(0, 2, 3)) > 0
        assert changed.tolist() == [j == 3 for j in range(8)]
        obs2 = obs.clone()
        obs2[:, :-1] += 1.0  # only the last observed frame is read
        assert torch.equal(head(obs2, fut)[0], cam_pts)
        obs2[:, -1] += 1.0
        assert ((head(obs2, fut)[0] - cam_pts).abs().amax(dim=(0, 2, 3)) > 0).all()
        assert head(obs, fut, None)[1] is None


def test_pairs_pooling_reads_observed_frames_for_the_first_half():
    """The published pooling: future step k averages slots 2k, 2k+1 of [observed, predicted]."""
    head, cfg = _head("pairs")
    obs, fut = _frames(cfg, 8, 3), _frames(cfg, 8, 4)
    with torch.no_grad():
        ref, _ = head(obs, fut)
        changed_by_future = (head(obs, fut + 1.0)[0] - ref).abs().amax(dim=(0, 2, 3)) > 0
        changed_by_past = (head(obs + 1.0, fut)[0] - ref).abs().amax(dim=(0, 2, 3)) > 0
    assert changed_by_future.tolist() == [False] * 4 + [True] * 4
    assert changed_by_past.tolist() == [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match="pairs"):
        head(obs[:, :6], fut)


def test_pairs_needs_equal_windows_in_config():
    with pytest.raises(ValueError, match="pairs"):
        preset("tiny", step_pool="pairs", n_past=8, n_future=4)


def test_head_gradients_reach_the_predicted_frames():
    head, cfg = _head("future")
    obs, fut = _frames(cfg, 8, 5), _frames(cfg, 8, 6).requires_grad_(True)
    cam_pts, _ = head(obs, fut)
    cam_pts.square().sum().backward()
    assert fut.grad.abs().amax(dim=(0, 2, 3)).gt(0).all()
