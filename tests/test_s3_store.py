"""Stores on object storage, against a real S3 server (SeaweedFS on loopback, tests/s3_server.py).

Only the standard AWS environment names the server and its credentials. Covered: cache to the
bucket SIGKILLed and rerun, validate and inspect there, rows equal to a local run; `--workers 2`
writing straight to the bucket; train and eval reading from it; bad credentials and a missing bucket;
a network failure in the middle of a row's write; the failure ledger and creation marker there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import store_factory as sf
import torch
from cache_helpers import FEATURE_ARRAYS, assert_same_features, cache_args, copy_tree
from s3_server import SECRET_KEY, TcpCutter
from typer.testing import CliRunner

from tjepa.cache_schema import creation
from tjepa.cache_schema.ledger import Ledger
from tjepa.cache_schema.storage import locate
from tjepa.cache_schema.store import DONE, FeatureStore
from tjepa.cache_schema.testing import make_store, random_row, small_layout
from tjepa.cli import app
from tjepa.errors import TjepaError

BUCKET = "tjepa-it"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def aws(s3_server):
    """This process and its children see only the AWS environment of the test server."""
    s3_server.make_bucket(BUCKET)
    mp_ = pytest.MonkeyPatch()
    for key, value in s3_server.env().items():
        if key.startswith("AWS_"):
            mp_.setenv(key, value)
    mp_.setenv("HF_HUB_OFFLINE", "1")
    yield s3_server
    mp_.undo()


@pytest.fixture(scope="module")
def videos(synth_root, tmp_path_factory):
    return copy_tree(synth_root, tmp_path_factory.mktemp("s3videos") / "v", n=3)


def _cache(videos, out, models, *extra: str) -> str:
    """`tjepa cache` in this process (one row per shard, so a kill lands between rows)."""
    res = CliRunner().invoke(app, [*cache_args(videos, out, models, "--rows-per-shard", "1"), *extra])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


@pytest.fixture(scope="module")
def local_store(aws, videos, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("s3local") / "store.zarr"
    _cache(videos, out, tiny_models)
    return out


def _status(url: str) -> np.ndarray:
    try:
        return FeatureStore.open(url).status()
    except TjepaError:  # not created yet
        return np.zeros(0, np.uint8)


def _secret_free(url: str, *outputs: str) -> None:
    loc = locate(url)
    metas = loc.get_many([k for k in loc.keys() if k.endswith(".json")])
    assert metas and not any(SECRET_KEY.encode() in blob for blob in metas.values())
    assert not any(SECRET_KEY in text for text in outputs)


def test_cache_killed_rerun_validate_on_the_bucket_equals_local(aws, videos, tiny_models, local_store):
    url = f"s3://{BUCKET}/killed.zarr"
    args = [sys.executable, "-m", "tjepa", *cache_args(videos, url, tiny_models, "--rows-per-shard", "1")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not (_status(url) == DONE).any():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    first = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, first
    killed_at = _status(url)
    assert 0 < int((killed_at == DONE).sum()) < 3, killed_at  # killed mid-job
    rerun = _cache(videos, url, tiny_models)
    assert "already done (skipped)" in rerun
    assert (_status(url) == DONE).all() and len(_status(url)) == 3
    assert_same_features(local_store, url, FEATURE_ARRAYS + ("targets/joints_future", "index/status"))
    checked = CliRunner().invoke(app, ["validate", url])
    assert checked.exit_code == 0 and "valid" in checked.output, checked.output
    summary = CliRunner().invoke(app, ["inspect", url, "--json"])
    assert summary.exit_code == 0, summary.output
    info = json.loads(summary.output)
    assert info["done"] == 3 and info["path"] == url and info["bytes"] > 0
    _secret_free(url, first, rerun, checked.output, summary.output)


def test_dask_workers_write_straight_to_the_bucket(aws, videos, tiny_models, local_store):
    url = f"s3://{BUCKET}/workers.zarr"
    _cache(videos, url, tiny_models, "--workers", "2")
    assert_same_features(local_store, url)


def _losses(run) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_and_eval_read_from_the_bucket(aws, tmp_path, one_thread):
    import s3fs

    cfg = sf.FactoryConfig(n=12, groups=6, n_past=8, n_future=8)
    local = sf.write_store(tmp_path / "s.zarr", cfg)
    url = f"s3://{BUCKET}/train.zarr"
    s3fs.S3FileSystem(skip_instance_cache=True).put(str(local), url.removeprefix("s3://"), recursive=True)
    metrics = {}
    train = ["train", "--preset", "tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    for name, store in (("local", str(local)), ("bucket", url)):
        run = tmp_path / f"run-{name}"
        res = CliRunner().invoke(app, [*train, "--cache", store, "--out", str(run)])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(app, ["eval", "--run", str(run), "--cache", store, "--device", "cpu",
                                       "--no-progress", "--figures", "1"])
        assert res.exit_code == 0, res.output
        metrics[name] = json.loads((run / "eval" / "metrics.json").read_text())
        assert json.loads((run / "config.json").read_text())["store"]["path"] == store
    for key in ("ade", "fde", "acc", "n", "per_step", "latent", "baselines"):
        assert metrics["bucket"][key] == metrics["local"][key], key
    # DataLoader worker processes reading the bucket: the same batches in the same order, so the same run
    run = tmp_path / "run-workers"
    res = CliRunner().invoke(app, [*train, "--cache", url, "--out", str(run), "--num-workers", "2"])
    assert res.exit_code == 0, res.output
    assert _losses(run) == _losses(tmp_path / "run-bucket")


@pytest.mark.parametrize("start", ["fork", "trainer"])
def test_workers_after_the_parent_read_the_bucket(aws, start):
    """Workers of a process whose store handles are open: forked ones open their own (their HTTP
    sessions belong to the parent's event loop; before, every read in them failed). The trainer's
    start from a fork server for a bucket, and the parent reads on after they end (after forked
    workers ended, its next reads stalled for 15 s: worker_context)."""
    from tjepa.train.data import CacheDataset
    from tjepa.train.loader import BatchLoader, worker_context

    url = f"s3://{BUCKET}/fork-{start}.zarr"
    make_store(url, layout=small_layout(rows_per_shard=2), n=6, done=6)
    order = [5, 0, 3, 1, 4, 2]
    want = list(BatchLoader(CacheDataset(url, require_targets=False), order, 4))
    ds = CacheDataset(url, require_targets=False)
    ds.read_batch([0])  # the parent reads (shard 0 only): its handles are open now
    context = mp.get_context("fork") if start == "fork" else worker_context(remote=True)
    loader = BatchLoader(ds, order, 4, num_workers=2, context=context)
    got = list(loader)
    if start == "trainer":
        del loader  # the workers end
        got += list(BatchLoader(CacheDataset(url, require_targets=False), order, 4))
        want += want
    assert [b["row"].tolist() for b in got[:2]] == [[5, 0, 3, 1], [4, 2]]
    for a, b in zip(want, got, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_row_cache_serves_the_next_epoch_and_keeps_its_bound(aws, tmp_path, monkeypatch):
    from tjepa.train import data
    from tjepa.train.data import CacheDataset
    from tjepa.train.loader import BatchLoader
    from tjepa.train.row_cache import RowCache

    monkeypatch.setattr(data, "BIG_ROW", 0)  # these tiny latents take the per-row path of real ones
    url = f"s3://{BUCKET}/cached.zarr"
    make_store(url, layout=small_layout(rows_per_shard=2), n=6)
    cutter = TcpCutter(int(aws.endpoint.rsplit(":", 1)[1]))
    order = [5, 0, 3, 1, 4, 2]

    def epoch(cache: RowCache, counted: bool = False) -> tuple[list[dict], int]:
        """One epoch of a new dataset (a new run, or a resumed one) and the GETs it sent for data."""
        options = {"endpoint_url": cutter.endpoint, "skip_instance_cache": True} if counted else None
        ds = CacheDataset(locate(url, options), require_targets=False, row_cache=cache)
        for name in ds.fields.values():
            ds.reader.array(name)  # metadata: read by every new dataset, cached or not
        before = cutter.gets
        batches = list(BatchLoader(ds, order, 4))
        return batches, cutter.gets - before

    try:
        cache = RowCache(tmp_path / "cache", max_gib=1)
        first, _ = epoch(cache)
        assert cache.nbytes() > 0
        again, gets = epoch(cache, counted=True)  # every read is local now
        assert gets == 0
        for a, b in zip(first, again, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
        # the same name deleted and cached again: other contents, never served from the old entries
        locate(url).delete(locate(url).keys())
        make_store(url, layout=small_layout(rows_per_shard=2), n=6, seed=1)
        fresh, _ = epoch(cache)
        assert not torch.equal(fresh[0]["vjepa_past"], first[0]["vjepa_past"])
        # a bound of a third of one epoch's entries: kept under it, the oldest evicted; and the batches
        # (read from the bucket into an empty cache) are those the recreated store's entries gave
        small = RowCache(tmp_path / "small", max_gib=cache.nbytes() / 2 / 3 / 2**30)
        bounded, _ = epoch(small)
        assert 0 < small.nbytes() <= small.max_bytes
        assert all(torch.equal(a[k], b[k]) for a, b in zip(bounded, fresh, strict=True) for k in a)
    finally:
        cutter.close()


def test_a_bucket_batch_gets_each_object_once_and_a_missing_small_shard_reads_as_fill(aws, monkeypatch):
    """Two flights per batch (train/shard_blobs.py): the latents' shard indexes with one GET per new
    shard of every small array, then a ranged GET per latent row; kept shards cost nothing after."""
    from torch.utils.data import default_collate

    from tjepa.cache_schema.reader import SPECS
    from tjepa.train import data
    from tjepa.train.data import CacheDataset

    layout = small_layout(rows_per_shard=2, patches=8, vjepa_width=512)  # latent rows the big ones (16 KiB)
    url = f"s3://{BUCKET}/flights.zarr"
    make_store(url, layout=layout, n=6)
    monkeypatch.setattr(data, "BIG_ROW", 2 * 8 * 512 * 2)
    cutter = TcpCutter(int(aws.endpoint.rsplit(":", 1)[1]))
    try:
        ds = CacheDataset(locate(url, {"endpoint_url": cutter.endpoint, "skip_instance_cache": True}))
        for name in ds.fields.values():
            ds.reader.array(name)  # metadata
        big = [n for n in ds.fields.values() if n.startswith("vjepa")]
        small = [n for n in ds.fields.values() if n not in big]
        assert all(ds._plan(n) for n in big) and all(ds._blob_plan(n) for n in small)
        assert all(SPECS[n].chunking == "row" for n in big) and len(small) >= 9
        before = cutter.gets
        got = ds.read_batch([5, 0, 3])  # shards 2, 0, 1
        assert cutter.gets - before == 2 * 3 + len(small) * 3 + 2 * 3
        before = cutter.gets
        again = ds.read_batch([4, 1])  # the same shards: only the latents
        assert cutter.gets - before == 2 * 2 + 2 * 2
        want = default_collate([ds[i] for i in (5, 0, 3)])
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert all(torch.equal(again[k], default_collate([ds[4], ds[1]])[k]) for k in again)
    finally:
        cutter.close()
    # a shard object that does not exist (zarr leaves out a shard that is all fill): the fill value
    ds = CacheDataset(url)
    plan = ds._blob_plan("valid_future")
    locate(url).delete([f"{plan.path}/{plan.key_of(1)}"])
    fresh = CacheDataset(url)
    got = fresh.read_batch([2, 3, 0])
    assert not got["valid_future"][:2].any() and got["valid_future"][2].any()
    want = default_collate([fresh[i] for i in (2, 3, 0)])
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_dvc_repro_tracks_a_store_in_the_bucket(aws, tmp_path):
    """dvc.yaml names each store `${store_root}/<name>`: a cache stage's output (cache: false) and a
    dependency of the stages after it. With `store_root: s3://...` in params.yaml, the AWS
    environment and dvc-s3, DVC tracks it in the bucket: runs, skips, and sees a changed row."""
    import yaml

    real = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert real["cache"]["do"]["outs"] == [{"${store_root}/${item.name}": {"cache": False}}]
    assert "${store_root}/${item.store}" in real["train"]["do"]["deps"]
    assert "${store_root}/${item.store}" in real["eval"]["do"]["deps"]
    url = f"s3://{BUCKET}/dvc.zarr"
    # the same declarations, one store, a stand-in for the commands
    stages = {"cache": {"foreach": "${stores}", "do": {
                  "cmd": "python make.py ${store_root}/${item.name}", "params": ["store_root"],
                  "outs": real["cache"]["do"]["outs"]}},
              "train": {"cmd": "python -c \"open('trained', 'w')\"", "deps": ["${store_root}/${stores.uniform.name}"],
                        "outs": [{"trained": {"cache": False}}]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"store_root": f"s3://{BUCKET}",
                                                          "stores": {"uniform": {"name": "dvc.zarr"}}}))
    (tmp_path / "make.py").write_text("import sys\nfrom tjepa.cache_schema.testing import make_store\n"
                                      "make_store(sys.argv[1], n=4)\n")
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def dvc(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q")
    out = dvc("repro")
    assert "Running stage 'cache@uniform'" in out and "Running stage 'train'" in out
    assert (FeatureStore.open(url).status() == DONE).sum() == 4
    assert f"path: {url}" in (tmp_path / "dvc.lock").read_text()
    assert "up to date" in dvc("status")
    store = FeatureStore.open(url, "r+")
    store.write_row(1, random_row(store.layout, np.random.default_rng(7)))  # another run redoes a row
    changed = dvc("status")
    assert "changed deps" in changed and f"modified:           {url}" in changed, changed


def _record(url: str, host: str) -> None:
    os.environ["TJEPA_HOST"] = host
    book = Ledger.of_store(url)
    for i in range(5):
        book.record(f"{host}/v{i}.mp4", "boom", row=i)


def test_ledger_and_creation_marker_on_the_bucket(aws):
    url = f"s3://{BUCKET}/ledger.zarr"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record, args=(url, f"node-{h}")) for h in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = Ledger.of_store(url).read()
    assert sorted((f.host, f.video) for f in records) == sorted(
        (f"node-{h}", f"node-{h}/v{i}.mp4") for h in "ab" for i in range(5))
    # a creation in progress on another host is respected; an abandoned one is cleared
    loc = locate(f"s3://{BUCKET}/half.zarr")
    marker = {"host": "node-z", "pid": 1, "started": time.time(), "token": "t"}
    loc.put(creation.MARKER, json.dumps(marker).encode())
    loc.put("vjepa/past/zarr.json", b"{}")
    with pytest.raises(TjepaError, match="being created by host node-z pid 1"):
        creation.begin(loc, committed=False)
    loc.put(creation.MARKER, json.dumps({**marker, "started": time.time() - creation.LEASE_S - 1}).encode())
    token = creation.begin(loc, committed=False)
    assert loc.keys() == [creation.MARKER] and json.loads(loc.get(creation.MARKER))["token"] == token
