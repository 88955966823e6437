"""The rollout protocol: leak-free windows cut from the independently encoded sequence, the recursive
loop (predictions really fed back, nothing from the future read), horizons and stability flags,
`tjepa train --rollout` on the one trainer and `tjepa eval --rollout` reading its checkpoint."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import store_factory as sf
import torch
import zarr
from torch import nn
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.errors import TjepaError
from tjepa.eval.rollout import RolloutConfig, resolve_steps, rollout, score_rollout
from tjepa.metrics import TrajectoryMeter
from tjepa.train.config import preset
from tjepa.train.head import cam_to_world
from tjepa.train.model import ThinkJEPA, random_batch
from tjepa.train.windows import SequenceDataset, WindowDataset, WindowSpec, leak_free_starts

# 4 + 8 tubelets in windows of 2: 4 leak-free 2->2 windows, 4 rollout steps
FC = sf.FactoryConfig(n=24, groups=6, n_past=8, n_future=16, window_tubelets=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return sf.write_store(tmp_path_factory.mktemp("rollout") / "s.zarr", FC)


def _pose(b: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, 3, 3, generator=g))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    pose = torch.eye(4).repeat(b, 1, 1)
    pose[:, :3, :3], pose[:, :3, 3] = q, torch.randn(b, 3, generator=g)
    return pose


def _window_model(seed: int = 0, **kw) -> ThinkJEPA:
    torch.manual_seed(seed)
    model = ThinkJEPA(preset("tiny", n_past=4, n_future=4, **kw)).eval()
    # As after training: the anchored head's zero-initialised output would hide the latents' effect.
    torch.nn.init.normal_(model.head.out.weight, std=0.02)
    return model


def _video_batch(cfg, b=3, past_tub=4, fut_tub=8, seed=0):
    """A whole-video batch (4 past, 8 future tubelets) with a camera per future frame."""
    batch = random_batch(cfg, batch_size=b, past_tubelets=past_tub, future_tubelets=fut_tub, seed=seed)
    batch["cams_future"] = torch.stack([_pose(b, 100 + t) for t in range(fut_tub * cfg.tubelet)], dim=1)
    batch["row"] = torch.arange(b)
    return batch


class Recorder(nn.Module):
    """Calls the real model, records what each step saw, optionally alters its output."""

    def __init__(self, model, alter=None):
        super().__init__()
        self.model, self.cfg, self.alter, self.calls = model, model.cfg, alter, []

    def forward(self, batch, **kw):
        out = self.model(batch, **kw)
        if self.alter is not None:
            out = self.alter(len(self.calls), out)
        self.calls.append(({k: v.clone() for k, v in batch.items()}, out))
        return out


def test_windows_are_leak_free_slices_of_the_independently_encoded_sequence(store):
    g = zarr.open_group(str(store), mode="r")
    layout = dict(g.attrs["layout"])
    # a target tubelet never shares an encoding window with a context tubelet, and every target lies
    # after the observed half (what the VLM saw): starts 2 (context = the last observed window), 4, 6, 8
    assert leak_free_starts(layout, WindowSpec(2, 2)) == [2, 4, 6, 8]
    assert leak_free_starts(layout, WindowSpec(3, 2)) == [1, 3, 5, 7]
    assert leak_free_starts(layout, WindowSpec(2, 4)) == [2, 4, 6]
    rows = [0, 5, 7]
    ds = WindowDataset(store, rows, WindowSpec(2, 2))
    assert len(ds) == 3 * 4
    for k in (0, 3, 5, 11):
        w, r, s = ds[k], rows[k // 4], [2, 4, 6, 8][k % 4]
        lat = g["vjepa/windows"][r].astype(np.float32)
        joints = np.concatenate([g["targets/joints_past"][r], g["targets/joints_future"][r]])
        valid = np.concatenate([g["targets/valid_past"][r], g["targets/valid_future"][r]])
        cams = np.concatenate([g["targets/cam_past"][r], g["targets/cam_future"][r]])
        np.testing.assert_array_equal(w["vjepa_past"], lat[s:s + 2])
        np.testing.assert_array_equal(w["vjepa_future"], lat[s + 2:s + 4])
        np.testing.assert_array_equal(w["joints_past"], joints[2 * s:2 * s + 4])
        np.testing.assert_array_equal(w["joints_future"], joints[2 * s + 4:2 * s + 8])
        np.testing.assert_array_equal(w["valid_future"], valid[2 * s + 4:2 * s + 8])
        np.testing.assert_array_equal(w["cam_last"], cams[2 * s + 3])
        np.testing.assert_array_equal(w["think_mean"], g["vlm/think_mean"][r])
        assert int(w["row"]) == r and int(w["window_start"]) == s
    video = SequenceDataset(store, rows)[1]  # the rollout's context and truth: the same windows array
    np.testing.assert_array_equal(video["vjepa_past"], g["vjepa/windows"][5][:4])
    np.testing.assert_array_equal(video["vjepa_future"], g["vjepa/windows"][5][4:])


def test_a_store_without_independent_windows_is_refused(tmp_path):
    plain = sf.write_store(tmp_path / "plain.zarr", sf.FactoryConfig(n=6, groups=3, n_past=8, n_future=16))
    with pytest.raises(TjepaError, match="--window-frames"):
        WindowDataset(plain, [0], WindowSpec(2, 2))


def test_rollout_feeds_its_own_predictions_back():
    model = _window_model()
    batch = _video_batch(model.cfg)
    rec = Recorder(model)
    out = rollout(rec, batch, steps=4)
    assert out.latents.shape == (3, 4, 2, model.cfg.patches, model.cfg.vjepa_width)
    assert out.traj_world.shape == (3, 16, 52, 3) and len(rec.calls) == 4
    seen0 = rec.calls[0][0]
    torch.testing.assert_close(seen0["vjepa_past"], batch["vjepa_past"][:, -2:])
    torch.testing.assert_close(seen0["joints_past"], batch["joints_past"][:, -4:])
    for k in range(1, 4):
        seen, (_, prev) = rec.calls[k][0], rec.calls[k - 1]
        torch.testing.assert_close(seen["vjepa_past"], prev.pred_future)  # obs == fut: only predictions
        torch.testing.assert_close(seen["joints_past"], prev.traj_world)
        assert seen["valid_past"].all()
        torch.testing.assert_close(seen["cam_last"], batch["cam_last"])  # the camera approximation

    # nothing of the future is read: other true future latents / joints / cameras change nothing
    peek = dict(batch, vjepa_future=torch.randn_like(batch["vjepa_future"]),
                joints_future=torch.randn_like(batch["joints_future"]),
                cams_future=torch.randn_like(batch["cams_future"]))
    torch.testing.assert_close(rollout(model, peek, steps=4).traj_world, out.traj_world)


def test_changing_the_first_step_changes_every_later_step():
    model = _window_model()
    batch = _video_batch(model.cfg)
    base = rollout(model, batch, steps=4)

    def shift_latents(k, o):
        if k == 0:
            o.pred_future = o.pred_future + 0.5
        return o
    alt = rollout(Recorder(model, shift_latents), batch, steps=4)
    torch.testing.assert_close(alt.traj_world[:, :4], base.traj_world[:, :4])  # step 0 itself unchanged
    for k in range(1, 4):
        frames = slice(4 * k, 4 * k + 4)
        assert (alt.traj_world[:, frames] - base.traj_world[:, frames]).abs().max() > 1e-4, k
        assert (alt.latents[:, k] - base.latents[:, k]).abs().max() > 1e-4, k

    def shift_joints(k, o):  # the residual anchor reads the fed-back joints
        if k == 0:
            o.traj_world = o.traj_world + 0.1
        return o
    assert model.cfg.anchor == "last_observed"
    alt = rollout(Recorder(model, shift_joints), batch, steps=2)
    torch.testing.assert_close(alt.traj_world[:, 4:], base.traj_world[:, 4:8] + 0.1, atol=1e-4, rtol=0)


def test_oracle_camera_maps_each_step_with_its_true_pose():
    model = _window_model(anchor="none", time_scaled_offsets=False)
    batch = _video_batch(model.cfg)
    rec = Recorder(model)
    out = rollout(rec, batch, steps=3, camera="oracle")
    for k, (seen, o) in enumerate(rec.calls):
        want = batch["cam_last"] if k == 0 else batch["cams_future"][:, 4 * k - 1]
        torch.testing.assert_close(seen["cam_last"], want)
        torch.testing.assert_close(o.traj_world, cam_to_world(o.traj_cam, want))
    last = rollout(model, batch, steps=3, camera="last")
    torch.testing.assert_close(last.traj_world[:, :4], out.traj_world[:, :4])
    assert (last.traj_world[:, 4:] - out.traj_world[:, 4:]).abs().max() > 1e-3


def _scored(model, batches, steps=4, nan=False):
    with pytest.warns(RuntimeWarning, match="non-finite") if nan else contextlib.nullcontext():
        return score_rollout(model, batches, RolloutConfig(), steps, torch.device("cpu"), keep=1)


def test_horizons_and_metrics_match_a_direct_computation():
    model = _window_model()
    batches = [_video_batch(model.cfg, seed=s) for s in (0, 1)]
    traj, stab, kept = _scored(model, batches)
    assert sorted(traj["horizons"]) == [4, 8, 16] and traj["n_samples"] == 6
    meter = TrajectoryMeter(horizons=(4, 8, 16))
    for b in batches:
        meter.update(rollout(model, b, 4).traj_world, b["joints_future"], b["valid_future"])
    direct = meter.compute()
    for h in (4, 8, 16):
        assert traj["horizons"][h] == pytest.approx(direct["horizons"][h])
    assert len(stab["latent_error"]) == 4 and {"collapse", "explosion", "nonfinite", "stable"} <= set(stab)
    assert not stab["any_nonfinite"] and kept[0]["traj_world"].shape == (16, 52, 3)
    with pytest.raises(TjepaError, match="rollout step"):
        resolve_steps({"tubelet": 2, "n_past": 8, "n_future": 16}, RolloutConfig(steps=5))
    assert resolve_steps({"tubelet": 2, "n_past": 32, "n_future": 32}, RolloutConfig()) == 8  # paper: 32 frames


@pytest.mark.parametrize("mode", ["stable", "collapse", "explosion", "nonfinite"])
def test_stability_flags_catch_broken_rollouts(mode):
    model = _window_model()
    batch = _video_batch(model.cfg)
    noise = torch.Generator().manual_seed(0)

    def predict(k, o):  # near-perfect latents, then broken the way `mode` says
        truth = batch["vjepa_future"][:, 2 * k:2 * k + 2]
        o.pred_future = truth + 0.01 * torch.randn(truth.shape, generator=noise)
        if mode == "collapse":  # every token the same vector
            o.pred_future = o.pred_future.mean(dim=(1, 2), keepdim=True).expand_as(truth).clone()
        elif mode == "explosion":
            o.pred_future = o.pred_future * 10.0 ** k
        elif mode == "nonfinite" and k >= 1:
            o.pred_future = torch.full_like(truth, float("nan"))
        return o
    _, stab, _ = _scored(Recorder(model, predict), [batch], nan=mode == "nonfinite")
    flags = {m: stab[f"any_{m}"] for m in ("collapse", "explosion", "nonfinite")}
    # a non-finite latent error also counts as an explosion (tjepa.metrics.explosion_flags)
    want = {m: m == mode or (m == "explosion" and mode == "nonfinite") for m in flags}
    assert flags == want and stab["stable"] == (mode == "stable")
    if mode == "explosion":
        assert stab["explosion"] == [False, True, True, True]
    if mode == "nonfinite":
        assert [x > 0 for x in stab["nonfinite"]] == [False, True, True, True]


def test_window_training_resumes_exactly(store, tmp_path):
    from tjepa.train.loop import Trainer
    from tjepa.train.run_config import TrainConfig

    cfg = TrainConfig(epochs=2, batch_size=4, preset="tiny", device="cpu", limit=6)

    def trainer(d):
        return Trainer(cfg, store, d, window=WindowSpec(2, 2), progress=False)
    straight = trainer(tmp_path / "a").fit()
    t = trainer(tmp_path / "b")
    assert (t.model_cfg.n_past, t.model_cfg.n_future) == (4, 4) and len(t.train_ds) == 4 * len(t.train_ds.rows)
    first = t.fit(max_epochs=1)
    resumed = trainer(tmp_path / "b")
    assert resumed.resuming and resumed.epoch == 1
    second = resumed.fit()
    skip = {"time", "samples_per_s"}
    assert [{k: v for k, v in m.items() if k not in skip} for m in straight] == \
        [{k: v for k, v in m.items() if k not in skip} for m in first + second]
    assert all(np.isfinite(m["val_ade"]) and "val_stable" in m for m in straight)  # the rollout protocol
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("rollout_run") / "run"
    res = CliRunner().invoke(app, ["train", "--cache", str(store), "--out", str(run), "--preset", "tiny",
                                   "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    return run


def _eval(store, run, *extra):
    return CliRunner().invoke(app, ["eval", "--run", str(run), "--cache", str(store), "--device", "cpu",
                                    "--no-progress", "--figures", "1", "--rollout", *extra])


def _train_rollout(store, run, *extra):
    return CliRunner().invoke(app, ["train", "--cache", str(store), "--out", str(run), "--preset", "tiny",
                                    "--batch-size", "4", "--device", "cpu", "--no-progress", "--rollout", *extra])


def test_eval_rollout_reads_the_window_model_tjepa_train_made(store, run):
    res = _eval(store, run)  # no rollout model yet: eval says how to make one, and trains nothing
    assert res.exit_code != 0 and not (run / "rollout").exists()
    assert "no rollout checkpoint" in str(res.exception) and f"--out {run} --rollout" in str(res.exception)

    res = _train_rollout(store, run, "--epochs", "1")
    assert res.exit_code == 0, res.output
    rdir = run / "rollout"
    cfg = json.loads((rdir / "config.json").read_text())
    assert (cfg["model"]["n_past"], cfg["model"]["n_future"]) == (4, 4) and cfg["train"]["epochs"] == 1
    assert cfg["window"] == {"obs": 2, "fut": 2}
    assert json.loads((rdir / "splits.json").read_text()) == json.loads((run / "splits.json").read_text())
    assert len((rdir / "metrics.jsonl").read_text().splitlines()) == 1

    stamp = (rdir / "ckpt_best.pt").stat().st_mtime_ns
    res = _eval(store, run)
    assert res.exit_code == 0, res.output
    assert (rdir / "ckpt_best.pt").stat().st_mtime_ns == stamp  # eval only reads it
    m = json.loads((run / "eval" / "metrics.json").read_text())
    rm = m["rollout_metrics"]
    assert sorted(rm["horizons"], key=int) == ["4", "8", "16"] and rm["n"] == m["n"]
    assert rm["info"]["steps"] == 4 and rm["info"]["frames"] == 16 and rm["info"]["best_epoch"] == 1
    assert len(m["stability"]["latent_error"]) == 4 and isinstance(m["stability"]["stable"], bool)
    names = list(m["rollout"])
    assert names[0].startswith("rollout 2->2 x4") and any("(direct)" in n for n in names)
    assert {"persistence (baseline)", "constant_velocity (baseline)"} <= set(names)
    assert m["rollout"][names[0]]["16"] == pytest.approx(rm["horizons"]["16"]["ade"])
    report = (run / "eval" / "report.md").read_text()
    assert "LAST OBSERVED camera" in report and "Rollout stability" in report and "leak-free" in report
    assert (run / "eval" / "figures" / "rollout_ade.png").is_file()

    res = _train_rollout(store, run, "--epochs", "1", "--rollout-fut", "1")  # other settings: refused
    assert res.exit_code != 0 and "window" in str(res.exception)
