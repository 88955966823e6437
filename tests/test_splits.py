"""Group-disjoint, deterministic splits and their RUN/splits.json record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tjepa.errors import InputError
from tjepa.train.splits import EmptySplitError, assign_groups, make_splits, read_splits, write_splits


def _rows(n_groups: int, per_group: int = 3) -> tuple[list[str], np.ndarray, list[str]]:
    groups = [f"g{i % n_groups}" for i in range(n_groups * per_group)]
    videos = [f"{g}/{i}.mp4" for i, g in enumerate(groups)]
    return groups, np.ones(len(groups), bool), videos


def test_disjoint_complete_and_deterministic():
    groups, done, _ = _rows(10)
    done[[4, 7]] = False
    a = make_splits(groups, done, seed=7)
    b = make_splits(groups, done, seed=7)
    assert a == b
    rows = {k: set(a.rows(k)) for k in ("train", "val", "test")}
    assert sorted(rows["train"] | rows["val"] | rows["test"]) == sorted(np.flatnonzero(done).tolist())
    gsets = {k: {groups[i] for i in r} for k, r in rows.items()}
    assert not (gsets["train"] & gsets["val"]) and not (gsets["train"] & gsets["test"])
    assert not (gsets["val"] & gsets["test"])
    assert len(a.groups["val"]) == len(a.groups["test"]) == 1 and len(a.groups["train"]) == 8
    assert 4 not in rows["train"] | rows["val"] | rows["test"]  # pending rows never enter a split
    others = {tuple(make_splits(groups, done, seed=s).val) for s in range(8)}
    assert len(others) > 1  # the seed matters


@settings(max_examples=40, deadline=None)
@given(n_groups=st.integers(3, 40), seed=st.integers(0, 2**31 - 1),
       val=st.floats(0.01, 0.3), test=st.floats(0.01, 0.3))
def test_every_split_non_empty_from_three_groups(n_groups, seed, val, test):
    by = assign_groups([f"t{i}" for i in range(n_groups)], (1 - val - test, val, test), seed)
    assert all(len(by[k]) >= 1 for k in ("train", "val", "test"))
    assert sum(len(v) for v in by.values()) == n_groups
    assert len(set(by["train"]) | set(by["val"]) | set(by["test"])) == n_groups


def test_empty_split_errors_name_split_and_count():
    with pytest.raises(EmptySplitError, match=r"train split would be empty: 2 group"):
        assign_groups(["a", "b"], (0.8, 0.1, 0.1))
    with pytest.raises(EmptySplitError, match=r"train split would be empty: 1 group"):
        assign_groups(["a"], (0.5, 0.5, 0.0))
    by = assign_groups(["a", "b"], (0.5, 0.5, 0.0))  # test fraction 0 is allowed explicitly
    assert by["test"] == () and len(by["train"]) == len(by["val"]) == 1
    with pytest.raises(EmptySplitError, match="no done rows"):
        make_splits(["a", "b"], [False, False])


def test_splits_json_round_trip(tmp_path):
    groups, done, videos = _rows(5)
    sp = make_splits(groups, done, seed=3)
    write_splits(tmp_path, sp, videos)
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert doc["seed"] == 3 and doc["videos"]["test"] == [videos[i] for i in sp.test]
    assert read_splits(tmp_path, videos, done) == sp
    # the run's split survives the store growing new rows
    grown = videos + ["g9/new.mp4"]
    assert read_splits(tmp_path, grown, np.ones(len(grown), bool)).train == sp.train
    with pytest.raises(InputError, match="not done rows"):
        read_splits(tmp_path, videos[1:], done[1:])
