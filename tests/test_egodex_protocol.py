"""EgoDex protocol: the camera-frame transform, the time interpolation and the meter, on cases
small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tjepa.cache_schema.joints import JOINT_NAMES
from tjepa.eval.egodex_protocol import (
    CHOICES,
    KEYPOINT_NAMES,
    KEYPOINTS,
    EgoDexMeter,
    interpolate_track,
    world_to_camera,
)


def _pose(yaw_deg: float, t: tuple[float, float, float]) -> np.ndarray:
    a = np.deg2rad(yaw_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    pose[:3, 3] = t
    return pose


def test_keypoints_are_wrists_and_fingertips():
    assert len(KEYPOINTS) == 12 == len(set(KEYPOINTS))
    assert [JOINT_NAMES[i] for i in KEYPOINTS] == list(KEYPOINT_NAMES)
    assert KEYPOINT_NAMES[:6] == ("leftHand", "leftThumbTip", "leftIndexFingerTip", "leftMiddleFingerTip",
                                  "leftRingFingerTip", "leftLittleFingerTip")
    assert set(CHOICES) == {"anchor_times", "steps_per_chunk", "final_sample", "low_confidence"}


def test_world_to_camera_by_hand():
    # camera at (1, 2, 3), turned 90 degrees about z: its x axis points along world +y
    pose = _pose(90.0, (1.0, 2.0, 3.0))[None]
    world = np.array([[[1.0, 3.0, 3.0], [0.0, 2.0, 4.0], [1.0, 2.0, 3.0]]])  # [1, 3, 3]
    cam = world_to_camera(world, pose)
    # offsets d = p - t: (0,1,0) -> R^T d = (1,0,0); (-1,0,1) -> (0,1,1); the camera centre -> 0
    np.testing.assert_allclose(cam[0], [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], atol=1e-12)
    # and back: R c + t
    back = np.einsum("ij,nj->ni", pose[0, :3, :3], cam[0]) + pose[0, :3, 3]
    np.testing.assert_allclose(back, world[0], atol=1e-12)


def test_interpolation_by_hand():
    times = [0.0, 0.1, 0.3]
    x = np.array([[[0.0, 0.0, 0.0]], [[1.0, 2.0, 0.0]], [[3.0, 2.0, 4.0]]])  # [3 knots, 1 joint, 3]
    v = np.ones((3, 1), bool)
    q = [0.05, 0.1, 0.2, 0.3, 0.31]
    out, ok = interpolate_track(times, x, v, q)
    np.testing.assert_allclose(out[:4, 0], [[0.5, 1.0, 0.0], [1.0, 2.0, 0.0], [2.0, 2.0, 2.0], [3.0, 2.0, 4.0]])
    assert ok[:, 0].tolist() == [True, True, True, True, False]  # beyond the last knot: not scored
    assert np.isnan(out[4]).all()


def test_interpolation_needs_both_knots_valid():
    times = [0.0, 1.0, 2.0]
    x = np.arange(18, dtype=float).reshape(3, 2, 3)
    v = np.array([[True, True], [False, True], [True, True]])
    out, ok = interpolate_track(times, x, v, [0.0, 0.5, 1.5, 2.0])
    assert ok[:, 0].tolist() == [True, False, False, True]  # joint 0 is invalid at the middle knot
    assert ok[:, 1].all()
    np.testing.assert_allclose(out[1, 1], [6.0, 7.0, 8.0])  # halfway between (3,4,5) and (9,10,11)
    with pytest.raises(ValueError, match="increasing"):
        interpolate_track([0.0, 0.0], x[:2], v[:2], [0.0])


def _sample(steps_frames, fps=30.0, j=52):
    """A world-frame sample with a static camera; every joint at the camera origin at t=0 and moving
    +x at 1 m/s in the camera frame (truth), the forecast moving at 2 m/s."""
    pose = _pose(30.0, (0.5, -1.0, 2.0))
    t = np.asarray(steps_frames, float) / fps
    cam_true = np.zeros((len(t), j, 3))
    cam_true[..., 0] = t[:, None]
    cam_pred = cam_true * 2.0
    def world(c):
        return np.einsum("ij,tkj->tki", pose[:3, :3], c) + pose[:3, 3]
    last = world(np.zeros((1, j, 3)))[0]
    return world(cam_pred), world(cam_true), last, pose


def test_meter_by_hand():
    # forecast every 3 frames up to 2.5 s after the last observed frame (index 100, 30 fps)
    frames = np.arange(3, 76, 3)
    pred, gt, last, pose = _sample(frames)
    m = EgoDexMeter()
    m.update(pred[None], gt[None], np.ones((1, len(frames), 52), bool), last[None], np.ones((1, 52), bool),
             pose[None], np.array([100]), frames[None] + 100, np.array([30.0]))
    with pytest.warns(RuntimeWarning, match="3s"):
        res = m.compute()
    # error at time s is |2s - s| = s: average over s = k/30, k = 1..30h is (30h + 1) / 60; final is h
    assert res["1s"]["ade"] == pytest.approx(31 / 60) and res["1s"]["fde"] == pytest.approx(1.0)
    assert res["2s"]["ade"] == pytest.approx(61 / 60) and res["2s"]["fde"] == pytest.approx(2.0)
    assert np.isnan(res["3s"]["ade"]) and res["counts"] == {"1s": 1, "2s": 1, "3s": 0}
    assert res["keypoints"] == list(KEYPOINT_NAMES) and res["n_samples"] == 1


def test_meter_masks_invalid_truth_and_weights_samples():
    frames = np.arange(2, 62, 2)  # up to 2.0 s exactly: 2 s qualifies
    pred, gt, last, pose = _sample(frames)
    valid = np.ones((len(frames), 52), bool)
    valid[-1, KEYPOINTS[:6]] = False  # final truth of the left hand missing
    m = EgoDexMeter(horizons_s=(2,))
    m.update(np.stack([pred, gt]), np.stack([gt, gt]), np.stack([valid, valid]), np.stack([last, last]),
             np.ones((2, 52), bool), np.stack([pose, pose]), np.array([10, 10]), np.stack([frames, frames]) + 10,
             np.array([30.0, 30.0]))
    res = m.compute()
    # sample 1 is perfect; sample 0 has error s at time s. Final: only the right hand, error 2 m.
    assert res["2s"]["fde"] == pytest.approx((2.0 + 0.0) / 2)
    assert res["counts"] == {"2s": 2} and res["2s"]["n"] == 2
    # average of sample 0 over valid entries: the last knot (t = 2 s) is invalid for the left hand, so
    # the two grid steps that need it (t = 59/30 lies between the last two knots, t = 2 s on it) keep 6
    s = np.arange(1, 61) / 30.0
    w = np.full(60, 12.0)
    w[-2:] = 6.0
    assert res["2s"]["ade"] == pytest.approx((np.sum(s * w) / w.sum() + 0.0) / 2)


def test_nonfinite_forecast_is_not_hidden():
    frames = np.arange(3, 40, 3)
    pred, gt, last, pose = _sample(frames)
    pred[4, KEYPOINTS[0]] = np.nan
    m = EgoDexMeter(horizons_s=(1,))
    m.update(pred[None], gt[None], np.ones((1, len(frames), 52), bool), last[None], np.ones((1, 52), bool),
             pose[None], np.array([0]), frames[None], np.array([30.0]))
    assert np.isnan(m.compute()["1s"]["ade"])
