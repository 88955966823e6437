"""Leak-free rollout windows through the real pipeline (tiny models, synthetic EgoDex videos): a
training window's inputs depend on nothing after its context."""

from __future__ import annotations

import shutil

import numpy as np
import zarr
from cache_helpers import cache_args, read_all_frames, run_cli, write_lossless

from tjepa.pipeline.sampling import causal_split
from tjepa.train.windows import WindowDataset, WindowSpec

INPUTS = ("vjepa_past", "prompt_mean", "think_mean", "joints_past", "valid_past", "cam_last")


def test_perturbing_frames_after_a_windows_context_leaves_its_inputs_bit_identical(tmp_path, tiny_models,
                                                                                    synth_root):
    src = sorted(synth_root.rglob("*.mp4"))[0]
    frames = read_all_frames(src)
    past_idx, future_idx = causal_split(len(frames), 8, 8)
    # 2->2 tubelet (4->4 frame) windows: window 0 observes past[4:8] and predicts future[0:4], window 1
    # observes future[0:4] and predicts future[4:8]. "cut" is the source with every frame after window
    # 1's context inverted (both videos in one encoder batch, as stage one batches them).
    cuts = {"orig": None, "cut": int(future_idx[3])}
    task = tmp_path / "videos" / "task"
    task.mkdir(parents=True)
    for name, cut in cuts.items():
        edited = frames.copy()
        if cut is not None:
            edited[cut + 1:] = 255 - edited[cut + 1:]
        write_lossless(task / f"{name}.mkv", edited)  # intra-only lossless: other frames decode the same
        (task / f"{name}.mkv").rename(task / f"{name}.mp4")
        shutil.copy2(src.with_suffix(".hdf5"), task / f"{name}.hdf5")
    out = tmp_path / "w.zarr"
    res = run_cli(cache_args(tmp_path / "videos", out, tiny_models, "--past", "8", "--future", "8",
                             "--window-frames", "4"))
    assert res.returncode == 0, res.stdout + res.stderr
    g = zarr.open_group(str(out), mode="r")
    row = {str(v).split("/")[-1][:-4]: i for i, v in enumerate(g["index/video"][:])}
    ds = WindowDataset(out, [row[n] for n in cuts], WindowSpec(2, 2))
    assert ds.starts == [2, 4]
    win = {name: [ds[2 * i + k] for k in range(2)] for i, name in enumerate(cuts)}
    for j in range(2):  # both windows' contexts end before the edit
        for key in INPUTS:
            assert np.array_equal(win["cut"][j][key].numpy(), win["orig"][j][key].numpy()), (j, key)
    # the edit did reach the store: window 1's targets changed
    assert not np.array_equal(win["cut"][1]["vjepa_future"].numpy(), win["orig"][1]["vjepa_future"].numpy())
    # what the windows replace: in the single-forward future clip, the tubelets that were window 1's
    # context attended to the edited frames
    fut = g["vjepa/future"]
    assert not np.array_equal(fut[row["cut"]][:2], fut[row["orig"]][:2])
