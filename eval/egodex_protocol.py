"""EgoDex's own forecasting protocol (arXiv 2505.11709), computed from our forecasts.

EgoDex scores 12 keypoints (per hand the wrist and the five fingertips) in the camera frame of the
current frame, at horizons of 1 / 2 / 3 s on a 30 Hz grid: "average" = mean distance over the
horizon's steps and keypoints, "final" = mean distance at the horizon's last step, best of K samples.

Our forecasts live at the cached future frame indices (a stride that varies per episode), so each
sample's predicted and true tracks are interpolated linearly in time onto that grid. A step's time is
(frame index - last observed frame index) / fps. The last observed frame is the knot at t = 0 for both
tracks (the present is an observation; EgoDex's models are given it as proprioception). A horizon is
scored for a sample only when it lies inside the sample's forecast window (t_last + h <= time of the
last cached future frame); how many samples qualify is reported per horizon.

`CHOICES` records how we settle the four points the paper leaves open; the report prints them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tjepa.cache_schema.joints import JOINT_NAMES
from tjepa.metrics import to_numpy

HORIZONS_S: tuple[int, ...] = (1, 2, 3)
RATE_HZ = 30.0  # EgoDex's grid: 30 / 60 / 90 steps at 1 / 2 / 3 s
K_SAMPLES = 1  # our model is deterministic
_TIPS = ("ThumbTip", "IndexFingerTip", "MiddleFingerTip", "RingFingerTip", "LittleFingerTip")
KEYPOINT_NAMES: tuple[str, ...] = tuple(
    name for side in ("left", "right") for name in (f"{side}Hand", *(f"{side}{t}" for t in _TIPS)))
KEYPOINTS: tuple[int, ...] = tuple(JOINT_NAMES.index(n) for n in KEYPOINT_NAMES)

CHOICES: dict[str, str] = {
    "anchor_times": "one anchor per test episode: its last observed frame (the causal split's midpoint), "
                    "so every episode counts once per horizon it reaches",
    "steps_per_chunk": "H steps: t = 1/30 s ... h on the 30 Hz grid (the current frame, t = 0, is an "
                       "observation and is not scored)",
    "final_sample": f"K = {K_SAMPLES} (deterministic), so 'final' and 'average' use the same sample; with K > 1 "
                    "each would take its own best sample",
    "low_confidence": "the store keeps no confidences: every finite label counts; non-finite labels are "
                      "masked, and an interpolated point needs both neighbouring knots valid",
}


def horizon_key(h: int) -> str:
    return f"{int(h)}s"


def world_to_camera(points: Any, cam_to_world: Any) -> np.ndarray:
    """World points [B, ..., 3] -> camera frame of `cam_to_world` [B, 4, 4]: R^T (p - t)."""
    p, pose = to_numpy(points, np.float64), to_numpy(cam_to_world, np.float64)
    rot, trans = pose[:, :3, :3], pose[:, :3, 3]
    lead = (slice(None),) + (None,) * (p.ndim - 2)
    return np.einsum("b...i,bij->b...j", p - trans[lead], rot)


def interpolate_track(times: Any, values: Any, valid: Any, query: Any) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation in time of a track: knots `times` [S] (strictly increasing), `values`
    [S, J, 3], `valid` [S, J] -> ([Q, J, 3], valid [Q, J]) at `query` [Q]. A query outside the
    knots, or between knots of which a needed one is invalid, is invalid (and NaN)."""
    t, x, v, q = (to_numpy(times, np.float64), to_numpy(values, np.float64), to_numpy(valid).astype(bool),
                  to_numpy(query, np.float64))
    if t.ndim != 1 or len(t) < 2 or (np.diff(t) <= 0).any():
        raise ValueError(f"knot times must be 1-D, strictly increasing, at least 2; got {t}")
    i = np.clip(np.searchsorted(t, q, side="right") - 1, 0, len(t) - 2)
    w = ((q - t[i]) / (t[i + 1] - t[i]))[:, None]  # [Q, 1]
    inside = (q >= t[0]) & (q <= t[-1])
    # a knot with weight 0 is not needed: an exact hit on a valid knot stays valid
    ok = (v[i] | (w == 1.0)) & (v[i + 1] | (w == 0.0)) & inside[:, None]
    xa, xb = np.where(v[i][..., None], x[i], 0.0), np.where(v[i + 1][..., None], x[i + 1], 0.0)
    out = (1.0 - w[..., None]) * xa + w[..., None] * xb
    out[~ok] = np.nan
    return out, ok


