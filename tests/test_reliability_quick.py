"""The quick part of the reliability suite (runs in `make test`; the full one is `make reliability`).

- SIGKILL of `tjepa cache` at 3 seeded random moments on a 3-video set: the rerun completes, the
  store validates, equals the uninterrupted run array for array, and skips rows done before the kill;
- safety: no trust_remote_code, weights_only checkpoints (static and behaviour), no pickles in the
  store, dataset ids that cannot escape the output;
- disk: an unwritable output directory and a read-only store give errors naming the path.
"""

from __future__ import annotations

import random
import shutil
import time

import pytest
from cache_helpers import cache_args, copy_tree, summary_count
from reliability_tools import (
    CACHE_EXTRA,
    done_rows_snapshot,
    from_pretrained_calls,
    kill_after,
    run,
    snapshot_changes,
    spawn,
    status_by_video,
    store_differences,
    store_pickle_problems,
    tjepa_cmd,
    unsafe_loading_calls,
    unwritable_dir,
    write_malicious_checkpoint,
)


@pytest.fixture(scope="module")
def small_set(synth_root, tmp_path_factory):
    return copy_tree(synth_root, tmp_path_factory.mktemp("quick") / "videos", n=3)


@pytest.fixture(scope="module")
def quick_reference(small_set, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick_ref") / "store.zarr"
    t0 = time.monotonic()
    res = run(tjepa_cmd(*cache_args(small_set, out, tiny_models, *CACHE_EXTRA)))
    assert res.returncode == 0, res.stdout + res.stderr
    return out, time.monotonic() - t0


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_cache_then_rerun(trial, tmp_path, small_set, tiny_models, quick_reference):
    ref, span = quick_reference
    rng = random.Random(97 + trial)
    out = tmp_path / "store.zarr"
    args = cache_args(small_set, out, tiny_models, *CACHE_EXTRA)
    for _ in range(4):  # finished before the delay (load varies): draw again from what it took
        proc = spawn(tjepa_cmd(*args), tmp_path / "logs")
        t0 = time.monotonic()
        if kill_after(proc, rng.uniform(0.05, 0.95) * span):
            break
        span = time.monotonic() - t0
        shutil.rmtree(out)
    else:
        pytest.fail("the job always finished before the kill")
    done_before = [v for v, s in status_by_video(out).items() if s == 1]
    snap = done_rows_snapshot(out) if done_before else {}
    res = run(tjepa_cmd(*args))
    assert res.returncode == 0, res.stdout + res.stderr
    assert run(tjepa_cmd("validate", out)).returncode == 0
    assert store_differences(out, ref) == []
    assert snapshot_changes(out, snap) == []
    assert summary_count(res.stdout, "already done") == len(done_before)
    assert summary_count(res.stdout, "this run: encoded") == 3 - len(done_before)


def test_no_pickle_codec_or_object_dtype_in_the_store(quick_reference):
    assert store_pickle_problems(quick_reference[0]) == []


def test_no_remote_code_and_weights_only_loading_in_the_code():
    assert unsafe_loading_calls() == []
    assert from_pretrained_calls(), "the scan found no model loading at all: is it looking at the code?"


def test_a_pickle_bomb_checkpoint_runs_nothing(tmp_path):
    from tjepa.errors import InputError
    from tjepa.train.checkpoint import load_checkpoint

    marker = tmp_path / "PICKLE_RAN"
    write_malicious_checkpoint(tmp_path / "ckpt_latest.pt", marker)
    with pytest.raises(InputError, match="ckpt_latest.pt"):
        load_checkpoint(tmp_path / "ckpt_latest.pt")
    assert not marker.exists()


def test_dataset_ids_stay_relative(tmp_path, synth_root):
    from tjepa.pipeline.sources import discover

    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(sorted(synth_root.rglob("*.mp4"))[0], outside / "v.mp4")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "up").symlink_to("../..", target_is_directory=True)
    (tree / "a" / "loop").symlink_to("..", target_is_directory=True)
    (tree / "link").symlink_to(outside, target_is_directory=True)
    with pytest.warns(UserWarning):
        ids = [e.id for e in discover(tree, "videos")]
    assert ids == ["link/v.mp4"]


def test_unwritable_output_and_read_only_store_name_the_path(tmp_path, small_set, tiny_models, quick_reference):
    from tjepa.cache_schema.store import FeatureStore
    from tjepa.errors import TjepaError

    with unwritable_dir(tmp_path / "locked"):
        out = tmp_path / "locked" / "store.zarr"
        res = run(tjepa_cmd(*cache_args(small_set, out, tiny_models, "--limit", "1")))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert str(out) in res.stderr.replace("\n", "")
    store = FeatureStore.open(quick_reference[0], mode="r")
    with pytest.raises(TjepaError, match=str(quick_reference[0])):
        store.write_row(0, store.read_row(0))
