"""Trajectory and latent metrics and rollout stability checks, shared by training (val ADE selects
checkpoints) and evaluation (docs/method.md, "Metrics").

Everything is numpy; torch tensors are accepted anywhere an array is and are moved to the CPU.

Conventions:
- e[t, j] = ||pred - gt||_2 in metres over future steps t and joints j. Entries whose ground truth
  is invalid are excluded from every mean (never counted as zero error).
- Aggregation over an evaluation set is *sample-weighted*: each sample's ADE / FDE / Acc is the mean
  over its own valid entries, and the set value is the mean of those per-sample values over the
  samples that have at least one valid entry (with a full mask this equals the plain mean over all
  samples, steps and joints). Samples with nothing valid are counted, not averaged in.
- A metric with nothing to average is NaN and comes with a `RuntimeWarning`; counts say why.
- Non-finite predictions are not masked: they make the affected metrics non-finite, and
  `n_nonfinite_pred` counts them, because hiding a broken model behind a mask would flatter it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.05  # metres: Acc@5cm
DEFAULT_HORIZONS = (4, 8, 16, 32)


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Array-like or torch tensor (any device, bf16/fp16 included) -> numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        x = x.cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(dtype, copy=False) if dtype is not None else arr


def _safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den with NaN (and no numpy warning) where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------- trajectories


def joint_errors(pred: Any, gt: Any) -> np.ndarray:
    """Euclidean error per step and joint: [..., T, J, 3] x2 -> [..., T, J] (float64, metres)."""
    p, g = to_numpy(pred, np.float64), to_numpy(gt, np.float64)
    if p.shape != g.shape or p.shape[-1] != 3:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must have the same shape [..., T, J, 3]")
    return np.linalg.norm(p - g, axis=-1)


def _batch(pred: Any, gt: Any, valid: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Errors [B,T,J], validity [B,T,J] and non-finite-prediction flags [B,T,J]; unbatched input gets B=1."""
    p = to_numpy(pred, np.float64)
    if p.ndim == 3:
        p, gt = p[None], to_numpy(gt)[None]
        valid = None if valid is None else to_numpy(valid)[None]
    if p.ndim != 4:
        raise ValueError(f"pred must be [B,T,J,3] or [T,J,3], got {p.shape}")
    e = joint_errors(p, gt)
    v = np.ones(e.shape, bool) if valid is None else to_numpy(valid).astype(bool)
    if v.shape != e.shape:
        raise ValueError(f"valid {v.shape} does not match the errors {e.shape} ([B,T,J])")
    bad = ~np.isfinite(p).all(axis=-1)
    return e, v, bad


