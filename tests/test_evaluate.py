"""`tjepa eval` on a real tiny pipeline: a learnable factory store (real zarr via FeatureStore), a run
trained by `tjepa train`, and the evaluation's files checked against an independent computation."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import store_factory as sf
import torch
import zarr
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.errors import ConfigMismatchError, TjepaError
from tjepa.eval.egodex_protocol import KEYPOINT_NAMES, KEYPOINTS
from tjepa.eval.evaluate import EvalConfig, evaluate_run
from tjepa.eval.report import REQUIRED_KEYS

FC = sf.FactoryConfig(n=24, groups=6, n_past=8, n_future=16)
KEYPOINTS_BY_NAME = dict(zip(KEYPOINT_NAMES, KEYPOINTS, strict=True))
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, run): a factory store and a tiny run trained for 2 epochs by the real CLI."""
    root = tmp_path_factory.mktemp("eval")
    store = sf.write_store(root / "s.zarr", FC)
    run = root / "run"
    res = CliRunner().invoke(app, ["train", "--cache", str(store), "--out", str(run), "--preset", "tiny",
                                   "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    return store, run


@pytest.fixture(scope="module")
def evaluated(trained):
    """The default evaluation (test split, best checkpoint) through the CLI."""
    store, run = trained
    res = CliRunner().invoke(app, ["eval", "--run", str(run), "--cache", str(store), "--device", "cpu",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    return run / "eval", res.output


def _split_rows(run, store, split="test"):
    videos = json.loads((run / "splits.json").read_text())["videos"][split]
    ids = [str(v) for v in zarr.open_group(str(store), mode="r")["index/video"][:].tolist()]
    return [ids.index(v) for v in videos]


def test_cli_writes_metrics_report_and_figures(trained, evaluated):
    store, run = trained
    out, output = evaluated
    m = json.loads((out / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(m)
    rows = _split_rows(run, store)
    assert m["split"] == "test" and m["n"] == len(rows) > 0
    assert set(m["baselines"]) == {"persistence", "constant_velocity"}
    assert {"l2", "smooth_l1", "cosine"} <= set(m["latent"]) and m["latent"]["n"] == len(rows)
    assert len(m["per_step"]) == FC.n_future and sorted(m["horizons"], key=int) == ["4", "8", "16"]
    assert m["meta"]["fingerprint"] == zarr.open_group(str(store), mode="r").attrs["fingerprint"]
    assert m["meta"]["checkpoint"].endswith("ckpt_best.pt") and "rollout" not in m
    report = (out / "report.md").read_text()
    assert "persistence" in report and "constant_velocity" in report and f"{m['ade']:.4f}" in report
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "error_vs_horizon.png" in figs and "training_curves.png" in figs
    assert len([f for f in figs if f.startswith("trajectories_")]) == min(4, len(rows))
    for f in figs:
        assert (out / "figures" / f).read_bytes()[:8] == PNG and f"figures/{f}" in report
    assert "ADE" in output and "persistence" in output and "EgoDex protocol" in output
    assert "## EgoDex protocol" in report and "Choices the EgoDex paper leaves open" in report
    assert json.loads((out / "summary.json").read_text())["ade"] == pytest.approx(m["ade"], abs=5e-5)


def _direct_batch(store, rows):
    """The stage-two batch of `rows`, read straight from zarr (not through CacheDataset)."""
    g = zarr.open_group(str(store), mode="r")
    idx = np.asarray(rows)

    def get(name):
        return torch.from_numpy(np.asarray(g[name].oindex[idx]))
    batch = {k: get(n).float() for k, n in (("vjepa_past", "vjepa/past"), ("vjepa_future", "vjepa/future"),
                                              ("prompt_mean", "vlm/prompt_mean"), ("think_mean", "vlm/think_mean"),
                                              ("joints_past", "targets/joints_past"),
                                              ("joints_future", "targets/joints_future"))}
    batch["valid_past"], batch["valid_future"] = get("targets/valid_past"), get("targets/valid_future")
    batch["cam_last"] = get("targets/cam_past")[:, -1].float()
    batch["past_idx"], batch["future_idx"] = get("index/past_idx"), get("index/future_idx")  # real frame times
    return batch, np.asarray(g["index/past_idx"].oindex[idx]), np.asarray(g["index/future_idx"].oindex[idx])


def _scores(pred, gt, valid):
    """Sample-weighted masked ADE / FDE / Acc@5cm and the per-step curve, in plain numpy."""
    e = np.linalg.norm(pred - gt, axis=-1)
    ade = [e[i][valid[i]].mean() for i in range(len(e))]
    fde = [e[i, -1][valid[i, -1]].mean() for i in range(len(e))]
    acc = [(e[i][valid[i]] < 0.05).mean() for i in range(len(e))]
    per_step = [np.mean([e[i, t][valid[i, t]].mean() for i in range(len(e))]) for t in range(e.shape[1])]
    return np.mean(ade), np.mean(fde), np.mean(acc), per_step


def test_metrics_equal_a_direct_computation(trained, evaluated):
    from tjepa.train.config import ModelConfig
    from tjepa.train.model import ThinkJEPA

    store, run = trained
    out, _ = evaluated
    m = json.loads((out / "metrics.json").read_text())
    rows = _split_rows(run, store)
    ckpt = torch.load(run / "ckpt_best.pt", weights_only=True)
    model = ThinkJEPA(ModelConfig.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    batch, past_idx, fut_idx = _direct_batch(store, rows)
    with torch.no_grad():
        res = model.eval()(batch)
    pred, gt, valid = res.traj_world.numpy(), batch["joints_future"].numpy(), batch["valid_future"].numpy()

    saved = np.load(out / "predictions.npz")
    assert saved["row"].tolist() == rows
    np.testing.assert_allclose(saved["pred_world"], pred, atol=1e-5)
    ade, fde, acc, per_step = _scores(pred, gt, valid)
    assert m["ade"] == pytest.approx(ade, rel=1e-5) and m["fde"] == pytest.approx(fde, rel=1e-5)
    assert m["acc"] == pytest.approx(acc, abs=1e-6)
    np.testing.assert_allclose(m["per_step"], per_step, rtol=1e-5)
    assert m["horizons"]["8"]["ade"] == pytest.approx(_scores(pred[:, :8], gt[:, :8], valid[:, :8])[0], rel=1e-5)
    lat_p, lat_t = res.pred_future.numpy(), batch["vjepa_future"].numpy()
    assert m["latent"]["l2"] == pytest.approx(np.linalg.norm(lat_p - lat_t, axis=-1).mean(), rel=1e-4)

    # baselines, from the observed joints only
    x, v = batch["joints_past"].numpy(), batch["valid_past"].numpy()
    assert v[:, -2:].all(axis=1).mean() > 0.9  # the fallback path below is the exception
    last = x[:, -1]
    vel = (x[:, -1] - x[:, -2]) / (past_idx[:, -1] - past_idx[:, -2])[:, None, None]
    cv = last[:, None] + vel[:, None] * (fut_idx - past_idx[:, -1:])[:, :, None, None]
    both = v[:, -1] & v[:, -2]
    hold = np.stack([[x[i, np.flatnonzero(v[i, :, j])[-1], j] if v[i, :, j].any() else np.full(3, np.nan)
                      for j in range(x.shape[2])] for i in range(len(x))])
    cv = np.where(both[:, None, :, None], cv, hold[:, None])
    avail = v.any(axis=1)[:, None, :]
    for name, bpred in (("persistence", np.broadcast_to(hold[:, None], gt.shape)), ("constant_velocity", cv)):
        assert m["baselines"][name]["ade"] == pytest.approx(_scores(bpred, gt, valid & avail)[0], rel=1e-6), name

    # EgoDex protocol, recomputed with np.interp in each sample's last observed camera frame (an
    # interpolated validity of exactly 1 = both neighbouring knots valid)
    eg, fps = m["egodex"], zarr.open_group(str(store), mode="r")["index/fps"].oindex[np.asarray(rows)]
    assert len(eg["keypoints"]) == 12 and set(eg["choices"]) >= {"anchor_times", "low_confidence"}
    kp = [KEYPOINTS_BY_NAME[n] for n in eg["keypoints"]]
    for h in (1, 2, 3):
        per_avg, per_fin = [], []
        for i in range(len(rows)):
            t = np.concatenate([[0.0], (fut_idx[i] - past_idx[i, -1]) / fps[i]])
            if t[-1] < h:
                continue
            w2c = np.linalg.inv(batch["cam_last"][i].numpy().astype(np.float64))
            q = np.arange(1, 30 * h + 1) / 30.0
            errs, oks = [], []
            for j in kp:
                kn = {"p": np.concatenate([x[i, -1, j][None], pred[i, :, j]]),
                      "g": np.concatenate([x[i, -1, j][None], gt[i, :, j]])}
                kv = {"p": np.concatenate([[v[i, -1, j]], np.ones(len(t) - 1)]),
                      "g": np.concatenate([[v[i, -1, j]], valid[i, :, j]])}
                ip = {k: np.stack([np.interp(q, t, (kn[k] @ w2c[:3, :3].T + w2c[:3, 3])[:, c]) for c in range(3)], -1)
                      for k in kn}
                oks.append((np.interp(q, t, kv["p"].astype(float)) == 1) & (np.interp(q, t, kv["g"].astype(float)) == 1))
                errs.append(np.linalg.norm(ip["p"] - ip["g"], axis=-1))
            e, ok = np.stack(errs, 1), np.stack(oks, 1)  # [Q, 12]
            per_avg.append(e[ok].mean())
            per_fin.append(e[-1][ok[-1]].mean())
        key = f"{h}s"
        assert eg["counts"][key] == len(per_avg)
        if per_avg:
            assert eg[key]["ade"] == pytest.approx(np.mean(per_avg), rel=1e-5)
            assert eg[key]["fde"] == pytest.approx(np.mean(per_fin), rel=1e-5)
        else:
            assert eg[key]["ade"] is None
    assert eg["counts"]["1s"] > 0 and set(eg["baselines"]) == {"persistence", "constant_velocity"}


def test_other_split_latest_checkpoint_and_out_dir(trained, tmp_path):
    store, run = trained
    out = tmp_path / "val_eval"
    m = evaluate_run(run, store, out, EvalConfig(split="val", checkpoint="latest", device="cpu", figures=0,
                                                 progress=False))
    assert m["split"] == "val" and m["n"] == len(_split_rows(run, store, "val"))
    assert m["meta"]["checkpoint"].endswith("ckpt_latest.pt")
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    assert not list((out / "figures").glob("trajectories_*.png"))


def test_store_with_another_fingerprint_is_refused(trained, tmp_path):
    store, run = trained
    other = sf.write_store(tmp_path / "other.zarr", dataclasses.replace(FC, seed=1))
    with pytest.raises(ConfigMismatchError, match="fingerprint"):
        evaluate_run(run, other, tmp_path / "e", EvalConfig(device="cpu", progress=False))
    res = CliRunner().invoke(app, ["eval", "--run", str(run), "--cache", str(other), "--device", "cpu",
                                   "--out", str(tmp_path / "e2")])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigMismatchError)
    assert not (tmp_path / "e2" / "metrics.json").exists()


def _copy_run(run, dest):
    dest.mkdir()
    for name in ("config.json", "splits.json", "ckpt_best.pt", "metrics.jsonl"):
        shutil.copy(run / name, dest / name)
    return dest


def test_empty_split_is_refused(trained, tmp_path):
    store, run = trained
    copy = _copy_run(run, tmp_path / "run")
    doc = json.loads((copy / "splits.json").read_text())
    doc["videos"]["test"], doc["groups"]["test"] = [], []
    (copy / "splits.json").write_text(json.dumps(doc))
    with pytest.raises(TjepaError, match="test split .* has no rows"):
        evaluate_run(copy, store, None, EvalConfig(device="cpu", progress=False))


def test_checkpoint_of_another_configuration_is_refused(trained, tmp_path):
    store, run = trained
    copy = _copy_run(run, tmp_path / "run")
    doc = json.loads((copy / "config.json").read_text())
    doc["model"]["depth"] += 1
    (copy / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigMismatchError, match="mixes two runs"):
        evaluate_run(copy, store, None, EvalConfig(device="cpu", progress=False))


@pytest.mark.slow
def test_end_to_end_on_a_stage_one_store(stage_one_run, tmp_path):
    """synth -> `tjepa cache` (tiny encoders, with rollout windows) -> `tjepa train` (the shared
    fixture) -> `tjepa train --rollout` (its window model) -> `tjepa eval --rollout`."""
    store, trained_run = stage_one_run
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the window model goes into RUN/rollout/
    for args in (["train", "--cache", str(store), "--out", str(run), "--preset", "tiny", "--epochs", "1",
                  "--batch-size", "2", "--device", "cpu", "--no-progress", "--rollout"],
                 ["eval", "--run", str(run), "--cache", str(store), "--device", "cpu", "--no-progress",
                  "--figures", "1", "--rollout"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, (args[0], res.output, res.exception)
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] == len(_split_rows(run, store)) > 0
    assert np.isfinite([m["ade"], m["fde"], m["acc"], m["baselines"]["persistence"]["ade"]]).all()
    assert sorted(m["rollout_metrics"]["horizons"], key=int) == ["4", "8"]  # 8 future frames: 2 steps
    figs = {p.name.split("_")[0] for p in (run / "eval" / "figures").glob("*.png")}
    assert {"trajectories", "rollout", "error", "training"} <= figs
