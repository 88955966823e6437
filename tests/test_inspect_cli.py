"""`tjepa inspect`: the JSON summary's counts and per-array facts, and the human-readable tables."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tjepa.cache_schema import array_specs, fingerprint
from tjepa.cache_schema.testing import make_store, small_config, small_layout
from tjepa.cli import app


def test_inspect_json_reports_counts_identity_and_arrays(tmp_path):
    layout = small_layout()
    store = make_store(tmp_path / "s.zarr", layout, n=7, done=4)
    store.mark_failed(5, "g1/v5.mp4", "bad video")
    result = CliRunner().invoke(app, ["inspect", str(store.path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["rows"], out["done"], out["failed"], out["pending"]) == (7, 4, 1, 2)
    assert out["fingerprint"] == fingerprint(small_config()) and out["version"] == 2
    assert out["bytes"] == store.nbytes_on_disk() > 0
    assert out["ledger_entries"] == 1 and out["layout"] == layout.to_dict()
    arrays = {a["path"]: a for a in out["arrays"]}
    assert set(arrays) == {s.path for s in array_specs(layout)}
    past = arrays["vjepa/past"]
    assert past["shape"] == [7, 2, 3, 8] and past["chunks"] == [1, 2, 3, 8] and past["shards"] == [2, 2, 3, 8]
    assert past["codec"] == "none" and past["raw_bytes"] == 4 * 2 * 3 * 8 * 2
    assert past["dims"] == ["video", "past_tubelet", "patch", "channel"]
    assert arrays["index/status"]["shards"] is None and arrays["index/status"]["chunks"] == [2]
    valid = arrays["targets/valid_past"]
    assert valid["ratio"] == round(valid["raw_bytes"] / valid["stored_bytes"], 3)


def test_inspect_tables_and_errors(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=3, done=3)
    result = CliRunner().invoke(app, ["inspect", str(store.path)])
    assert result.exit_code == 0, result.output
    assert "3 done" in result.stdout and store.fingerprint in result.stdout
    assert "targets/joints_future" in result.stdout and "zstd+shuf" in result.stdout
    missing = CliRunner().invoke(app, ["inspect", str(tmp_path / "absent.zarr")])
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception)
