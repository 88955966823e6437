"""Persistence and constant-velocity baselines, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tjepa.eval.baselines import BaselineScorer, constant_velocity, persistence, score_baselines


def _setup():
    # B=1, To=3, J=3. Past frames 0, 2, 4; future frames 6, 10.
    x = np.zeros((1, 3, 3, 3))
    x[0, :, 0] = [[0, 0, 0], [0.2, 0, 0], [0.4, 0, 0]]          # joint 0: +0.1 m/frame along x
    x[0, :, 1] = [[1, 1, 1], [1, 1, 1], [5, 5, 5]]               # joint 1: last sample invalid
    x[0, :, 2] = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]               # joint 2: never valid
    v = np.ones((1, 3, 3), bool)
    v[0, 2, 1] = False
    v[0, :, 2] = False
    return x, v, np.array([[0, 2, 4]]), np.array([[6, 10]])


def test_persistence_holds_last_valid():
    x, v, pi, fi = _setup()
    out = persistence(x, v, pi, fi)
    assert out.pred.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(out.pred[0, :, 0], [[0.4, 0, 0]] * 2)
    np.testing.assert_allclose(out.pred[0, :, 1], [[1, 1, 1]] * 2)  # not the invalid (5,5,5)
    assert np.isnan(out.pred[0, :, 2]).all()
    np.testing.assert_array_equal(out.available, [[True, True, False]])


def test_constant_velocity_uses_frame_gaps():
    x, v, pi, fi = _setup()
    out = constant_velocity(x, v, pi, fi)
    # v = (0.4 - 0.2) / (4 - 2) = 0.1 / frame; future 6 -> +2 frames, 10 -> +6 frames
    np.testing.assert_allclose(out.pred[0, :, 0], [[0.6, 0, 0], [1.0, 0, 0]])
    # joint 1: last two samples not both valid -> persistence of the last valid
    np.testing.assert_allclose(out.pred[0, :, 1], [[1, 1, 1]] * 2)
    assert np.isnan(out.pred[0, :, 2]).all()


def test_constant_velocity_per_sample_gaps():
    x = np.zeros((2, 2, 1, 3))
    x[:, 1, 0, 1] = 0.3  # both samples move 0.3 m in y over their last gap
    v = np.ones((2, 2, 1), bool)
    pi = np.array([[0, 1], [0, 3]])
    fi = np.array([[2], [6]])
    out = constant_velocity(x, v, pi, fi)
    assert out.pred[0, 0, 0, 1] == pytest.approx(0.3 + 0.3 * 1)
    assert out.pred[1, 0, 0, 1] == pytest.approx(0.3 + 0.1 * 3)


def test_rejects_bad_indices():
    x, v, pi, fi = _setup()
    with pytest.raises(ValueError, match="after the last observed"):
        persistence(x, v, pi, np.array([[4, 10]]))
    with pytest.raises(ValueError, match="increasing"):
        constant_velocity(x, v, np.array([[0, 4, 4]]), fi)


def test_scorer_excludes_unavailable_joints_and_counts_them():
    x, v, pi, fi = _setup()
    gt = np.zeros((1, 2, 3, 3))
    gt[0, :, 0] = [[0.6, 0, 0], [1.0, 0, 0]]   # exactly constant velocity
    gt[0, :, 1] = [[1, 1, 1.1], [1, 1, 1.3]]   # persistence off by 0.1 / 0.3 in z
    vf = np.ones((1, 2, 3), bool)
    res = score_baselines(x, v, pi, fi, gt, vf, horizons=(1,))
    cv, ps = res["constant_velocity"], res["persistence"]
    assert cv["n_unavailable"] == 2 and ps["n_unavailable"] == 2  # joint 2 at both steps
    assert cv["ade"] == pytest.approx((0 + 0.1 + 0 + 0.3) / 4)
    # persistence of joint 0 at 0.4: errors 0.2, 0.6
    assert ps["ade"] == pytest.approx((0.2 + 0.1 + 0.6 + 0.3) / 4)
    assert ps["fde"] == pytest.approx((0.6 + 0.3) / 2)
    with pytest.raises(ValueError, match="unknown baselines"):
        BaselineScorer(names=("oracle",))
