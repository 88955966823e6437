"""The causal split: which frames the observed clip and the forecast horizon use (docs/method.md §2).

`sample_frames` is the one function every branch (V-JEPA past/future, the VLM, the supervision)
takes its indices from, so that no branch can drift to other frames. The observed window is the
first half of the episode, the horizon the second half; no past index ever reaches the second half.

Two ways to sample the observed half (method.md §11, the paper's "dual-temporal pathway"):
- uniform (`dense_window=0`, the authors' code): V-JEPA, the VLM and the past supervision all use
  `n_past` frames spread uniformly over the observed half;
- dense (`dense_window=W`): the V-JEPA observed clip and the past supervision are the W consecutive
  frames that end at the split (native frame rate, fine motion), while the VLM keeps the `n_past`
  uniform frames over the whole observed half (long-range context). The last observed frame is the
  same in both (m - 1), so the anchor of the forecast does not move.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FrameSampling(NamedTuple):
    """Source frame indices (int64, strictly increasing) of one episode."""

    past: np.ndarray  # the V-JEPA observed clip and the past supervision
    future: np.ndarray  # the V-JEPA future clip and the future supervision
    vlm: np.ndarray  # what the VLM sees (== past unless dense)


def min_frames_for_split(n_past: int = 32, n_future: int = 32, dense_window: int = 0) -> int:
    """Smallest frame count T for which `sample_frames(T, n_past, n_future, dense_window)` succeeds.

    With m = T // 2 we need m >= max(n_past, dense_window) and T - m = ceil(T / 2) >= n_future.
    """
    _check_counts(n_past, n_future)
    _check_window(dense_window)
    n_obs = max(n_past, dense_window)
    return max(2 * n_obs, 2 * n_future - 1)


def sample_frames(n_frames: int, n_past: int = 32, n_future: int = 32, dense_window: int = 0) -> FrameSampling:
    """The indices of every branch for an episode of `n_frames` frames (see the module docstring)."""
    _check_window(dense_window)
    uniform_past, future = causal_split(n_frames, n_past, n_future)
    if not dense_window:
        return FrameSampling(uniform_past, future, uniform_past)
    m = int(n_frames) // 2
    if m < dense_window:
        raise ValueError(f"{n_frames} frames cannot give a dense window of {dense_window} frames before the "
                         f"split at {m}; need at least {min_frames_for_split(n_past, n_future, dense_window)} frames")
    return FrameSampling(np.arange(m - dense_window, m, dtype=np.int64), future, uniform_past)


def causal_split(n_frames: int, n_past: int = 32, n_future: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return (past_idx, future_idx), int64 arrays of lengths n_past and n_future.

    m = n_frames // 2; past = linspace(0, m-1, n_past), future = linspace(m, n_frames-1, n_future),
    both truncated to int. Raises ValueError when the indices could not all be distinct
    (m < n_past or n_frames - m < n_future), so callers never get repeated frames silently.
    """
    _check_counts(n_past, n_future)
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)):
        raise TypeError(f"n_frames must be an int, got {type(n_frames).__name__}")
    n_frames = int(n_frames)
    m = n_frames // 2
    if m < n_past or n_frames - m < n_future:
        raise ValueError(
            f"{n_frames} frames cannot give {n_past} distinct past and {n_future} distinct future frames "
            f"(split at {m}); need at least {min_frames_for_split(n_past, n_future)} frames"
        )
    # Step >= 1 on both sides (checked above), so truncation keeps the indices strictly increasing.
    # numpy's float linspace is kept on purpose (the reference release uses it): e.g. for T=308 and
    # 64 frames, 50.99999999999999 truncates to 50 where exact arithmetic gives 51.
    past = np.linspace(0, m - 1, n_past).astype(np.int64)
    future = np.linspace(m, n_frames - 1, n_future).astype(np.int64)
    return past, future


def _check_window(dense_window: int) -> None:
    if isinstance(dense_window, bool) or not isinstance(dense_window, (int, np.integer)) or dense_window < 0:
        raise ValueError(f"dense_window must be an int >= 0 (0 = uniform sampling), got {dense_window!r}")


def _check_counts(n_past: int, n_future: int) -> None:
    for name, value in (("n_past", n_past), ("n_future", n_future)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