def per_sample_metrics(pred: Any, gt: Any, valid: Any | None = None,
                       threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Per-sample ADE, FDE, Acc ([B] each, NaN where a sample has nothing valid) and the
    per-step error curve [B, T] (NaN at steps with no valid joint)."""
    e, v, _ = _batch(pred, gt, valid)
    ew = np.where(v, e, 0.0)
    n = v.sum(axis=(1, 2))
    return {
        "ade": _safe_div(ew.sum(axis=(1, 2)), n),
        "fde": _safe_div(ew[:, -1].sum(axis=1), v[:, -1].sum(axis=1)),
        "acc": _safe_div((v & (e < threshold)).sum(axis=(1, 2)), n),
        "per_step": _safe_div(ew.sum(axis=2), v.sum(axis=2)),
    }


class TrajectoryMeter:
    """Accumulates sample-weighted ADE / FDE / Acc, the per-step curve and horizon metrics.

    Feed it batch by batch (`update(pred, gt, valid)` with [B,T,J,3], [B,T,J,3], [B,T,J]); `compute()`
    returns plain Python values. Horizons longer than the forecast are dropped with a warning.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, horizons: Sequence[int] = DEFAULT_HORIZONS):
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0 metres, got {threshold}")
        if any(int(h) < 1 for h in horizons):
            raise ValueError(f"horizons must be >= 1 step, got {tuple(horizons)}")
        self.threshold = float(threshold)
        self.horizons = tuple(sorted({int(h) for h in horizons}))
        self.steps: int | None = None
        self.n_samples = 0
        self.n_valid = 0
        self.n_nonfinite_pred = 0
        self._h: dict[int, dict[str, float]] = {}

    def _start(self, steps: int) -> None:
        self.steps = steps
        dropped = [h for h in self.horizons if h > steps]
        if dropped:
            warnings.warn(f"horizons {dropped} exceed the {steps} forecast steps; not reported",
                          RuntimeWarning, stacklevel=3)
        self.horizons = tuple(h for h in self.horizons if h <= steps)
        self._step_sum = np.zeros(steps)
        self._step_n = np.zeros(steps, dtype=np.int64)
        for h in (*self.horizons, steps):  # `steps` is the full-horizon entry: ADE / FDE / Acc
            self._h[h] = {"ade": 0.0, "fde": 0.0, "acc": 0.0, "n": 0, "n_fde": 0}

    def update(self, pred: Any, gt: Any, valid: Any | None = None) -> None:
        e, v, bad = _batch(pred, gt, valid)
        if self.steps is None:
            self._start(e.shape[1])
        elif e.shape[1] != self.steps:
            raise ValueError(f"this meter saw {self.steps} future steps before, now {e.shape[1]}")
        self.n_samples += e.shape[0]
        self.n_valid += int(v.sum())
        self.n_nonfinite_pred += int((bad & v).sum())
        ew = np.where(v, e, 0.0)
        hit = v & (e < self.threshold)
        step_mean = _safe_div(ew.sum(axis=2), v.sum(axis=2))  # [B, T]
        has = v.any(axis=2)
        self._step_sum += np.where(has, step_mean, 0.0).sum(axis=0)
        self._step_n += has.sum(axis=0)
        for h, acc in self._h.items():
            n = v[:, :h].sum(axis=(1, 2))
            ok = n > 0
            acc["ade"] += float(_safe_div(ew[:, :h].sum(axis=(1, 2)), n)[ok].sum())
            acc["acc"] += float(_safe_div(hit[:, :h].sum(axis=(1, 2)), n)[ok].sum())
            acc["n"] += int(ok.sum())
            nf = v[:, h - 1].sum(axis=1)
            okf = nf > 0
            acc["fde"] += float(_safe_div(ew[:, h - 1].sum(axis=1), nf)[okf].sum())
            acc["n_fde"] += int(okf.sum())

    def _final(self, h: int) -> dict[str, float]:
        a = self._h[h]
        return {"ade": float(_safe_div(a["ade"], a["n"])), "fde": float(_safe_div(a["fde"], a["n_fde"])),
                "acc": float(_safe_div(a["acc"], a["n"])), "n": int(a["n"]), "n_fde": int(a["n_fde"])}

    def compute(self) -> dict[str, Any]:
        """`ade`, `fde`, `acc`, `n` (samples averaged), `n_samples` (seen), `n_fde`, `n_valid`
        (valid entries), `n_nonfinite_pred`, `threshold`, `per_step` [T], `per_step_n` [T],
        `horizons` {h: {ade, fde, acc, n, n_fde}}. NaN (with a warning) where nothing was valid."""
        if self.steps is None:
            warnings.warn("TrajectoryMeter.compute() before any update: all metrics are NaN",
                          RuntimeWarning, stacklevel=2)
            return {"ade": float("nan"), "fde": float("nan"), "acc": float("nan"), "n": 0, "n_samples": 0,
                    "n_fde": 0, "n_valid": 0, "n_nonfinite_pred": 0, "threshold": self.threshold,
                    "per_step": [], "per_step_n": [], "horizons": {}}
        full = self._final(self.steps)
        if full["n"] == 0:
            warnings.warn(f"no valid ground truth in {self.n_samples} samples: ADE/FDE/Acc are NaN",
                          RuntimeWarning, stacklevel=2)
        if self.n_nonfinite_pred:
            warnings.warn(f"{self.n_nonfinite_pred} predicted joints are non-finite", RuntimeWarning,
                          stacklevel=2)
        return {
            "ade": full["ade"], "fde": full["fde"], "acc": full["acc"],
            "n": full["n"], "n_samples": self.n_samples, "n_fde": full["n_fde"],
            "n_valid": self.n_valid, "n_nonfinite_pred": self.n_nonfinite_pred,
            "threshold": self.threshold,
            "per_step": [float(x) for x in _safe_div(self._step_sum, self._step_n)],
            "per_step_n": [int(x) for x in self._step_n],
            "horizons": {h: self._final(h) for h in self.horizons},
        }


