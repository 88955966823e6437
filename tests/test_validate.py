"""validate_store and `tjepa validate`: a good store passes; injected corruptions are each caught."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from tjepa.cache_schema.testing import make_store, small_layout
from tjepa.cache_schema.validate import validate_store
from tjepa.cli import app


@pytest.fixture()
def good(tmp_path):
    """A valid store: 5 rows (rows_per_shard 2), rows 0-3 done, row 4 failed (with its ledger line)."""
    store = make_store(tmp_path / "s.zarr", small_layout(), n=5, done=4)
    store.mark_failed(4, "g0/v4.mp4", "decode error")
    return store


def test_good_store_is_valid(good):
    assert validate_store(good.path) == []
    assert validate_store(good.path, full=False) == []


def only(problems: list[str], *needles: str) -> None:
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], problems


def test_nan_in_a_done_row(good):
    arr = zarr.open_array(good.path / "vjepa" / "future", mode="r+")
    block = arr[1]
    block[0, 0, 0] = np.nan
    arr[1] = block
    only(validate_store(good.path), "row 1 (g1/v1.mp4)", "vjepa/future has 1 non-finite")
    assert validate_store(good.path, full=False) == []  # structure-only mode does not read rows


def test_nan_in_a_pending_row_is_fine_but_in_a_valid_joint_is_not(good):
    good.add_rows(["new.mp4"], ["g"], [1], [1.0])  # pending, all NaN fill
    assert validate_store(good.path) == []
    joints = zarr.open_array(good.path / "targets" / "joints_past", mode="r+")
    valid = zarr.open_array(good.path / "targets" / "valid_past", mode="r+")
    j, v = joints[2], valid[2]
    j[1, 3, 0], v[1, 3] = np.inf, True
    j[1, 4, 0], v[1, 4] = np.nan, False  # invalid joints may hold anything
    joints[2], valid[2] = j, v
    only(validate_store(good.path), "row 2", "targets/joints_past has 1 valid joint(s) with non-finite")


@pytest.mark.parametrize("past,needle", [
    ([0, 2, 2, 5], "past_idx is not strictly increasing"),
    ([0, 2, 4, 25], "the past sees the future"),
    ([0, 2, 4, 99], "past_idx outside [0, 40)"),
])
def test_non_causal_indices(good, past, needle):
    arr = zarr.open_array(good.path / "index" / "past_idx", mode="r+")
    arr[3] = np.asarray(past, np.int32)
    only(validate_store(good.path), "row 3 (g1/v3.mp4)", needle)


def test_bad_status_value_and_failed_row_without_ledger(good):
    status = zarr.open_array(good.path / "index" / "status", mode="r+")
    status[0] = 7
    only(validate_store(good.path), "index/status", "row 0 = 7")
    status[0] = 1
    shutil.rmtree(good.path / "failures")
    only(validate_store(good.path), "failures", "'g0/v4.mp4'")


def test_missing_array_and_wrong_dtype(good):
    shutil.rmtree(good.path / "vlm" / "think_mean")
    only(validate_store(good.path), "vlm/think_mean: missing")
    g = zarr.open_group(good.path, mode="r+")
    del g["thumbs/last_past"]
    g["thumbs"].create_array("last_past", shape=(5, 4, 6, 3), chunks=(1, 4, 6, 3), shards=(2, 4, 6, 3),
                             dtype="float32", dimension_names=("video", "y", "x", "rgb"))
    problems = validate_store(good.path)
    assert len(problems) == 2 and "thumbs/last_past: dtype float32, expected uint8" in problems


def test_think_ids_padding_and_lengths(good):
    ids = zarr.open_array(good.path / "vlm" / "think_ids", mode="r+")
    lens = zarr.open_array(good.path / "vlm" / "think_len", mode="r+")
    lens[0] = 2
    ids[0] = np.array([5, -1, -1], np.int32)
    only(validate_store(good.path), "row 0", "negative ids within think_len=2")
    ids[0] = np.array([5, 6, 7], np.int32)
    only(validate_store(good.path), "row 0", "not -1 padded after think_len=2")
    lens[0] = 9
    only(validate_store(good.path), "row 0", "think_len=9 outside [0, 3]")


def test_fingerprint_tampering_and_not_a_store(good, tmp_path):
    meta_file = good.path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["config"]["vlm"]["layers"] = [0, 1]
    meta_file.write_text(json.dumps(meta))
    only(validate_store(good.path), "fingerprint attribute does not match")
    only(validate_store(tmp_path / "nothing"), "does not exist")


def test_cli_exit_codes_and_output(good):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(good.path)])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    status = zarr.open_array(good.path / "index" / "status", mode="r+")
    status[1] = 9
    bad = runner.invoke(app, ["validate", str(good.path)])
    assert bad.exit_code == 1
    assert "1 problem(s)" in bad.stdout and "row 1 = 9" in bad.stdout


def test_wrong_dimension_names_reported_and_rows_still_checked(good):
    meta_file = good.path / "vjepa" / "past" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["dimension_names"] = ["a", "b", "c", "d"]
    meta_file.write_text(json.dumps(meta))
    arr = zarr.open_array(good.path / "vjepa" / "past", mode="r+")
    block = arr[0]
    block[...] = np.inf
    arr[0] = block
    problems = validate_store(good.path)
    assert len(problems) == 2
    assert "vjepa/past: dimension names ('a', 'b', 'c', 'd')" in problems[0]
    assert problems[1].startswith("row 0 (g0/v0.mp4): vjepa/past has 48 non-finite")


def test_interrupted_add_rows_is_one_problem(good):
    for spec in good.specs:  # arrays grown, `rows` not committed
        good.array(spec.path).resize((7, *spec.row_shape(good.layout)))
    only(validate_store(good.path), "extend beyond the 5 committed rows", "interrupted add_rows")