class EgoDexMeter:
    """Accumulates EgoDex average / final distances per horizon over batches.

    `update(pred, gt, valid, last, last_valid, cam_last, last_idx, future_idx, fps)`: world-frame
    forecasts and truth [B, Tf, J, 3] (all 52 joints; the keypoints are picked here), truth validity
    [B, Tf, J], the last observed joints [B, J, 3] with validity [B, J], the last observed camera
    [B, 4, 4] (camera-to-world), the last observed frame index [B], the cached future frame indices
    [B, Tf] and the frame rate [B]. Each sample's average (final) is the mean over its valid
    (step, keypoint) entries (valid keypoints at t = h); the set value is the mean over samples.
    """

    def __init__(self, horizons_s: Sequence[int] = HORIZONS_S, rate_hz: float = RATE_HZ,
                 keypoints: Sequence[int] = KEYPOINTS):
        self.horizons = tuple(int(h) for h in horizons_s)
        self.rate = float(rate_hz)
        self.keypoints = np.asarray(keypoints, np.int64)
        self.n_samples = 0
        self._acc = {h: {"ade": 0.0, "fde": 0.0, "n": 0, "n_fde": 0, "qualify": 0} for h in self.horizons}

    def update(self, pred: Any, gt: Any, valid: Any, last: Any, last_valid: Any, cam_last: Any,
               last_idx: Any, future_idx: Any, fps: Any) -> None:
        kp = self.keypoints
        p = world_to_camera(to_numpy(pred, np.float64)[:, :, kp], cam_last)
        g = world_to_camera(to_numpy(gt, np.float64)[:, :, kp], cam_last)
        o = world_to_camera(to_numpy(last, np.float64)[:, kp], cam_last)
        vg, vo = to_numpy(valid).astype(bool)[:, :, kp], to_numpy(last_valid).astype(bool)[:, kp]
        vp = np.ones(p.shape[:-1], bool)  # a non-finite forecast is not masked: it makes the metric NaN
        fi, li, rate = to_numpy(future_idx, np.float64), to_numpy(last_idx, np.float64), to_numpy(fps, np.float64)
        for b in range(p.shape[0]):
            if not np.isfinite(rate[b]) or rate[b] <= 0:
                raise ValueError(f"sample {b}: fps must be positive, got {rate[b]}")
            times = np.concatenate([[0.0], (fi[b] - li[b]) / rate[b]])
            pk, gk = np.concatenate([o[b][None], p[b]]), np.concatenate([o[b][None], g[b]])
            pv, gv = np.concatenate([vo[b][None], vp[b]]), np.concatenate([vo[b][None], vg[b]])
            for h in self.horizons:
                if times[-1] + 1e-9 >= h:
                    self._score(h, times, pk, pv, gk, gv)
            self.n_samples += 1

    def _score(self, h: int, times: np.ndarray, pk: np.ndarray, pv: np.ndarray, gk: np.ndarray,
               gv: np.ndarray) -> None:
        query = np.arange(1, int(round(h * self.rate)) + 1) / self.rate
        pq, pok = interpolate_track(times, pk, pv, query)
        gq, gok = interpolate_track(times, gk, gv, query)
        ok = pok & gok
        e = np.linalg.norm(pq - gq, axis=-1)
        acc = self._acc[h]
        acc["qualify"] += 1
        if ok.any():
            acc["ade"] += float(e[ok].mean())
            acc["n"] += 1
        if ok[-1].any():
            acc["fde"] += float(e[-1][ok[-1]].mean())
            acc["n_fde"] += 1

    def compute(self) -> dict[str, Any]:
        """{"1s": {ade, fde, n, n_fde}, ..., "keypoints", "counts" {"1s": qualifying samples},
        "n_samples", "rate_hz", "k", "frame", "choices"}; NaN where no sample reaches a horizon."""
        out: dict[str, Any] = {}
        for h, a in self._acc.items():
            out[horizon_key(h)] = {"ade": a["ade"] / a["n"] if a["n"] else float("nan"),
                                   "fde": a["fde"] / a["n_fde"] if a["n_fde"] else float("nan"),
                                   "n": a["n"], "n_fde": a["n_fde"]}
        counts = {horizon_key(h): a["qualify"] for h, a in self._acc.items()}
        short = [k for k, c in counts.items() if c == 0]
        if short and self.n_samples:
            warnings.warn(f"EgoDex protocol: no sample's forecast window reaches {short}; reported as NaN",
                          RuntimeWarning, stacklevel=2)
        out.update({"keypoints": list(KEYPOINT_NAMES) if tuple(self.keypoints) == KEYPOINTS
                    else [JOINT_NAMES[i] for i in self.keypoints],
                    "counts": counts, "n_samples": self.n_samples, "rate_hz": self.rate, "k": K_SAMPLES,
                    "frame": "camera frame of the last observed frame, metres", "choices": dict(CHOICES)})
        return out


# EgoDex paper, Table 3 (Dec + BC, K = 1), metres. Their models see one frame, proprioception and
# language (no history): context for our figures, not a leaderboard.
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "1s": {"ade": 0.031, "fde": 0.049}, "2s": {"ade": 0.045, "fde": 0.062}, "3s": {"ade": 0.053, "fde": 0.069},
}
PAPER_NOTE = ("EgoDex paper (arXiv 2505.11709), Table 3, Dec + BC, K = 1, on real EgoDex test episodes; "
              "their inputs (one frame, proprioception, language) and test set differ from ours, so this "
              "is context, not a comparison.")
