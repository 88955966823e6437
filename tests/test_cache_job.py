"""Stage one end to end: `tjepa cache` with tiny real models on synthetic EgoDex data (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import zarr
from cache_helpers import (
    assert_same_features,
    cache_args,
    copy_tree,
    read_all_frames,
    rows_by_video,
    run_cli,
    summary_count,
    write_lossless,
)

from tjepa.cache_schema.bf16 import from_bf16_bits
from tjepa.cache_schema.ledger import Ledger


@pytest.fixture(scope="module")
def reference_store(synth_root, tiny_models, tmp_path_factory):
    """One uninterrupted in-process run over the synthetic set; other tests compare against it."""
    out = tmp_path_factory.mktemp("ref") / "store.zarr"
    res = run_cli(cache_args(synth_root, out, tiny_models))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def test_cache_end_to_end_validates(reference_store, synth_root):
    g = zarr.open_group(str(reference_store), mode="r")
    n = len(list(synth_root.rglob("*.mp4")))
    assert g["index/status"].shape == (n,)
    assert (g["index/status"][:] == 1).all()
    layout = g.attrs["layout"]
    assert g["vjepa/past"].shape == (n, layout["n_past"] // layout["tubelet"], layout["patches"], layout["vjepa_width"])
    assert g["vlm/think_mean"].shape == (n, layout["levels"], layout["vlm_width"])
    assert np.isfinite(g["vjepa/past"][:]).all() and np.isfinite(g["vlm/prompt_mean"][:]).all()
    res = run_cli(["validate", str(reference_store)])
    assert res.returncode == 0, res.stdout + res.stderr
    info = json.loads(run_cli(["inspect", str(reference_store), "--json"]).stdout)
    assert info["done"] == n and info["failed"] == 0 and info["pending"] == 0


def test_targets_are_the_hdf5_joints_at_the_stored_indices(reference_store, synth_root):
    from tjepa.pipeline.egodex import JOINT_NAMES

    joints_future = rows_by_video(reference_store, "targets/joints_future")
    future_idx = rows_by_video(reference_store, "index/future_idx")
    past_idx = rows_by_video(reference_store, "index/past_idx")
    joints_past = rows_by_video(reference_store, "targets/joints_past")
    for video, stored in joints_future.items():
        with h5py.File(synth_root / video.replace(".mp4", ".hdf5"), "r") as f:
            world = np.stack([f[f"transforms/{name}"][:, :3, 3] for name in JOINT_NAMES], axis=1)
        np.testing.assert_allclose(stored, world[future_idx[video]], rtol=0, atol=1e-6)
        np.testing.assert_allclose(joints_past[video], world[past_idx[video]], rtol=0, atol=1e-6)


def test_rerun_is_a_no_op(reference_store, synth_root, tiny_models):
    before = rows_by_video(reference_store, "vjepa/past")
    res = run_cli(cache_args(synth_root, reference_store, tiny_models))
    assert res.returncode == 0, res.stderr
    assert summary_count(res.stdout, "this run: encoded") == 0
    after = rows_by_video(reference_store, "vjepa/past")
    for v in before:
        np.testing.assert_array_equal(before[v], after[v])


def test_different_config_is_an_error_naming_the_difference(reference_store, synth_root, tiny_models):
    res = run_cli(cache_args(synth_root, reference_store, tiny_models, "--think-tokens", "3"))
    assert res.returncode == 2
    assert "max_new_tokens" in res.stderr


def test_future_frames_never_reach_the_observed_features(tmp_path, tiny_models, synth_root):
    """Edit only the second half of a video: VLM states and past latents stay bit-identical."""
    frames = read_all_frames(sorted(synth_root.rglob("*.mp4"))[0])
    m = len(frames) // 2
    edited = frames.copy()
    edited[m:] = 255 - edited[m:]
    (tmp_path / "videos/a").mkdir(parents=True)
    (tmp_path / "videos/b").mkdir(parents=True)
    write_lossless(tmp_path / "videos/a/clip.mkv", frames)
    write_lossless(tmp_path / "videos/b/clip.mkv", edited)
    out = tmp_path / "plain.zarr"
    res = run_cli(cache_args(tmp_path / "videos", out, tiny_models))
    assert res.returncode == 0, res.stdout + res.stderr
    g = zarr.open_group(str(out), mode="r")
    assert "targets/joints_future" not in g  # plain videos: targets simply absent
    for path in ("vjepa/past", "vlm/prompt_mean", "vlm/think_mean", "vlm/think_ids"):
        rows = rows_by_video(out, path)
        np.testing.assert_array_equal(rows["a/clip.mkv"], rows["b/clip.mkv"], err_msg=path)
    fut = rows_by_video(out, "vjepa/future")
    assert not np.array_equal(fut["a/clip.mkv"], fut["b/clip.mkv"])


def test_bad_videos_are_recorded_and_the_job_goes_on(tmp_path, synth_root, tiny_models):
    tree = copy_tree(synth_root, tmp_path / "videos", n=3)
    task = sorted(p for p in tree.iterdir() if p.is_dir())[0]
    (task / "corrupt.mp4").write_bytes(b"this is not a video at all")
    (task / "corrupt.hdf5").write_bytes(b"nor is this an hdf5 file")
    good = sorted(tree.rglob("*.mp4"))[0]
    short = read_all_frames(good)[:20]
    import shutil

    shutil.copy2(good.with_suffix(".hdf5"), task / "short.hdf5")
    from cache_helpers import write_lossless as _w

    _w(task / "short.mkv", short)  # a lossless stand-in, renamed below to the EgoDex .mp4 name
    (task / "short.mkv").rename(task / "short.mp4")
    out = tmp_path / "store.zarr"
    res = run_cli(cache_args(tree, out, tiny_models))
    assert res.returncode == 3, res.stdout + res.stderr
    status = rows_by_video(out, "index/status")
    assert status[f"{task.name}/corrupt.mp4"] == 2 and status[f"{task.name}/short.mp4"] == 2
    assert sum(int(s == 1) for s in status.values()) == 3
    ledger = [f.__dict__ for f in Ledger.of_store(out).read()]
    reasons = {entry["video"]: entry["reason"] for entry in ledger}
    assert "corrupt.mp4" in reasons[f"{task.name}/corrupt.mp4"]
    assert "short.mp4" in reasons[f"{task.name}/short.mp4"]
    # A retry after fixing nothing fails the same rows again, and touches no done row.
    res = run_cli(cache_args(tree, out, tiny_models, "--retry-failed"))
    assert res.returncode == 3
    assert sum(int(s == 1) for s in rows_by_video(out, "index/status").values()) == 3


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, synth_root, tiny_models, reference_store):
    out = tmp_path / "killed.zarr"
    # Same batch size as the reference: units are shard-aligned pairs, so the resumed batches have the
    # reference's composition (a row's states depend on its batch at float rounding, see README).
    cmd = [sys.executable, "-m", "tjepa", *cache_args(synth_root, out, tiny_models)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    done_before = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done_before = int((zarr.open_group(str(out), mode="r")["index/status"][:] == 1).sum())
        except Exception:  # the store may not exist yet
            done_before = 0
        if done_before >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done_before >= 2, "the job finished or stalled before it could be killed"
    done_rows = {v for v, s in rows_by_video(out, "index/status").items() if s == 1}
    res = run_cli(cache_args(synth_root, out, tiny_models))
    assert res.returncode == 0, res.stdout + res.stderr
    assert run_cli(["validate", str(out)]).returncode == 0
    assert_same_features(out, reference_store)
    info = json.loads(run_cli(["inspect", str(out), "--json"]).stdout)
    assert info["done"] == len(list(synth_root.rglob("*.mp4")))
    # Rows done before the kill were skipped, not recomputed.
    assert summary_count(res.stdout, "already done") == len(done_rows)
    assert summary_count(res.stdout, "this run: encoded") == info["done"] - len(done_rows)


def test_kept_tokens_average_to_the_stored_means(tmp_path, synth_root, tiny_models):
    tree = copy_tree(synth_root, tmp_path / "videos", n=2)
    out = tmp_path / "tokens.zarr"
    res = run_cli(cache_args(tree, out, tiny_models, "--keep-tokens"))
    assert res.returncode == 0, res.stdout + res.stderr
    g = zarr.open_group(str(out), mode="r")
    for stream in ("prompt", "think"):
        tokens = from_bf16_bits(g[f"vlm/{stream}_tokens"][:]).astype(np.float64)  # [N, L, S, H], zero padded
        lengths = g[f"vlm/{stream}_len"][:]
        assert (lengths > 0).all()
        mask = np.arange(tokens.shape[2])[None, :] < lengths[:, None]  # [N, S]
        mean = (tokens * mask[:, None, :, None]).sum(2) / lengths[:, None, None]
        # tokens are stored bfloat16, means fp32 (from the unrounded states): agreement to bfloat16
        # rounding, i.e. within one bfloat16 ulp of the largest state
        ulp = np.abs(tokens).max() * 2.0**-7
        np.testing.assert_allclose(mean, g[f"vlm/{stream}_mean"][:], rtol=0, atol=ulp)


@pytest.fixture(scope="module")
def pool_run(synth_root, tiny_models, tmp_path_factory):
    """`tjepa cache --decode-workers 2` in this process, counting the positions decoder layer 0 runs."""
    import torch
    from typer.testing import CliRunner

    from tjepa.cli import app

    out = tmp_path_factory.mktemp("pool") / "store.zarr"
    positions = []

    def count(module, _args, output):
        if type(module).__name__ == "Qwen3VLTextDecoderLayer" and module.self_attn.layer_idx == 0:
            h = output[0] if isinstance(output, tuple) else output
            positions.append(h.shape[0] * h.shape[1])

    from tjepa.pipeline.decode_pool import _POOLS, shutdown_pools

    shutdown_pools()
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        res = CliRunner().invoke(app, cache_args(synth_root, out, tiny_models, "--decode-workers", "2"))
    finally:
        handle.remove()
    assert res.exit_code == 0, res.output
    assert 2 in _POOLS  # the run decoded in two processes
    shutdown_pools()
    return out, sum(positions)


def test_decode_pool_writes_the_same_store_as_the_default(pool_run, reference_store):
    out, _ = pool_run
    a, b = zarr.open_group(str(reference_store), mode="r"), zarr.open_group(str(out), mode="r")
    paths = sorted(name for name, node in a.members(max_depth=None) if isinstance(node, zarr.Array))
    assert "vjepa/past" in paths and "vlm/think_mean" in paths and "thumbs/last_past" in paths
    assert paths == sorted(name for name, node in b.members(max_depth=None) if isinstance(node, zarr.Array))
    for path in paths:
        x, y = a[path][:], b[path][:]
        same = np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        assert same, f"{path} differs between the default run and --decode-workers 2"


def test_each_prompt_and_thinking_position_runs_once_through_the_text_model(pool_run):
    """Counted at decoder layer 0 during a real `tjepa cache`: generation and capture share one pass
    (a separate teacher-forced capture forward made it ~2x)."""
    out, counted = pool_run
    g = zarr.open_group(str(out), mode="r")
    needed = int(g["vlm/prompt_len"][:].sum() + g["vlm/think_len"][:].sum())
    assert needed > 0 and needed <= counted <= 1.1 * needed, (counted, needed)


def test_dense_window_store_splits_the_branches(reference_store, synth_root, tiny_models, tmp_path):
    """--dense-window: V-JEPA past and the past supervision are the 16 frames before the split; the
    VLM still sees the uniform frames (its states equal the uniform store's); the future is unchanged."""
    from tjepa.pipeline.egodex import JOINT_NAMES

    out = tmp_path / "dense.zarr"
    res = run_cli(cache_args(synth_root, out, tiny_models, "--dense-window", "16"))
    assert res.returncode == 0, res.stdout + res.stderr
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["config"]["sampling"]["dense_window"] == 16 and g.attrs["layout"]["n_past"] == 16
    assert g.attrs["fingerprint"] != zarr.open_group(str(reference_store), mode="r").attrs["fingerprint"]
    past_idx, n_frames = rows_by_video(out, "index/past_idx"), rows_by_video(out, "index/n_frames")
    joints_past = rows_by_video(out, "targets/joints_past")
    for video, idx in past_idx.items():
        m = int(n_frames[video]) // 2
        assert idx.tolist() == list(range(m - 16, m))
        with h5py.File(synth_root / video.replace(".mp4", ".hdf5"), "r") as f:
            world = np.stack([f[f"transforms/{name}"][:, :3, 3] for name in JOINT_NAMES], axis=1)
        np.testing.assert_allclose(joints_past[video], world[idx], rtol=0, atol=1e-6)
    for path in ("vlm/prompt_mean", "vlm/think_ids", "vjepa/future", "index/future_idx"):
        a, b = rows_by_video(out, path), rows_by_video(reference_store, path)
        for video in a:
            np.testing.assert_array_equal(a[video], b[video], err_msg=path)
    assert rows_by_video(out, "vjepa/past")[video].shape[0] == 8  # 16 frames in tubelets of 2
