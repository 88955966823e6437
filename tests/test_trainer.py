"""The stage-two trainer end to end on tiny learnable stores (real zarr, the real tiny model)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import store_factory as sf  # noqa: E402

from tjepa.errors import ConfigMismatchError, TjepaError  # noqa: E402
from tjepa.train.checkpoint import atomic_save, load_checkpoint, load_run_model  # noqa: E402
from tjepa.train.loop import NonFiniteLossError, Trainer, train_run  # noqa: E402
from tjepa.train.run_config import TrainConfig, run_split_dataset  # noqa: E402

FC = sf.FactoryConfig(n=24, groups=6, n_past=4, n_future=4, keep_tokens=True, speed=0.05, spread=0.02)
VOLATILE = {"time", "samples_per_s"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return sf.write_store(tmp_path_factory.mktemp("trainer") / "s.zarr", FC)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=4, preset="tiny", lr_head=3e-3, lr_predictor=1e-3, device="cpu")
    return TrainConfig(**{**base, **kw})


def _stable(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in VOLATILE} for m in metrics]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_schedule_is_published():
    c = TrainConfig(epochs=200)
    assert c.lr_at(0) == (1e-3, 1e-4) and c.lr_at(65) == (1e-3, 1e-4)
    assert c.lr_at(66)[0] == pytest.approx(1e-4) and c.lr_at(132)[0] == pytest.approx(1e-4)
    assert c.lr_at(133)[0] == pytest.approx(1e-5) and c.lr_at(199) == (pytest.approx(1e-5), 1e-4)


def test_run_directory_metrics_and_weights_only_checkpoints(tmp_path, store):
    from tjepa.train.config import ModelConfig
    from tjepa.train.model import ThinkJEPA

    run = tmp_path / "run"
    hist = train_run(cfg(), store, run, progress=False)
    lines = _lines(run / "metrics.jsonl")
    assert _stable(lines) == _stable(hist) and [m["epoch"] for m in lines] == [1, 2, 3]
    keys = {"epoch", "train_loss", "train_traj", "train_latent", "val_ade", "val_fde", "val_acc",
            "val_latent", "lr_head", "lr_predictor", "samples_per_s", "time"}
    assert keys <= set(lines[0]) and all(np.isfinite(m["val_ade"]) for m in lines)
    assert [m["lr_head"] for m in lines] == pytest.approx([3e-3, 3e-4, 3e-5])
    assert {m["lr_predictor"] for m in lines} == {1e-3}
    doc = json.loads((run / "config.json").read_text())
    g = zarr.open_group(str(store), mode="r")
    videos = [str(v) for v in g["index/video"][:].tolist()]
    assert doc["store"]["fingerprint"] == g.attrs["fingerprint"] and doc["split"]["seed"] == 42
    assert doc["train"]["batch_size"] == 4 and doc["model"]["variant"] == "thinkjepa"
    assert doc["model"]["vjepa_width"] == FC.vjepa_width and doc["levels"] == list(FC.layers)
    splits = json.loads((run / "splits.json").read_text())
    assert sum(len(v) for v in splits["videos"].values()) == FC.n

    latest = torch.load(run / "ckpt_latest.pt", weights_only=True)  # plain tensors + JSON-able values
    best = torch.load(run / "ckpt_best.pt", weights_only=True)
    assert latest["epoch"] == 3 and json.loads(json.dumps(latest["config"])) == doc
    best_epoch = min(lines, key=lambda m: m["val_ade"])["epoch"]
    assert best["epoch"] == best_epoch and best["best_val_ade"] == pytest.approx(lines[best_epoch - 1]["val_ade"])
    model = ThinkJEPA(ModelConfig.from_dict(latest["config"]["model"]))
    model.load_state_dict(latest["model"])
    assert not list(run.glob(".*tmp*"))  # no temp files left behind

    # what evaluation uses: the best model and the held-out split, with the run's settings
    trained, ckpt = load_run_model(run, "best")
    test = run_split_dataset(run, store, "test")
    assert [videos[r] for r in test.rows] == splits["videos"]["test"] and test.levels == FC.layers
    with torch.no_grad():
        out = trained(torch.utils.data.default_collate([test[i] for i in range(len(test))]))
    assert torch.isfinite(out.traj_world).all() and ckpt["epoch"] == best_epoch
    other = sf.write_store(tmp_path / "other.zarr", sf.FactoryConfig(**{**FC.__dict__, "layers": (0, 1, 2)}))
    with pytest.raises(ConfigMismatchError, match="fingerprint"):
        run_split_dataset(run, other, "test")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails half way through the write
        atomic_save({"w": torch.zeros(1000), "bad": lambda: None}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))


def test_overfits_a_few_videos(tmp_path, store):
    c = cfg(epochs=45, limit=4, batch_size=2, lr_predictor=3e-3, head_lr_decay=1.0, preload=True)
    # Absolute-position head: the anchored default starts at persistence, so its first loss is small.
    hist = train_run(c, store, tmp_path / "run", progress=False, model_overrides={"anchor": "none"})
    assert hist[-1]["train_traj"] < 0.1 * hist[0]["train_traj"]
    assert hist[-1]["train_latent"] < 0.1 * hist[0]["train_latent"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path, store):
    noisy = {"dropout": 0.1, "drop_path": 0.1, "head_dropout": 0.1}  # exercise the RNG state
    c = cfg(epochs=4)
    full = Trainer(c, store, tmp_path / "full", progress=False, model_overrides=noisy)
    ref = full.fit()
    part = Trainer(c, store, tmp_path / "part", progress=False, model_overrides=noisy)
    first = part.fit(max_epochs=2)
    assert len(first) == 2 and not part.resuming
    with open(tmp_path / "part" / "metrics.jsonl", "a") as fh:  # a crash after the metrics line, before
        fh.write(json.dumps({**first[-1], "epoch": 3}) + "\n")  # the checkpoint: resume drops it
    again = Trainer(c, store, tmp_path / "part", progress=False, model_overrides=noisy)
    assert again.resuming and again.epoch == 2
    second = again.fit()
    assert _stable(first + second) == _stable(ref)
    assert _stable(_lines(tmp_path / "part" / "metrics.jsonl")) == _stable(ref)
    a, b = full.core.state_dict(), again.core.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_mismatch_and_starting_over(tmp_path, store):
    run = tmp_path / "run"
    Trainer(cfg(), store, run, progress=False).fit(max_epochs=1)
    with pytest.raises(ConfigMismatchError, match=r"train\.batch_size: 4 -> 2.*train\.seed: 42 -> 1"):
        Trainer(cfg(batch_size=2, seed=1), store, run, progress=False)
    with pytest.raises(ConfigMismatchError, match=r"model\.variant: 'thinkjepa' -> 'jepa'"):
        Trainer(cfg(), store, run, progress=False, model_overrides={"variant": "jepa"})
    same = Trainer(cfg(preload=True, num_workers=1), store, run, progress=False)  # operational only
    assert same.resuming and same.epoch == 1
    with pytest.warns(UserWarning, match="starting over"):
        fresh = Trainer(cfg(batch_size=2), store, run, resume=False, progress=False)
    assert not fresh.resuming and fresh.epoch == 0 and not (run / "metrics.jsonl").exists()
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 2


def test_a_run_from_before_new_model_keys_still_resumes(tmp_path, store):
    """config.json written before model.head/rope/init/cond_style existed: an absent key is its default."""
    run = tmp_path / "run"
    Trainer(cfg(epochs=2), store, run, progress=False).fit(max_epochs=1)
    doc = json.loads((run / "config.json").read_text())
    new_keys = ("head", "rope", "init", "cond_style")
    for key in new_keys:
        del doc["model"][key]
    (run / "config.json").write_text(json.dumps(doc))
    resumed = Trainer(cfg(epochs=2), store, run, progress=False)
    assert resumed.resuming and resumed.epoch == 1
    assert {k: json.loads((run / "config.json").read_text())["model"][k] for k in new_keys} == \
        {"head": "ours", "rope": "thw", "init": "ours", "cond_style": "ours"}  # rewritten in today's shape
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigMismatchError, match=r"model\.rope: '<absent>' -> 'frame_patch'"):
        Trainer(cfg(epochs=2), store, run, progress=False, model_overrides={"rope": "frame_patch"})


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    store = sf.write_store(tmp_path / "s.zarr", FC)
    run = tmp_path / "run"
    Trainer(cfg(), store, run, progress=False).fit(max_epochs=1)
    digest = hashlib.sha256((run / "ckpt_latest.pt").read_bytes()).hexdigest()
    train_rows = [i for i, v in enumerate(zarr.open_group(str(store), mode="r")["index/video"][:].tolist())
                  if v in json.loads((run / "splits.json").read_text())["videos"]["train"]]
    g = zarr.open_group(str(store), mode="r+")
    past = g["vjepa/past"][train_rows[0]]
    past[0, 0, 0] = np.nan
    g["vjepa/past"][train_rows[0]] = past
    with pytest.raises(NonFiniteLossError, match=rf"epoch 2.*store rows .*{train_rows[0]}.*epoch 1\) is untouched"):
        Trainer(cfg(), store, run, progress=False).fit()
    assert hashlib.sha256((run / "ckpt_latest.pt").read_bytes()).hexdigest() == digest
    assert load_checkpoint(run / "ckpt_latest.pt")["epoch"] == 1 and len(_lines(run / "metrics.jsonl")) == 1


def _corrupt_rows(store: Path, rows: list[int]) -> None:
    """Overwrite the shards of these rows (one row per shard) in every per-row array with garbage."""
    for meta in store.rglob("zarr.json"):
        arr = meta.parent
        doc = json.loads(meta.read_text())
        if doc.get("node_type") != "array" or doc["codecs"][0]["name"] != "sharding_indexed":
            continue  # the index and other block arrays are read whole by design
        for r in rows:
            for f in (arr / "c" / str(r)).rglob("*") if (arr / "c" / str(r)).is_dir() else [arr / "c" / str(r)]:
                if f.is_file():
                    f.write_bytes(b"not a chunk")


@pytest.mark.parametrize("preload", [False, True])
def test_training_never_reads_test_rows(tmp_path, preload):
    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(**{**FC.__dict__, "rows_per_shard": 1}))
    from tjepa.train.data import CacheDataset, read_index
    from tjepa.train.splits import make_splits

    idx = read_index(store)
    test_rows = list(make_splits(idx.groups, idx.done, (0.8, 0.1, 0.1), 42).test)
    assert test_rows
    _corrupt_rows(store, test_rows)
    with pytest.raises(Exception):  # noqa: B017 - any codec error proves the chunk is unreadable
        CacheDataset(store, rows=test_rows[:1])[0]
    workers = 0 if preload else 2  # lazy reads also run in DataLoader worker processes
    hist = train_run(cfg(epochs=2, preload=preload, num_workers=workers), store, tmp_path / "run", progress=False)
    assert len(hist) == 2 and all(np.isfinite(m["val_ade"]) for m in hist)


def test_beats_persistence_on_val(tmp_path):
    # fast motion, nearly fixed hand positions: holding the last pose is clearly wrong, and the
    # motion is readable from the latents and the thinking-stream means
    fc = sf.FactoryConfig(n=96, groups=12, n_past=4, n_future=4, speed=0.08, spread=0.005)
    store = sf.write_store(tmp_path / "s.zarr", fc)
    run = tmp_path / "run"
    hist = train_run(cfg(epochs=20, batch_size=8, preload=True, head_lr_decay=1.0), store, run, progress=False)
    videos = [str(v) for v in zarr.open_group(str(store), mode="r")["index/video"][:].tolist()]
    val = [videos.index(v) for v in json.loads((run / "splits.json").read_text())["videos"]["val"]]
    persist = sf.persistence_ade(store, val)
    best = min(m["val_ade"] for m in hist)
    assert best < 0.8 * persist, (best, persist)


def test_cli_train_levels_tokens_and_mismatch(tmp_path, store):
    from tjepa.cli import app

    def cli(run: Path, batch: str = "4", levels: str = "0,4"):
        return CliRunner().invoke(app, [
            "train", "--cache", str(store), "--out", str(run), "--preset", "tiny", "--epochs", "1",
            "--batch-size", batch, "--levels", levels, "--conditioning", "crossattn", "--no-progress",
            "--device", "cpu"])

    run = tmp_path / "run"
    res = cli(run)
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "config.json").read_text())
    assert doc["levels"] == [0, 4] and doc["model"]["levels"] == 2 and doc["train"]["levels"] == [0, 4]
    assert doc["model"]["conditioning"] == "crossattn" and len(_lines(run / "metrics.jsonl")) == 1
    res = cli(run, batch="2")
    assert isinstance(res.exception, ConfigMismatchError) and "batch_size" in str(res.exception)
    res = cli(tmp_path / "other", levels="0,3")
    assert isinstance(res.exception, TjepaError) and "captured" in str(res.exception)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, store):
    torchrun = Path(sys.executable).with_name("torchrun")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tjepa",
         "train", "--cache", str(store), "--out", str(run), "--preset", "tiny", "--epochs", "2",
         "--batch-size", "2", "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in lines] == [1, 2]  # rank 0 alone writes
    ckpt = load_checkpoint(run / "ckpt_latest.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["rng"]) == 2  # one RNG state per rank
