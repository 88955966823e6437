"""Stage one on a real dask.distributed LocalCluster with two worker processes (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zarr
from cache_helpers import assert_same_features, cache_args, copy_tree, rows_by_video, run_cli

from tjepa.cache_schema.ledger import Ledger


@pytest.fixture(scope="module")
def single_process_store(synth_root, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "store.zarr"
    res = run_cli(cache_args(synth_root, out, tiny_models))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_two_workers_write_the_same_store_as_one_process(tmp_path, synth_root, tiny_models, single_process_store):
    out = tmp_path / "dask.zarr"
    res = run_cli(cache_args(synth_root, out, tiny_models, "--workers", "2"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_features(out, single_process_store)
    assert_same_features(out, single_process_store, arrays=("targets/joints_future", "vlm/think_text", "index/fps"))
    assert run_cli(["validate", str(out)]).returncode == 0


def test_a_killed_worker_loses_no_row(tmp_path, synth_root, tiny_models, single_process_store):
    from distributed import Client, LocalCluster

    out = tmp_path / "killed.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            cmd = [
                sys.executable, "-m", "tjepa",
                # the reference's batch size: a row's states depend on its batch at float rounding (README)
                *cache_args(synth_root, out, tiny_models, "--scheduler", cluster.scheduler_address),
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            killed = False
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                try:
                    done = int((zarr.open_group(str(out), mode="r")["index/status"][:] == 1).sum())
                except Exception:  # not created yet
                    done = 0
                if done >= 1:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.05)
            stdout, stderr = proc.communicate(timeout=300)
    assert killed, "the job ended before a worker could be killed"
    assert proc.returncode == 0, stdout + stderr
    assert run_cli(["validate", str(out)]).returncode == 0
    assert_same_features(out, single_process_store)


def test_a_corrupt_video_on_one_worker_does_not_affect_the_others(tmp_path, synth_root, tiny_models):
    tree = copy_tree(synth_root, tmp_path / "videos", n=4)
    task = sorted(p for p in tree.iterdir() if p.is_dir())[0]
    (task / "broken.mp4").write_bytes(b"\x00" * 1000)
    (task / "broken.hdf5").write_bytes(b"")
    out = tmp_path / "store.zarr"
    res = run_cli(cache_args(tree, out, tiny_models, "--workers", "2"))
    assert res.returncode == 3, res.stdout + res.stderr
    status = rows_by_video(out, "index/status")
    assert status.pop(f"{task.name}/broken.mp4") == 2
    assert set(status.values()) == {1} and len(status) == 4
    ledger = [f.__dict__ for f in Ledger.of_store(out).read()]
    assert [e["video"] for e in ledger] == [f"{task.name}/broken.mp4"]
    exported = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(e["video"], e["reason"]) for e in exported] == [(e["video"], e["reason"]) for e in ledger]