def trajectory_metrics(pred: Any, gt: Any, valid: Any | None = None, threshold: float = DEFAULT_THRESHOLD,
                       horizons: Sequence[int] = DEFAULT_HORIZONS) -> dict[str, Any]:
    """One-shot `TrajectoryMeter` over a single batch."""
    meter = TrajectoryMeter(threshold, horizons)
    meter.update(pred, gt, valid)
    return meter.compute()


# --------------------------------------------------------------------------- latents


def latent_token_metrics(pred: Any, target: Any, eps: float = 1e-8) -> dict[str, np.ndarray]:
    """Per-sample latent metrics for [B, ..., D] (every axis between B and D is a token axis):
    `l2` mean over tokens of ||p - t||_2; `smooth_l1` elementwise SmoothL1 (beta = 1) averaged over
    tokens and features; `cosine` mean over tokens of 1 - cos(p, t) (norms clamped at `eps`)."""
    p, t = to_numpy(pred, np.float32), to_numpy(target, np.float32)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"pred {p.shape} and target {t.shape} must have the same shape [B, ..., D]")
    p = p.reshape(p.shape[0], -1, p.shape[-1])
    t = t.reshape(t.shape[0], -1, t.shape[-1])
    # float32 elementwise, float64 reductions: paper-size batches are ~0.3 GB per copy
    d = p - t
    ad = np.abs(d)
    sl1 = np.where(ad < 1.0, 0.5 * d * d, ad - 0.5)

    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("btd,btd->bt", a, b, dtype=np.float64)

    cos = dot(p, t) / np.maximum(np.sqrt(dot(p, p) * dot(t, t)), eps)
    return {"l2": np.sqrt(dot(d, d)).mean(axis=1), "smooth_l1": sl1.mean(axis=(1, 2), dtype=np.float64),
            "cosine": (1.0 - cos).mean(axis=1)}


class LatentMeter:
    """Sample-weighted mean of `latent_token_metrics` over batches of predicted vs cached latents."""

    KEYS = ("l2", "smooth_l1", "cosine")

    def __init__(self) -> None:
        self.n = 0
        self._sum = dict.fromkeys(self.KEYS, 0.0)

    def update(self, pred: Any, target: Any) -> None:
        m = latent_token_metrics(pred, target)
        self.n += len(m["l2"])
        for k in self.KEYS:
            self._sum[k] += float(m[k].sum())

    def compute(self) -> dict[str, Any]:
        """{l2, smooth_l1, cosine, n}; NaN with a warning when nothing was added."""
        if self.n == 0:
            warnings.warn("LatentMeter.compute() with no samples: latent metrics are NaN", RuntimeWarning,
                          stacklevel=2)
        out: dict[str, Any] = {k: float(_safe_div(self._sum[k], self.n)) for k in self.KEYS}
        out["n"] = self.n
        return out


# --------------------------------------------------------------------------- rollout stability


def nonfinite_fraction(x: Any) -> float:
    """Fraction of non-finite entries (NaN for an empty array)."""
    a = to_numpy(x)
    return float(_safe_div((~np.isfinite(a)).sum(), a.size))


