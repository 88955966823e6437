"""The causal split: which frames the observed clip and the forecast horizon use (docs/method.md §2).

One function, used by every branch (V-JEPA past/future, the VLM, the supervision), so that no branch
can drift to other frames. The observed window is the first half of the episode, the horizon the
second half, each sub-sampled uniformly; no past index ever reaches the second half.
"""

from __future__ import annotations

import numpy as np


def min_frames_for_split(n_past: int = 32, n_future: int = 32) -> int:
    """Smallest frame count T for which `causal_split(T, n_past, n_future)` succeeds.

    With m = T // 2 we need m >= n_past and T - m = ceil(T / 2) >= n_future.
    """
    _check_counts(n_past, n_future)
    return max(2 * n_past, 2 * n_future - 1)


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


def _check_counts(n_past: int, n_future: int) -> None:
    for name, value in (("n_past", n_past), ("n_future", n_future)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
