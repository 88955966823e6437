"""Training-free trajectory baselines: persistence and constant velocity.

Both read only the observed window (joints, validity, frame indices) and forecast every future step
in the same (world) frame. A joint never observed validly has no forecast: its prediction is NaN and
`available` is False; score baselines with `valid_future & available[:, None, :]` and report
`n_unavailable` so the model/baseline comparison says what it covers (see `score_baselines`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tjepa.metrics import TrajectoryMeter, to_numpy


@dataclass(frozen=True)
class BaselinePrediction:
    pred: np.ndarray       # [B, Tf, J, 3] float64; NaN where unavailable
    available: np.ndarray  # [B, J] bool: the joint had at least one valid observed sample


def _check(joints_past: Any, valid_past: Any, past_idx: Any, future_idx: Any):
    x = to_numpy(joints_past, np.float64)
    v = to_numpy(valid_past).astype(bool)
    pi = to_numpy(past_idx, np.int64)
    fi = to_numpy(future_idx, np.int64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"joints_past must be [B,To,J,3], got {x.shape}")
    b, to, j, _ = x.shape
    if v.shape != (b, to, j):
        raise ValueError(f"valid_past must be {(b, to, j)}, got {v.shape}")
    if pi.shape != (b, to) or fi.ndim != 2 or fi.shape[0] != b:
        raise ValueError(f"past_idx must be {(b, to)} and future_idx [B,Tf]; got {pi.shape}, {fi.shape}")
    if (fi <= pi[:, -1:]).any():
        raise ValueError("every future frame index must come after the last observed frame index")
    return x, v, pi, fi


def _last_valid(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last valid observed position per joint [B,J,3] (NaN if none) and availability [B,J]."""
    to = x.shape[1]
    # index of the last True along time; argmax on the reversed mask finds it
    last = to - 1 - np.argmax(v[:, ::-1], axis=1)  # [B, J]
    avail = v.any(axis=1)
    pos = np.take_along_axis(x, last[:, None, :, None], axis=1)[:, 0]
    pos[~avail] = np.nan
    return pos, avail


def persistence(joints_past: Any, valid_past: Any, past_idx: Any, future_idx: Any) -> BaselinePrediction:
    """Hold each joint's last valid observed position over every future step."""
    x, v, _, fi = _check(joints_past, valid_past, past_idx, future_idx)
    pos, avail = _last_valid(x, v)
    pred = np.broadcast_to(pos[:, None], (x.shape[0], fi.shape[1], *pos.shape[1:])).copy()
    return BaselinePrediction(pred, avail)


def constant_velocity(joints_past: Any, valid_past: Any, past_idx: Any, future_idx: Any) -> BaselinePrediction:
    """Extrapolate the velocity of the last two observed samples (per frame of index gap) by
    (future_idx - last past_idx) frames; joints whose last two samples are not both valid fall back
    to persistence (needs To >= 2; with To == 1 everything is persistence)."""
    x, v, pi, fi = _check(joints_past, valid_past, past_idx, future_idx)
    base = persistence(x, v, pi, fi)
    if x.shape[1] < 2:
        return base
    gap = (pi[:, -1] - pi[:, -2]).astype(np.float64)  # [B]
    if (gap <= 0).any():
        raise ValueError("past_idx must be strictly increasing")
    vel = (x[:, -1] - x[:, -2]) / gap[:, None, None]  # [B, J, 3] metres per frame
    dt = (fi - pi[:, -1:]).astype(np.float64)  # [B, Tf] frames ahead of the last observation
    cv = x[:, -1][:, None] + vel[:, None] * dt[:, :, None, None]
    both = v[:, -1] & v[:, -2]  # [B, J]
    pred = np.where(both[:, None, :, None], cv, base.pred)
    return BaselinePrediction(pred, base.available)


BASELINES: dict[str, Callable[..., BaselinePrediction]] = {
    "persistence": persistence,
    "constant_velocity": constant_velocity,
}


class BaselineScorer:
    """One `TrajectoryMeter` per baseline, fed batch by batch alongside the model's meter.

    `update(joints_past, valid_past, past_idx, future_idx, joints_future, valid_future)`;
    `compute()` -> {name: meter dict + `n_unavailable` (valid future entries of joints the baseline
    could not forecast, excluded from its scores)}."""

    def __init__(self, names: tuple[str, ...] = tuple(BASELINES), **meter_kwargs: Any):
        unknown = set(names) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}; known: {sorted(BASELINES)}")
        self.meters = {n: TrajectoryMeter(**meter_kwargs) for n in names}
        self.n_unavailable = dict.fromkeys(names, 0)

    def update(self, joints_past: Any, valid_past: Any, past_idx: Any, future_idx: Any,
               joints_future: Any, valid_future: Any) -> None:
        vf = to_numpy(valid_future).astype(bool)
        gt = to_numpy(joints_future, np.float64)
        for name, meter in self.meters.items():
            out = BASELINES[name](joints_past, valid_past, past_idx, future_idx)
            mask = vf & out.available[:, None, :]
            self.n_unavailable[name] += int((vf & ~mask).sum())
            meter.update(np.where(mask[..., None], out.pred, 0.0), gt, mask)

    def compute(self) -> dict[str, dict[str, Any]]:
        res = {}
        for name, meter in self.meters.items():
            res[name] = meter.compute()
            res[name]["n_unavailable"] = self.n_unavailable[name]
        return res


def score_baselines(joints_past: Any, valid_past: Any, past_idx: Any, future_idx: Any, joints_future: Any,
                    valid_future: Any, **meter_kwargs: Any) -> dict[str, dict[str, Any]]:
    """Score every baseline on one batch (see `BaselineScorer`)."""
    scorer = BaselineScorer(**meter_kwargs)
    scorer.update(joints_past, valid_past, past_idx, future_idx, joints_future, valid_future)
    return scorer.compute()