def token_std(latents: Any) -> np.ndarray:
    """Spread of token vectors: std over the token axes, averaged over features.
    [B, ..., D] -> [B]; a collapsed predictor (every token the same) gives 0."""
    a = to_numpy(latents, np.float64)
    a = a.reshape(a.shape[0], -1, a.shape[-1])
    return a.std(axis=1).mean(axis=-1)


def collapse_flags(pred_std: Any, true_std: Any, ratio: float = 0.1) -> np.ndarray:
    """Per step: predicted token std below `ratio` x the true token std."""
    return to_numpy(pred_std, np.float64) < ratio * to_numpy(true_std, np.float64)


def explosion_flags(step_errors: Any, factor: float = 3.0) -> np.ndarray:
    """Per step: latent error above `factor` x the first step's error (non-finite counts as exploded)."""
    e = to_numpy(step_errors, np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"step_errors must be a non-empty 1-D per-step array, got shape {e.shape}")
    return ~np.isfinite(e) | (e > factor * e[0])


def stability_summary(step_errors: Any, pred_std: Any, true_std: Any, nonfinite: Any,
                      collapse_ratio: float = 0.1, explosion_factor: float = 3.0) -> dict[str, Any]:
    """Stability verdict from per-step arrays (latent error, token std of prediction and truth,
    non-finite fraction): per-step flags plus `stable` = none of the three failure modes anywhere."""
    nf = to_numpy(nonfinite, np.float64)
    col = collapse_flags(pred_std, true_std, collapse_ratio)
    exp = explosion_flags(step_errors, explosion_factor)
    return {
        "latent_error": [float(x) for x in to_numpy(step_errors, np.float64)],
        "pred_std": [float(x) for x in to_numpy(pred_std, np.float64)],
        "true_std": [float(x) for x in to_numpy(true_std, np.float64)],
        "nonfinite": [float(x) for x in nf],
        "collapse": [bool(x) for x in col], "explosion": [bool(x) for x in exp],
        "any_nonfinite": bool((nf > 0).any()), "any_collapse": bool(col.any()),
        "any_explosion": bool(exp.any()),
        "stable": bool(not (nf > 0).any() and not col.any() and not exp.any()),
        "collapse_ratio": collapse_ratio, "explosion_factor": explosion_factor,
    }


class StabilityMeter:
    """Accumulates per-rollout-step latent error, token std and non-finite fraction.

    `update(pred, target)` takes [B, S, ..., D] latents (S rollout steps, then token axes); `compute()`
    averages over samples and returns `stability_summary`."""

    def __init__(self, collapse_ratio: float = 0.1, explosion_factor: float = 3.0):
        self.collapse_ratio, self.explosion_factor = collapse_ratio, explosion_factor
        self.n = 0
        self._sums: np.ndarray | None = None  # [4, S]: error, pred std, true std, non-finite

    def update(self, pred: Any, target: Any) -> None:
        p, t = to_numpy(pred, np.float32), to_numpy(target, np.float32)
        if p.shape != t.shape or p.ndim < 3:
            raise ValueError(f"pred {p.shape} and target {t.shape} must both be [B, S, ..., D]")
        b, s = p.shape[:2]
        rows = []
        for k in range(s):
            pk, tk = p[:, k], t[:, k]
            rows.append([latent_token_metrics(pk, tk)["l2"].sum(), token_std(pk).sum(), token_std(tk).sum(),
                         (~np.isfinite(pk)).reshape(b, -1).mean(axis=1).sum()])
        sums = np.asarray(rows, dtype=np.float64).T
        if self._sums is None:
            self._sums = sums
        elif self._sums.shape != sums.shape:
            raise ValueError(f"this meter saw {self._sums.shape[1]} rollout steps before, now {s}")
        else:
            self._sums += sums
        self.n += b

    def compute(self) -> dict[str, Any]:
        if self._sums is None:
            raise ValueError("StabilityMeter.compute() before any update")
        err, ps, ts, nf = self._sums / self.n
        out = stability_summary(err, ps, ts, nf, self.collapse_ratio, self.explosion_factor)
        out["n"] = self.n
        return out
