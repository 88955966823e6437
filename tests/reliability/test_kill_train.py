"""SIGKILL of `tjepa train` at random moments and inside/between checkpoint writes, then a resume.

After every kill: each RUN/*.pt loads with torch.load(weights_only=True) (never half-written).
After the resume: it finishes, metrics.jsonl has epochs 1..E exactly once each, in order, and the
final metrics and weights equal an uninterrupted run's (exact resume on CPU).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from reliability_tools import kill_after, kill_when, partial_files, run, spawn, tjepa_cmd

pytestmark = pytest.mark.reliability

EPOCHS = 4
VOLATILE = {"time", "samples_per_s"}
RANDOM_TRIALS = 8
SEED = 4242


@pytest.fixture(scope="module")
def train_store(tmp_path_factory):
    import store_factory as sf

    return sf.write_store(tmp_path_factory.mktemp("train") / "s.zarr",
                          sf.FactoryConfig(n=12, groups=6, n_past=4, n_future=4, speed=0.05, spread=0.02))


def train_args(store: Path, run_dir: Path) -> list[str]:
    return ["train", "--cache", str(store), "--out", str(run_dir), "--preset", "tiny", "--epochs", str(EPOCHS),
            "--batch-size", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def reference_run(train_store, tmp_path_factory):
    """(run dir, seconds from the trainer's start (config.json written) to the end of the run)."""
    run_dir = tmp_path_factory.mktemp("train_ref") / "run"
    proc = spawn(tjepa_cmd(*train_args(train_store, run_dir)), run_dir.parent / "logs")
    _wait_for_start(proc, run_dir)
    t0 = time.monotonic()
    proc.wait(timeout=600)
    assert proc.returncode == 0, (run_dir.parent / "logs" / "proc.err").read_text()
    return run_dir, time.monotonic() - t0


def _wait_for_start(proc, run_dir: Path, timeout: float = 120) -> None:
    """Until the trainer has written RUN/config.json (imports, store and model set-up are done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not (run_dir / "config.json").exists():
        time.sleep(0.005)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def unloadable_checkpoints(run_dir: Path) -> list[str]:
    bad = []
    for p in sorted(run_dir.glob("*.pt")):
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
            assert ckpt["format"] == "tjepa-checkpoint" and "model" in ckpt
        except Exception as err:  # noqa: BLE001 (any failure to load is the finding)
            bad.append(f"{p.name}: {type(err).__name__}: {err}")
    return bad


def check_resume(name, run_dir, train_store, reference_run, figures, killed, **fields):
    after_kill_bad = unloadable_checkpoints(run_dir)
    epochs_at_kill = [m["epoch"] for m in metrics(run_dir)]
    ckpt_epoch = (torch.load(run_dir / "ckpt_latest.pt", weights_only=True)["epoch"]
                  if (run_dir / "ckpt_latest.pt").exists() else 0)
    leftovers = len(partial_files(run_dir)) if run_dir.exists() else 0
    res = run(tjepa_cmd(*train_args(train_store, run_dir)))
    lines = metrics(run_dir)
    epochs = [m["epoch"] for m in lines]
    ref_dir, _ = reference_run
    ref = metrics(ref_dir)
    same = [{k: v for k, v in m.items() if k not in VOLATILE} for m in lines] == \
        [{k: v for k, v in m.items() if k not in VOLATILE} for m in ref]
    figures.record(name, killed=killed, metrics_epochs_at_kill=len(epochs_at_kill), checkpoint_epoch_at_kill=ckpt_epoch,
                   half_written_checkpoints=len(after_kill_bad), leftover_temp_files=leftovers,
                   resume_ok=res.returncode == 0, epoch_gaps_or_duplicates=int(epochs != list(range(1, EPOCHS + 1))),
                   matches_uninterrupted=same, **fields)
    assert after_kill_bad == [], after_kill_bad
    assert res.returncode == 0, res.stdout + res.stderr
    assert partial_files(run_dir) == [], "the resumed run left a killed write's temp file behind"
    assert unloadable_checkpoints(run_dir) == []
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    assert same, "the resumed run's metrics differ from the uninterrupted run's"
    a = torch.load(run_dir / "ckpt_latest.pt", weights_only=True)["model"]
    b = torch.load(ref_dir / "ckpt_latest.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_sigkill_train_at_a_random_moment(trial, tmp_path, train_store, reference_run, figures):
    rng = random.Random(SEED + trial)
    span = reference_run[1]
    run_dir = tmp_path / "run"
    killed, delay = False, None
    for _ in range(4):  # finished before the delay (load varies): draw again from what it took
        proc = spawn(tjepa_cmd(*train_args(train_store, run_dir)), tmp_path / "logs")
        _wait_for_start(proc, run_dir)  # the delay counts from here: start-up is not training
        t0 = time.monotonic()
        delay = rng.uniform(0.02, 0.98) * span
        killed = kill_after(proc, delay)
        if killed:
            break
        span = time.monotonic() - t0
        shutil.rmtree(run_dir)
    assert killed, "training always finished before the kill"
    check_resume("train_sigkill_random", run_dir, train_store, reference_run, figures, killed, trial=trial,
                 delay_s=round(delay, 2))


def _tmp_exists(run_dir: Path, stem: str):
    return lambda: any(p.name.startswith(f".{stem}.tmp") for p in run_dir.iterdir())


def _lines_over(path: Path, n: int):
    return lambda: path.exists() and path.read_bytes().count(b"\n") > n


def _holds_epoch(path: Path, epoch: int):
    """True once the checkpoint at `path` is of epoch >= `epoch` (reloaded only when it changes)."""
    seen: dict = {}

    def check() -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (st.st_ino, st.st_mtime_ns)
        if key not in seen:
            seen[key] = torch.load(path, weights_only=True, map_location="cpu")["epoch"]
        return seen[key] >= epoch

    return check


# Where to kill: (what, the epoch (1-based) whose save is hit, predicate factory(run_dir, epoch)).
# Epoch 1 always improves on "no best yet", so ckpt_best.pt is certainly written then.
POINTS = [
    ("inside the write of ckpt_best.pt", 1, lambda d, e: _tmp_exists(d, "ckpt_best.pt")),
    ("after ckpt_best.pt, before ckpt_latest.pt", 1, lambda d, e: _holds_epoch(d / "ckpt_best.pt", e)),
    ("inside the write of ckpt_latest.pt", 2, lambda d, e: _tmp_exists(d, "ckpt_latest.pt")),
    ("after metrics.jsonl, before the checkpoints", 2, lambda d, e: _lines_over(d / "metrics.jsonl", e - 1)),
    ("inside the write of ckpt_latest.pt", 3, lambda d, e: _tmp_exists(d, "ckpt_latest.pt")),
]


@pytest.mark.parametrize("point", range(len(POINTS)))
def test_sigkill_train_at_a_checkpoint_write(point, tmp_path, train_store, reference_run, figures):
    name, epoch, make = POINTS[point]
    run_dir = tmp_path / "run"
    proc = spawn(tjepa_cmd(*train_args(train_store, run_dir)), tmp_path / "logs")
    deadline = time.monotonic() + 120
    while not run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Skip the saves of earlier epochs: wait until the previous epoch's latest checkpoint is in place.
    if epoch > 1:
        prev = _holds_epoch(run_dir / "ckpt_latest.pt", epoch - 1)
        while proc.poll() is None and time.monotonic() < deadline and not prev():
            time.sleep(0.005)
    killed = kill_when(proc, make(run_dir, epoch), timeout=120, poll=0.0002)
    check_resume("train_sigkill_at_checkpoint", run_dir, train_store, reference_run, figures, killed,
                 point=name, epoch=epoch)
    assert killed, f"missed the moment: {name} (epoch {epoch})"
