"""The causal split (docs/method.md §2): properties for every valid input, golden values, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tjepa.pipeline.sampling import causal_split, min_frames_for_split, sample_frames


@st.composite
def valid_split(draw):
    n_past = draw(st.integers(1, 64))
    n_future = draw(st.integers(1, 64))
    n_frames = draw(st.integers(min_frames_for_split(n_past, n_future), 20_000))
    return n_frames, n_past, n_future


@settings(max_examples=400, deadline=None)
@given(valid_split())
def test_split_properties(args):
    n_frames, n_past, n_future = args
    past, future = causal_split(n_frames, n_past, n_future)
    m = n_frames // 2
    assert past.dtype == np.int64 and future.dtype == np.int64
    assert past.shape == (n_past,) and future.shape == (n_future,)
    assert np.all(np.diff(past) > 0) and np.all(np.diff(future) > 0)  # strictly increasing => distinct
    assert past.max() < future.min()  # no future frame in the observed clip
    assert not set(past.tolist()) & set(future.tolist())
    assert past[0] == 0 and future[0] == m
    if n_past > 1:
        assert past[-1] == m - 1  # spans the whole first half
    if n_future > 1:
        assert future[-1] == n_frames - 1
    assert future.max() < n_frames and past.min() >= 0
    # Within one index of the exact uniform grid (float linspace may round an integer down).
    exact_past = np.array([(m - 1) * i // max(n_past - 1, 1) for i in range(n_past)])
    assert np.all(np.abs(past - exact_past) <= 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(0, 200))
def test_refuses_when_indices_cannot_be_distinct(n_past, n_future, n_frames):
    m = n_frames // 2
    if m >= n_past and n_frames - m >= n_future:
        causal_split(n_frames, n_past, n_future)  # feasible: must not raise
        assert n_frames >= min_frames_for_split(n_past, n_future)
    else:
        with pytest.raises(ValueError, match="distinct"):
            causal_split(n_frames, n_past, n_future)
        assert n_frames < min_frames_for_split(n_past, n_future)


def test_golden_150_frames():
    past, future = causal_split(150)
    assert past.tolist() == [
        0,
        2,
        4,
        7,
        9,
        11,
        14,
        16,
        19,
        21,
        23,
        26,
        28,
        31,
        33,
        35,
        38,
        40,
        42,
        45,
        47,
        50,
        52,
        54,
        57,
        59,
        62,
        64,
        66,
        69,
        71,
        74,
    ]
    assert future.tolist() == [
        75,
        77,
        79,
        82,
        84,
        86,
        89,
        91,
        94,
        96,
        98,
        101,
        103,
        106,
        108,
        110,
        113,
        115,
        117,
        120,
        122,
        125,
        127,
        129,
        132,
        134,
        137,
        139,
        141,
        144,
        146,
        149,
    ]


def test_golden_minimum_and_small():
    past, future = causal_split(64)
    assert past.tolist() == list(range(32)) and future.tolist() == list(range(32, 64))
    past, future = causal_split(11, 3, 3)  # m = 5; future side has 6 frames
    assert past.tolist() == [0, 2, 4] and future.tolist() == [5, 7, 10]
    assert min_frames_for_split(32, 32) == 64
    assert min_frames_for_split(3, 4) == 7  # T=7: m=3 past slots, 4 future frames


def test_float_linspace_semantics_kept():
    # The reference release truncates numpy's float linspace; at T=308 with 64 frames one value is
    # 50.99999999999999 -> 50 (exact arithmetic would say 51). We keep the reference's indices.
    past, _ = causal_split(308, 64, 64)
    assert past[21] == 50


def test_bad_arguments():
    with pytest.raises(ValueError):
        causal_split(100, 0, 32)
    with pytest.raises(ValueError):
        causal_split(100, 32, -1)
    with pytest.raises(TypeError):
        causal_split(100.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 64"):
        causal_split(63)
    past, _ = causal_split(np.int64(64))
    assert past.size == 32


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 32), st.integers(1, 32), st.integers(1, 32), st.integers(0, 400))
def test_dense_window_sampling(n_past, n_future, window, extra):
    """Dense: V-JEPA/supervision = the `window` frames ending at the split; the VLM keeps the uniform frames."""
    n_frames = min_frames_for_split(n_past, n_future, window) + extra
    s = sample_frames(n_frames, n_past, n_future, window)
    m = n_frames // 2
    assert s.past.tolist() == list(range(m - window, m))  # native frame rate, ends at the split
    uniform_past, future = causal_split(n_frames, n_past, n_future)
    assert np.array_equal(s.vlm, uniform_past) and np.array_equal(s.future, future)
    assert s.past.max() < s.future.min() and s.vlm.max() < s.future.min()
    assert s.past[-1] == m - 1 and (n_past == 1 or s.vlm[-1] == m - 1)  # same last observed frame (anchor)


def test_dense_window_off_is_the_uniform_split_and_too_short_is_refused():
    s = sample_frames(150, 16, 16)
    assert np.array_equal(s.past, s.vlm) and np.array_equal(s.past, causal_split(150, 16, 16)[0])
    assert min_frames_for_split(8, 8, 40) == 80
    with pytest.raises(ValueError, match="dense window of 40"):
        sample_frames(79, 8, 8, 40)
    with pytest.raises(ValueError, match="dense_window"):
        sample_frames(100, 8, 8, -1)
