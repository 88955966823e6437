"""A store shared by many hosts (issue 11 item 6): the ledger needs no append, creation trusts no
PID of another host. Writers present different host identities through TJEPA_HOST."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from tjepa.cache_schema import creation
from tjepa.cache_schema.ledger import Ledger
from tjepa.cache_schema.store import FeatureStore
from tjepa.cache_schema.testing import make_store, small_config, small_layout
from tjepa.cache_schema.validate import validate_store
from tjepa.errors import StoreFormatError, TjepaError


def _write_failures(store: str, host: str, n: int) -> None:
    os.environ["TJEPA_HOST"] = host
    book = Ledger.of_store(store)
    for i in range(n):
        book.record(f"{host}/v{i}.mp4", f"reason {i} from {host}", row=i)


def test_ledger_writers_of_several_hosts_lose_nothing(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=2)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_failures, args=(str(store.path), f"node-{h}", 40)) for h in "abc"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = Ledger.of_store(store.path).read()
    assert len(records) == 120
    by_host = {h: sorted(int(f.video.split("/v")[1][:-4]) for f in records if f.host == h)
               for h in ("node-a", "node-b", "node-c")}
    assert all(v == list(range(40)) for v in by_host.values()), by_host
    assert all(f.reason == f"reason {f.row} from {f.host}" for f in records)
    assert [f.time for f in records] == sorted(f.time for f in records)
    # nothing is appended to a shared file: every record is its own object
    assert not (store.path / "failures.jsonl").exists()
    assert len(list((store.path / "failures").glob("*.json"))) == 120


def test_legacy_jsonl_ledger_is_still_read(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=2)
    line = {"time": "2026-01-01T00:00:00.000+00:00", "video": "g0/v0.mp4", "row": 0, "reason": "old"}
    (store.path / "failures.jsonl").write_text(json.dumps(line) + "\n")
    store.ledger.record("g0/v1.mp4", "new", row=1)
    assert [(f.video, f.reason) for f in store.ledger.read()] == [("g0/v0.mp4", "old"), ("g0/v1.mp4", "new")]


def _half_created(path, host: str, pid: int, age_s: float) -> None:
    """What a creator killed after writing its marker and some array metadata leaves behind."""
    path.mkdir(parents=True)
    marker = {"host": host, "pid": pid, "started": time.time() - age_s, "started_utc": "then", "token": "t0"}
    (path / creation.MARKER).write_text(json.dumps(marker))
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    (path / "vjepa" / "past").mkdir(parents=True)
    (path / "vjepa" / "past" / "zarr.json").write_text("{}")


def _create(path):
    return FeatureStore.open_or_create(path, small_layout(), small_config(), {"code_version": "t"})


def test_creation_of_another_host_is_not_judged_by_its_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("TJEPA_HOST", "node-b")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    # A recent creation on node-a: its pid means nothing here (dead here, maybe alive there): wait.
    fresh = tmp_path / "fresh.zarr"
    _half_created(fresh, "node-a", dead_pid, age_s=5)
    with pytest.raises(TjepaError, match=f"being created by host node-a pid {dead_pid}"):
        _create(fresh)
    with pytest.raises(StoreFormatError, match="creation did not finish.*node-a"):
        FeatureStore.open(fresh)
    # An old one is abandoned even though its pid is alive on this host (ours): taken over.
    old = tmp_path / "old.zarr"
    _half_created(old, "node-a", os.getpid(), age_s=creation.LEASE_S + 60)
    store = _create(old)
    assert store.n_rows == 0 and not (old / creation.MARKER).exists()
    assert validate_store(old) == []


def test_creation_on_the_same_host_checks_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv("TJEPA_HOST", "node-a")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / "live.zarr"
        marker_pid = sleeper.pid
        _half_created(live, "node-a", marker_pid, age_s=creation.LEASE_S + 60)
        (live / creation.MARKER).write_text(json.dumps({**creation.identity(), "pid": marker_pid, "token": "t",
                                                         "proc_start": creation._proc_start(marker_pid)}))
        with pytest.raises(TjepaError, match=f"pid {marker_pid}"):
            _create(live)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same marker once that process is gone: taken over at once, whatever its age
    store = _create(live)
    assert store.n_rows == 0 and validate_store(live) == []
    # a reused pid (alive, but another process start time) does not hold a creation either
    reused = tmp_path / "reused.zarr"
    _half_created(reused, "node-a", os.getpid(), age_s=0)
    (reused / creation.MARKER).write_text(json.dumps({**creation.identity(), "proc_start": "1", "token": "t"}))
    assert _create(reused).n_rows == 0


def test_a_directory_that_is_not_a_store_is_never_cleared(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TjepaError, match="not a tjepa store"):
        _create(other)
    assert (other / "notes.txt").read_text() == "mine"


def test_failures_jsonl_is_the_merged_export_and_is_not_read_twice(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=3)
    legacy = {"time": "2026-01-01T00:00:00.000+00:00", "video": "g0/v0.mp4", "row": 0, "reason": "old"}
    (store.path / "failures.jsonl").write_text(json.dumps(legacy) + "\n")
    store.ledger.record("g0/v1.mp4", "bad one", row=1)
    store.ledger.record("g0/v2.mp4", "bad two", row=2)
    assert store.ledger.export() == 3
    assert store.ledger.export() == 3  # rewriting it is idempotent: exported lines are not re-read
    lines = [json.loads(line) for line in (store.path / "failures.jsonl").read_text().splitlines()]
    assert [(d["video"], d["reason"]) for d in lines] == [("g0/v0.mp4", "old"), ("g0/v1.mp4", "bad one"),
                                                         ("g0/v2.mp4", "bad two")]
    assert "source" not in lines[0] and all(d["source"].startswith("failures/") for d in lines[1:])
    assert [f.video for f in store.ledger.read()] == ["g0/v0.mp4", "g0/v1.mp4", "g0/v2.mp4"]
