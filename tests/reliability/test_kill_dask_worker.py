"""A dask worker process killed (os.kill SIGKILL of its pid) while it runs a unit of `tjepa cache
--scheduler ADDR` on a LocalCluster started here: the job completes with no row lost or duplicated."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from cache_helpers import cache_args, summary_count
from reliability_tools import (
    CACHE_EXTRA,
    ledger,
    run,
    spawn,
    status_by_video,
    store_differences,
    tjepa_cmd,
    video_ids,
)

pytestmark = pytest.mark.reliability

TRIALS = 4
SEED = 777


@pytest.mark.parametrize("trial", range(TRIALS))
def test_worker_killed_mid_unit(trial, tmp_path, synth_root, tiny_models, reference, figures):
    from distributed import Client, LocalCluster

    rng = random.Random(SEED + trial)
    out = tmp_path / "store.zarr"
    killed_mid_unit = False
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)  # {worker address: pid}
        cmd = tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA,
                                    "--scheduler", cluster.scheduler_address))
        proc = spawn(cmd, tmp_path / "logs", "cache")
        # Seeded kill point: once `target` rows are committed (0 = while models load), a random
        # extra delay, then SIGKILL of a worker that is processing a unit at that moment.
        target = rng.randrange(0, len(reference.videos) // 2)  # later targets race the job's end
        wait = rng.uniform(0.0, 0.5)
        deadline = time.monotonic() + 240
        reached = None
        while time.monotonic() < deadline and proc.poll() is None:
            done_now = sum(s == 1 for s in status_by_video(out).values())
            busy = [w for w, keys in client.processing().items() if keys]
            if reached is None and done_now >= target and busy:
                reached = time.monotonic()
            if reached is not None and time.monotonic() - reached >= wait and busy:
                victim = busy[rng.randrange(len(busy))]
                done_at_kill = done_now
                os.kill(pids[victim], signal.SIGKILL)
                killed_mid_unit = True
                break
            time.sleep(0.02)
        proc.wait(timeout=400)
    stdout = (tmp_path / "logs" / "cache.out").read_text()
    stderr = (tmp_path / "logs" / "cache.err").read_text()

    n = len(reference.videos)
    status = status_by_video(out)
    ids = video_ids(out)
    diffs = store_differences(out, reference.path) if proc.returncode == 0 else ["job failed"]
    lost = len([v for v in reference.videos if status.get(v) != 1 or any(v in d for d in diffs)])
    encoded = summary_count(stdout, "this run: encoded") if proc.returncode == 0 else -1
    skipped = summary_count(stdout, "already done") if proc.returncode == 0 else -1
    duplicates = (len(ids) - len(set(ids))) + max(0, encoded + skipped - n)
    figures.record("dask_worker_sigkill", killed=killed_mid_unit, trial=trial, target_rows=target,
                   done_before_kill=done_at_kill if killed_mid_unit else -1, rows=n, rows_lost=lost,
                   duplicates=duplicates, ledger_lines=len(ledger(out)), job_ok=proc.returncode == 0)

    assert killed_mid_unit, "the job ended before a busy worker could be killed"
    assert proc.returncode == 0, stdout + stderr
    assert ledger(out) == [], "no video failed, so the ledger must stay empty"
    assert sorted(ids) == sorted(reference.videos) and duplicates == 0
    assert set(status.values()) == {1} and lost == 0
    assert diffs == [], diffs
    assert run(tjepa_cmd("validate", out)).returncode == 0
