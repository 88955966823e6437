"""Provenance a reviewer can audit (issue 11.4): run records, per-row run index, `tjepa inspect` warnings."""

from __future__ import annotations

import json

import numpy as np
from cache_helpers import run_cli

from tjepa.cache_schema.store import FeatureStore
from tjepa.cache_schema.testing import random_row, small_config, small_layout


def _record(batch_size: int, torch_version: str) -> dict:
    libs = {"tjepa": "0.1.0", "torch": torch_version, "transformers": "5.18.0", "zarr": "3.1.0", "pyav": "14.0"}
    return {"batch_size": batch_size, "device": "auto", "libraries": libs, "compute_dtype": "bfloat16",
            "generator": "transformers", "host": "node-a"}


def _two_runs(path, second: dict, second_gpu: str) -> None:
    """Rows 0-1 written by the creating run (batch 4, torch 2.13.0, an H200), rows 2-3 by `second`."""
    layout, cfg, rng = small_layout(), small_config(), np.random.default_rng(0)
    store = FeatureStore.create(path, layout, cfg, _record(4, "2.13.0"))
    store.add_rows([f"v{i}" for i in range(4)], ["g"] * 4, [1] * 4, [1.0] * 4)
    store.write_rows([0, 1], [random_row(layout, rng) for _ in range(2)], run=store.run_id)
    store.record_workers(store.run_id, [{"device": "cuda:0", "device_name": "NVIDIA H200",
                                         "libraries": {"torch": "2.13.0"}}])
    again = FeatureStore.open_or_create(path, layout, cfg, second)
    assert again.run_id == 1
    again.write_rows([2, 3], [random_row(layout, rng) for _ in range(2)], run=again.run_id)
    again.record_workers(again.run_id, [{"device": "cuda:0", "device_name": second_gpu,
                                         "libraries": {"torch": second["libraries"]["torch"]}}])


def test_inspect_warns_when_rows_come_from_different_batch_sizes_devices_and_versions(tmp_path):
    path = tmp_path / "mixed.zarr"
    _two_runs(path, _record(1, "2.14.0"), "NVIDIA A100")
    assert FeatureStore.open(path).array("index/run")[:4].tolist() == [0, 0, 1, 1]
    info = json.loads(run_cli(["inspect", str(path), "--json"]).stdout)
    text = "\n".join(info["warnings"])
    assert "different batch size: 4 (runs [0], 2 rows), 1 (runs [1], 2 rows)" in text
    assert "different device" in text and "NVIDIA H200" in text and "NVIDIA A100" in text
    assert "different torch: 2.13.0" in text and "2.14.0" in text
    assert "transformers" not in text  # the same everywhere: no warning
    res = run_cli(["inspect", str(path)])
    assert res.returncode == 0 and "warning:" in res.stdout and "--batch-size 1" in res.stdout


def test_no_warning_when_every_row_comes_from_one_setting(tmp_path):
    path = tmp_path / "same.zarr"
    _two_runs(path, _record(4, "2.13.0"), "NVIDIA H200")
    from tjepa.cache_schema.provenance_check import mixed_provenance

    assert mixed_provenance(FeatureStore.open(path)) == []
