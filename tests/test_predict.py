"""`tjepa predict` on a synthetic EgoDex episode, a plain video and a broken file, with the run and
store of the shared stage-one fixture: forecasts equal the model's on the cached row of the same video
(so the extraction config was reproduced exactly), MP4 / PNG are written, a bad video fails alone."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.errors import ConfigMismatchError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def predicted(stage_one_run, synth_root, tiny_models, tmp_path_factory):
    store, run = stage_one_run
    root = tmp_path_factory.mktemp("predict")
    episode = sorted(synth_root.glob("*/*.mp4"))[0]
    plain = root / "plain"
    plain.mkdir()
    shutil.copy(sorted(synth_root.glob("*/*.mp4"))[1], plain / "clip.mp4")  # no labels beside it
    (plain / "broken.mp4").write_bytes(b"not a video at all")
    out = root / "out"
    res = CliRunner().invoke(app, ["predict", "--run", str(run), "--videos", str(episode), "--videos", str(plain),
                                   "--out", str(out), "--models-dir", str(tiny_models), "--device", "cpu"])
    return res, out, episode


def test_each_video_gets_its_files_and_a_bad_one_fails_alone(predicted):
    res, out, episode = predicted
    assert res.exit_code == 3, (res.output, res.exception)
    assert "broken.mp4" in res.output and "failed" in res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [episode.stem, "plain_clip"]  # no temporary store left behind, no broken/ folder
    for name in names:
        d = out / name
        assert {p.name for p in d.iterdir()} == {"forecast.npz", "forecast.json", "overlay.mp4", "summary.png"}
        assert (d / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with av.open(str(d / "overlay.mp4")) as c:
            s = c.streams.video[0]
            frames = [f for f in c.decode(s)]
        assert s.codec_context.name == "h264" and len(frames) == 16 and frames[0].width == 320  # 8 + 8


def test_forecast_is_the_models_on_the_same_video_in_the_store(predicted, stage_one_run, synth_root):
    from tjepa.train.checkpoint import load_run_model
    from tjepa.train.data import CacheDataset, read_index

    res, out, episode = predicted
    store, run = stage_one_run
    model, _ = load_run_model(run, "best")
    doc = json.loads((run / "config.json").read_text())
    row = read_index(store).videos.index(episode.relative_to(synth_root).as_posix())
    item = CacheDataset(store, [row], levels=tuple(doc["levels"]))[0]
    with torch.no_grad():
        ref = model.eval()({k: v[None] for k, v in item.items()})
    got = np.load(out / episode.stem / "forecast.npz")
    np.testing.assert_allclose(got["joints_world"], ref.traj_world[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["joints_cam"], ref.traj_cam[0].numpy(), atol=1e-5)
    meta = json.loads((out / episode.stem / "forecast.json").read_text())
    assert meta["intrinsics_source"] == "labels" and meta["labels"] == episode.with_suffix(".hdf5").name
    assert "camera frame of the last observed frame" in meta["frame"]
    assert len(meta["joints_world"]) == 8 and len(meta["truth_cam"]) == 8


def test_plain_video_forecast_in_the_camera_frame_only(predicted):
    _, out, _ = predicted
    got = np.load(out / "plain_clip" / "forecast.npz")
    assert got["joints_cam"].shape == (8, 52, 3) and np.isfinite(got["joints_cam"]).all()
    assert "joints_world" not in got and (np.diff(got["times_s"]) > 0).all() and got["times_s"][0] > 0
    meta = json.loads((out / "plain_clip" / "forecast.json").read_text())
    assert meta["joints_world"] is None and meta["labels"] is None
    assert meta["intrinsics_source"].startswith("default") and "training videos" in meta["anchor"]
    assert np.median(got["joints_cam"][..., 2]) > 0  # in front of the camera, where hands are


def test_other_encoders_are_refused(stage_one_run, synth_root, tiny_models, tmp_path):
    _, run = stage_one_run
    other = tmp_path / "models"
    shutil.copytree(tiny_models, other)
    with open(other / "vjepa2" / "model.safetensors", "ab") as f:  # other weights, same architecture
        f.write(b"\0")
    res = CliRunner().invoke(app, ["predict", "--run", str(run), "--videos", str(sorted(synth_root.glob("*/*.mp4"))[0]),
                                   "--out", str(tmp_path / "out"), "--models-dir", str(other), "--device", "cpu"])
    assert isinstance(res.exception, ConfigMismatchError), res.output
    assert "differ from those fingerprinted" in str(res.exception) and "vjepa_sha256" in str(res.exception)
    assert not (tmp_path / "out").exists()
