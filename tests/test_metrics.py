"""Metrics on arrays small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tjepa.metrics import (
    LatentMeter,
    StabilityMeter,
    TrajectoryMeter,
    collapse_flags,
    explosion_flags,
    joint_errors,
    latent_token_metrics,
    nonfinite_fraction,
    per_sample_metrics,
    stability_summary,
    token_std,
    trajectory_metrics,
)


def _offsets(errs):
    """gt = 0, pred displaced along x by errs[b][t][j] metres -> e == errs exactly."""
    e = np.asarray(errs, dtype=np.float64)
    pred = np.zeros((*e.shape, 3))
    pred[..., 0] = e
    return pred, np.zeros_like(pred)


def test_joint_errors_is_euclidean():
    pred = np.array([[[3.0, 4.0, 0.0], [1.0, 2.0, 2.0]]])  # [T=1, J=2, 3]
    np.testing.assert_allclose(joint_errors(pred, np.zeros_like(pred)), [[5.0, 3.0]])


def test_ade_fde_acc_full_mask():
    # one sample, T=2, J=2: errors [[0.01, 0.03], [0.07, 0.09]]
    pred, gt = _offsets([[[0.01, 0.03], [0.07, 0.09]]])
    m = trajectory_metrics(pred, gt, horizons=(1, 2))
    assert m["ade"] == pytest.approx((0.01 + 0.03 + 0.07 + 0.09) / 4)  # 0.05
    assert m["fde"] == pytest.approx((0.07 + 0.09) / 2)
    assert m["acc"] == pytest.approx(2 / 4)  # 0.01, 0.03 < 0.05
    np.testing.assert_allclose(m["per_step"], [0.02, 0.08])
    assert m["horizons"][1] == pytest.approx({"ade": 0.02, "fde": 0.02, "acc": 1.0, "n": 1, "n_fde": 1})
    assert m["n"] == 1 and m["n_valid"] == 4


def test_threshold_is_configurable_and_strict():
    pred, gt = _offsets([[[0.01, 0.03], [0.07, 0.09]]])
    assert trajectory_metrics(pred, gt, threshold=0.08, horizons=(1,))["acc"] == pytest.approx(3 / 4)
    assert trajectory_metrics(pred, gt, threshold=0.07, horizons=(1,))["acc"] == pytest.approx(2 / 4)  # e < thr, not <=


def test_invalid_entries_are_excluded_not_zero():
    pred, gt = _offsets([[[0.02, 0.04], [0.10, 0.90]]])
    valid = np.array([[[True, True], [True, False]]])
    m = trajectory_metrics(pred, gt, valid, horizons=(2,))
    assert m["ade"] == pytest.approx((0.02 + 0.04 + 0.10) / 3)  # counting 0.9 as 0 would give /4
    assert m["fde"] == pytest.approx(0.10)
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["n_valid"] == 3


def test_sample_weighted_aggregation_across_batches():
    # sample A: 4 valid entries all 0.1; sample B: 1 valid entry 0.4.
    # sample-weighted ADE = (0.1 + 0.4) / 2 = 0.25 (entry-weighted would be 0.8 / 5 = 0.16)
    pa, ga = _offsets([[[0.1, 0.1], [0.1, 0.1]]])
    pb, gb = _offsets([[[0.4, 9.0], [9.0, 9.0]]])
    vb = np.array([[[True, False], [False, False]]])
    meter = TrajectoryMeter(horizons=(1,))
    meter.update(pa, ga, np.ones((1, 2, 2), bool))
    meter.update(pb, gb, vb)
    m = meter.compute()
    assert m["ade"] == pytest.approx(0.25)
    assert m["acc"] == pytest.approx((0.0 + 0.0) / 2)
    # FDE: only A has valid joints at the last step
    assert m["fde"] == pytest.approx(0.1) and m["n_fde"] == 1
    np.testing.assert_allclose(m["per_step"], [0.25, 0.1])
    assert m["per_step_n"] == [2, 1]
    assert m["n"] == 2 and m["n_samples"] == 2
    # same numbers in one batch
    one = trajectory_metrics(np.concatenate([pa, pb]), np.concatenate([ga, gb]),
                             np.concatenate([np.ones((1, 2, 2), bool), vb]), horizons=(1,))
    assert one["ade"] == pytest.approx(m["ade"]) and one["per_step"] == pytest.approx(m["per_step"])


def test_horizons():
    # T=4, J=1, errors 0.01, 0.02, 0.06, 0.10
    pred, gt = _offsets([[[0.01], [0.02], [0.06], [0.10]]])
    m = trajectory_metrics(pred, gt, horizons=(2, 4))
    assert m["horizons"][2]["ade"] == pytest.approx(0.015)
    assert m["horizons"][2]["fde"] == pytest.approx(0.02)
    assert m["horizons"][2]["acc"] == pytest.approx(1.0)
    assert m["horizons"][4]["ade"] == pytest.approx(m["ade"]) == pytest.approx(0.0475)
    assert m["horizons"][4]["acc"] == pytest.approx(0.5)


def test_horizons_longer_than_forecast_are_dropped_with_warning():
    pred, gt = _offsets([[[0.01], [0.02]]])
    with pytest.warns(RuntimeWarning, match="exceed"):
        m = trajectory_metrics(pred, gt, horizons=(1, 4, 8))
    assert list(m["horizons"]) == [1]


def test_all_invalid_gives_nan_and_warns_not_crash():
    pred, gt = _offsets([[[0.01, 0.02]]])
    with pytest.warns(RuntimeWarning, match="no valid"):
        m = trajectory_metrics(pred, gt, np.zeros((1, 1, 2), bool), horizons=(1,))
    assert math.isnan(m["ade"]) and math.isnan(m["fde"]) and math.isnan(m["acc"])
    assert m["n"] == 0 and m["n_samples"] == 1 and m["n_valid"] == 0
    assert math.isnan(m["per_step"][0]) and m["per_step_n"] == [0]


def test_empty_meter_warns():
    with pytest.warns(RuntimeWarning, match="before any update"):
        m = TrajectoryMeter().compute()
    assert math.isnan(m["ade"]) and m["n"] == 0


def test_nonfinite_prediction_is_counted_and_not_hidden():
    pred, gt = _offsets([[[0.01, 0.02]]])
    pred[0, 0, 1, 2] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        m = trajectory_metrics(pred, gt, horizons=(1,))
    assert m["n_nonfinite_pred"] == 1 and math.isnan(m["ade"])


def test_meter_rejects_changing_step_count_and_bad_masks():
    meter = TrajectoryMeter(horizons=(1,))
    meter.update(*_offsets([[[0.01], [0.02]]]))
    with pytest.raises(ValueError, match="future steps"):
        meter.update(*_offsets([[[0.01], [0.02], [0.03]]]))
    with pytest.raises(ValueError, match="valid"):
        trajectory_metrics(*_offsets([[[0.01], [0.02]]]), np.ones((1, 2, 2), bool))


def test_torch_inputs_and_unbatched():
    pred, gt = _offsets([[[0.01, 0.03], [0.07, 0.09]]])
    m = trajectory_metrics(torch.tensor(pred[0], dtype=torch.bfloat16), torch.tensor(gt[0]), horizons=(1,))
    assert m["ade"] == pytest.approx(0.05, abs=1e-3)  # bf16 rounding
    ps = per_sample_metrics(pred, gt)
    np.testing.assert_allclose(ps["ade"], [0.05])
    np.testing.assert_allclose(ps["per_step"], [[0.02, 0.08]])


def test_latent_metrics_by_hand():
    # one sample, two tokens, D=2
    pred = np.array([[[3.0, 4.0], [1.0, 0.0]]])
    tgt = np.array([[[0.0, 0.0], [0.0, 1.0]]])
    m = latent_token_metrics(pred, tgt)
    # L2: token 0 |(3,4)| = 5, token 1 |(1,-1)| = sqrt2 -> mean
    assert m["l2"][0] == pytest.approx((5 + math.sqrt(2)) / 2)
    # SmoothL1 elementwise: |3|->2.5, |4|->3.5, |1|->0.5, |-1|->0.5 -> mean 7/4
    assert m["smooth_l1"][0] == pytest.approx(7 / 4)
    # cosine: token 0 target is zero -> cos 0 -> dist 1; token 1 orthogonal -> dist 1
    assert m["cosine"][0] == pytest.approx(1.0)
    assert torch.nn.functional.smooth_l1_loss(torch.tensor(pred), torch.tensor(tgt)).item() == pytest.approx(7 / 4)


def test_latent_small_differences_and_cosine():
    pred = np.array([[[0.5, 0.0], [1.0, 1.0]]])
    tgt = np.array([[[0.0, 0.0], [2.0, 2.0]]])
    m = latent_token_metrics(pred, tgt)
    # SmoothL1: 0.5 -> 0.125; 0 -> 0; 1 -> 0.5 (|d| = 1 is on the linear side); 1 -> 0.5
    assert m["smooth_l1"][0] == pytest.approx((0.125 + 0 + 0.5 + 0.5) / 4)
    # cosine: token 0 vs zero -> 1; token 1 parallel -> 0
    assert m["cosine"][0] == pytest.approx(0.5)


def test_latent_meter_sample_weighted_and_token_axes():
    a = np.zeros((1, 2, 3, 4))  # [B, tubelets, patches, D]: all tokens flattened
    b = np.zeros((2, 2, 3, 4))
    b[1, ..., 0] = 2.0  # sample 1: every token off by 2 along one axis
    meter = LatentMeter()
    meter.update(a, a)
    meter.update(b, np.zeros_like(b))
    m = meter.compute()
    assert m["n"] == 3
    assert m["l2"] == pytest.approx((0 + 0 + 2.0) / 3)
    assert m["smooth_l1"] == pytest.approx((0 + 0 + 1.5 / 4) / 3)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(LatentMeter().compute()["l2"])


def test_stability_functions():
    assert nonfinite_fraction(np.array([1.0, np.nan, np.inf, 2.0])) == pytest.approx(0.5)
    x = np.array([[[1.0, 10.0], [3.0, 10.0]]])  # B=1, two tokens, D=2: std over tokens = (1, 0) -> 0.5
    np.testing.assert_allclose(token_std(x), [0.5])
    np.testing.assert_array_equal(collapse_flags([0.05, 0.2], [1.0, 1.0]), [True, False])
    np.testing.assert_array_equal(explosion_flags([1.0, 2.9, 3.1, np.nan]), [False, False, True, True])
    s = stability_summary([1.0, 2.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0])
    assert s["stable"] and not s["any_collapse"]
    s = stability_summary([1.0, 4.0], [1.0, 0.01], [1.0, 1.0], [0.0, 0.1])
    assert s["any_collapse"] and s["any_explosion"] and s["any_nonfinite"] and not s["stable"]


def test_stability_meter():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 3, 4, 8))  # B=2, S=3 rollout steps, 4 tokens, D=8
    pred = target.copy()
    pred[:, 0] += 0.1  # step 0 error 0.1*sqrt(8)
    pred[:, 1] += 0.2
    pred[:, 2] = 0.0  # collapsed (std 0) and far away
    meter = StabilityMeter()
    meter.update(pred, target)
    m = meter.compute()
    assert m["n"] == 2
    assert m["latent_error"][0] == pytest.approx(0.1 * math.sqrt(8))
    assert m["latent_error"][1] == pytest.approx(0.2 * math.sqrt(8))
    assert m["collapse"] == [False, False, True]
    assert m["pred_std"][0] == pytest.approx(m["true_std"][0])
    assert not m["stable"]
