"""SIGKILL of `tjepa cache` at random (seeded) moments, then a plain rerun.

Every rerun must finish with exit 0, `tjepa validate` must pass, the store must equal the
uninterrupted reference array for array, rows done before the kill must keep their content and be
counted as "already done" (not recomputed), and no row may be lost or appear twice.
"""

from __future__ import annotations

import random
import shutil
import time

import psutil
import pytest
from cache_helpers import cache_args, summary_count
from reliability_tools import (
    CACHE_EXTRA,
    done_rows_snapshot,
    kill_after,
    kill_when,
    partial_files,
    run,
    snapshot_changes,
    spawn,
    status_by_video,
    store_differences,
    tjepa_cmd,
    video_ids,
)

pytestmark = pytest.mark.reliability

TRIALS = 20
SEED = 20261124


def kill_and_rerun(trial_name, out, synth_root, tiny_models, reference, figures, kill, extra=(), **fields):
    """Start `tjepa cache`, let `kill(proc)` kill it, rerun in-process and check everything."""
    args = cache_args(synth_root, out, tiny_models, *CACHE_EXTRA, *extra)
    proc = spawn(tjepa_cmd(*args), out.parent / "logs", "killed")
    t0 = time.monotonic()
    killed = kill(proc)
    at = time.monotonic() - t0
    before = status_by_video(out)
    done_before = sorted(v for v, s in before.items() if s == 1)
    snap = done_rows_snapshot(out) if done_before else {}
    leftovers = len(partial_files(out)) if out.exists() else 0

    res = run(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA)))
    n = len(reference.videos)
    after = status_by_video(out)
    diffs = store_differences(out, reference.path) if res.returncode in (0, 3) else ["rerun failed"]
    changed = snapshot_changes(out, snap) if res.returncode in (0, 3) else []
    lost = len([v for v in reference.videos if after.get(v) != 1 or any(v in d for d in diffs)])
    encoded = summary_count(res.stdout, "this run: encoded") if res.returncode in (0, 3) else -1
    skipped = summary_count(res.stdout, "already done") if res.returncode in (0, 3) else -1
    ids = video_ids(out)
    duplicates = max(0, encoded + skipped - n) + (len(ids) - len(set(ids)))
    fields = {k: v() if callable(v) else v for k, v in fields.items()}  # known only after the kill
    figures.record(trial_name, killed=killed, wall_until_kill_s=round(at, 2), done_before_kill=len(done_before),
                   rows=n, rerun_encoded=encoded, rerun_skipped=skipped, rows_lost=lost,
                   duplicates=duplicates, done_rows_changed=len(changed), leftover_temp_files=leftovers,
                   rerun_ok=res.returncode == 0, **fields)

    assert res.returncode == 0, res.stdout + res.stderr
    val = run(tjepa_cmd("validate", out))
    assert val.returncode == 0, val.stdout + val.stderr
    assert diffs == [] and lost == 0
    assert changed == [], changed
    assert skipped == len(done_before), "rows done before the kill must be skipped, not recomputed"
    assert encoded == n - len(done_before) and duplicates == 0
    return killed


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_a_random_moment_then_rerun(trial, tmp_path, synth_root, tiny_models, reference, figures):
    """The delay is drawn (seeded) from the span of an uninterrupted run; should the job finish
    before it (machine load varies), the next draw comes from the span that job actually took."""
    rng = random.Random(SEED + trial)
    span = reference.seconds
    delays = []

    def kill(proc):
        t0 = time.monotonic()
        delays.append(rng.uniform(0.05, 0.95) * span)
        return kill_after(proc, delays[-1]) or retry(time.monotonic() - t0)

    def retry(took):
        nonlocal span
        if len(delays) >= 4:
            return False
        span = took
        out = tmp_path / "store.zarr"
        shutil.rmtree(out)
        proc = spawn(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA)), tmp_path / "logs")
        return kill(proc)

    killed = kill_and_rerun("cache_sigkill_random", tmp_path / "store.zarr", synth_root, tiny_models, reference,
                            figures, kill, trial=trial, delay_s=lambda: round(delays[-1], 2),
                            attempts=lambda: len(delays))
    assert killed, f"the job always finished before the kill (delays {delays})"


@pytest.mark.parametrize("rows_done", [1, 3])
def test_sigkill_right_after_a_commit(rows_done, tmp_path, synth_root, tiny_models, reference, figures):
    """Kill the moment the k-th status lands (mid-shard for odd k: the shard is rewritten later)."""
    out = tmp_path / "store.zarr"

    def kill(proc):
        return kill_when(proc, lambda: sum(s == 1 for s in status_by_video(out).values()) >= rows_done, poll=0.002)

    assert kill_and_rerun("cache_sigkill_after_commit", out, synth_root, tiny_models, reference, figures, kill,
                          rows_done=rows_done)


@pytest.mark.parametrize("trial", range(2))
def test_sigkill_of_a_dask_coordinator(trial, tmp_path, synth_root, tiny_models, reference, figures):
    """`--workers 2`: killing the coordinator must take its LocalCluster down with it (no orphan
    writing into the store while the rerun runs); the in-process rerun completes the store."""
    out = tmp_path / "store.zarr"
    rng = random.Random(SEED + 100 + trial)
    orphans: list[int] = []

    def kill(proc):
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not status_by_video(out):
            time.sleep(0.05)  # rows exist: the cluster is up or starting
        time.sleep(rng.uniform(0.5, 4.0))
        try:
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        killed = kill_after(proc, 0)
        _, alive = psutil.wait_procs(children, timeout=30)
        orphans.extend(p.pid for p in alive)
        for p in alive:  # do not leave them behind for the other tests
            p.kill()
        return killed

    kill_and_rerun("cache_sigkill_dask_coordinator", out, synth_root, tiny_models, reference, figures, kill,
                   extra=("--workers", "2"), trial=trial)
    figures.record("dask_coordinator_orphans", orphans=len(orphans))
    assert orphans == [], f"worker processes outlived their killed coordinator: {orphans}"


def test_kill_during_store_creation_then_rerun_completes(tmp_path, synth_root, tiny_models, reference, figures):
    """FeatureStore.create writes a marker first and the root's tjepa attributes last: a kill while
    it is being built leaves an uncommitted store with its marker, which the rerun (same host, dead
    pid) takes over and completes; no marker is left."""
    hit = False
    for attempt in range(5):
        out = tmp_path / f"store{attempt}.zarr"
        proc = spawn(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA)), tmp_path / "logs")
        kill_when(proc, lambda: (out / "creating.json").exists(), poll=0.0002)  # noqa: B023
        if (out / "creating.json").exists() and status_by_video(out) == {}:
            hit = True
            break
    assert hit, "could not kill inside the store-creation window"
    res = run(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA)))
    figures.record("cache_sigkill_during_creation", killed=True, rerun_ok=res.returncode == 0)
    assert res.returncode == 0, res.stdout + res.stderr
    assert store_differences(out, reference.path) == []
    assert not (out / "creating.json").exists()
