"""Figures (valid PNGs, hand-checked projection), metrics.json / report.md, and `tjepa compare`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from typer.testing import CliRunner

from tjepa.errors import InputError
from tjepa.eval.baselines import score_baselines
from tjepa.eval.compare import PAPER_RESULTS, comparison_rows, load_entries, resolve_metrics_path
from tjepa.eval.egodex_protocol import EgoDexMeter
from tjepa.eval.plots import (
    JOINT_NAMES,
    KEY_JOINTS,
    plot_horizon_curves,
    plot_rollout,
    plot_training_curves,
    plot_trajectories,
    project_points,
    render_trajectories,
)
from tjepa.eval.report import (
    assemble_metrics,
    read_metrics_json,
    write_metrics_json,
    write_report,
    write_summary_json,
)
from tjepa.metrics import LatentMeter, trajectory_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])  # for a 128 x 96 source


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def _cam(rot=np.eye(3), pos=(0.0, 0.0, 0.0)):
    c = np.eye(4)
    c[:3, :3], c[:3, 3] = rot, pos
    return c


def test_key_joints_are_wrists_and_fingertips():
    assert len(KEY_JOINTS) == 12
    assert JOINT_NAMES[KEY_JOINTS[0]] == "rightLittleFingerTip" and JOINT_NAMES[24] == "rightHand"
    assert {JOINT_NAMES[i] for i in KEY_JOINTS} >= {"rightHand", "leftHand", "rightThumbTip", "leftIndexFingerTip"}


def test_projection_by_hand():
    # camera at z = -2 looking down +z; point (0.5, 0.25, 0) is 2 m ahead
    uv, front = project_points([[0.5, 0.25, 0.0]], _cam(pos=(0, 0, -2)), K, scale=(0.5, 0.5))
    # full res: u = 100 * 0.25 + 64 = 89, v = 100 * 0.125 + 48 = 60.5; thumbnail at half size
    np.testing.assert_allclose(uv, [[44.5, 30.25]])
    assert front.all()
    # camera at the origin turned 90 deg about y: its forward axis is world +x
    ry = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    uv, front = project_points([[2.0, 0.1, 0.2], [-1.0, 0, 0]], _cam(ry), K)
    # camera coords of the first point: (-0.2, 0.1, 2) -> u = -10 + 64, v = 5 + 48
    np.testing.assert_allclose(uv[0], [54.0, 53.0])
    assert front.tolist() == [True, False] and np.isnan(uv[1]).all()  # behind the camera: dropped


def test_trajectory_plot_draws_where_projected(tmp_path):
    thumb = np.zeros((48, 64, 3), np.uint8)
    cam = _cam(pos=(0, 0, -2))
    # joint 0: true path runs horizontally through the frame, prediction far to the bottom-left
    gt = np.zeros((4, 52, 3))
    gt[:, 0, 0] = np.linspace(-0.5, 0.5, 4)
    pred = gt.copy()
    pred[:, 0, 1] = 0.4
    fig = render_trajectories(thumb, K, 128, 96, cam, gt, pred, joints=[0])
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    ax = fig.axes[0]

    def pixel(u, v):
        x, y = ax.transData.transform((u, v))
        return buf[int(round(buf.shape[0] - y)), int(round(x))]

    # gt passes through thumbnail pixel (32, 24) (u = 0.5 * (0 + 64), v = 0.5 * 48): drawn in C0
    np.testing.assert_allclose(pixel(32.0, 24.0), to_rgb("C0"), atol=0.15)
    # a thumbnail pixel no line crosses stays the (black) image
    np.testing.assert_allclose(pixel(10.0, 5.0), [0, 0, 0], atol=0.05)
    out = plot_trajectories(thumb, K, 128, 96, cam, gt, pred, tmp_path / "traj.png", past=gt[::-1])
    assert _is_png(out)


def test_curve_plots_are_pngs(tmp_path):
    assert _is_png(plot_horizon_curves({"model": [0.01, 0.02, 0.04], "persistence": [0.02, 0.05, 0.09]},
                                       tmp_path / "h.png"))
    assert _is_png(plot_rollout({"a": {"4": 0.07, "8": 0.08}, "b": {4: 0.1, 8: None}}, tmp_path / "r.png"))
    runs = {}
    for name, scale in (("a", 1.0), ("b", 2.0)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps({"epoch": e, "train_loss": scale / (e + 1), "train_traj": 0.5 / (e + 1),
                                         "val_ade": 0.1 / (e + 1), "val_acc": 0.1 * e, "lr": 1e-3}) + "\n"
                             for e in range(3)))
        runs[name] = p
    assert _is_png(plot_training_curves(runs, tmp_path / "t.png"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        plot_training_curves({"bad": bad}, tmp_path / "x.png")


def _eval_dir(tmp_path, name, offset, run=None):
    """A tiny but complete evaluation: model off by `offset` m, baselines on the same data."""
    rng = np.random.default_rng(0)
    past = rng.normal(size=(3, 4, 52, 3))
    fut = past[:, -1:].repeat(4, axis=1)  # the future holds still: persistence is perfect
    valid_p, valid_f = np.ones((3, 4, 52), bool), np.ones((3, 4, 52), bool)
    pred = fut.copy()
    pred[..., 0] += offset
    traj = trajectory_metrics(pred, fut, valid_f, horizons=(2, 4))
    base = score_baselines(past, valid_p, np.tile([0, 2, 4, 6], (3, 1)), np.tile([8, 10, 12, 14], (3, 1)),
                           fut, valid_f, horizons=(2, 4))
    lat = LatentMeter()
    lat.update(np.ones((3, 2, 5, 8)), np.zeros((3, 2, 5, 8)))
    meta = {"run": run, "fingerprint": "ab" * 32, "store": "data/cache.zarr"} if run else {"fingerprint": "ab" * 32}
    eg = EgoDexMeter(horizons_s=(1, 2))  # last future frame 14 at 8 fps: 1 s after frame 6
    eg.update(pred, fut, valid_f, past[:, -1], valid_p[:, -1], np.tile(np.eye(4), (3, 1, 1)), np.full(3, 6),
              np.tile([8, 10, 12, 14], (3, 1)), np.full(3, 8.0))
    with pytest.warns(RuntimeWarning, match="2s"):
        egodex = eg.compute()
    egodex["baselines"] = {"persistence": {"1s": {"ade": 0.0, "fde": 0.0}, "2s": {"ade": None, "fde": None}}}
    metrics = assemble_metrics(traj, split="test", latent=lat.compute(), baselines=base, meta=meta,
                               egodex=egodex)
    out = tmp_path / name
    fig = plot_horizon_curves({"model": traj["per_step"]}, out / "figures" / "horizon.png")
    write_metrics_json(out, metrics)
    return out, metrics, base, fig, meta


def test_metrics_json_and_report(tmp_path):
    out, metrics, base, fig, meta = _eval_dir(tmp_path, "ev", 0.03, run="run-a")
    data = json.loads((out / "metrics.json").read_text())
    assert data["ade"] == pytest.approx(0.03) and data["acc"] == 1.0 and data["split"] == "test"
    assert data["n"] == 3 and isinstance(data["ade"], float) and isinstance(data["per_step"], list)
    assert data["horizons"]["2"]["ade"] == pytest.approx(0.03)
    assert data["baselines"]["persistence"]["ade"] == pytest.approx(0.0)
    assert data["latent"]["l2"] == pytest.approx(math.sqrt(8))
    back = read_metrics_json(out / "metrics.json")
    assert back["horizons"][4]["fde"] == pytest.approx(0.03)

    report = write_report(out, metrics, base, [fig], meta)
    text = report.read_text()
    assert "| model | 0.0300 | 0.0300 | 1.000 | 3 |" in text
    assert "| persistence (baseline) | 0.0000 |" in text
    assert "![horizon](figures/horizon.png)" in text
    assert "ab" * 32 in text and "run-a" in text and "ADE@2" in text and "2.8284" in text  # sqrt(8)
    # EgoDex section: the final distance at 1 s sits on the last knot, where the model is off by 3 cm
    assert "## EgoDex protocol" in text and "1s: 3 of 3, 2s: 0 of 3" in text
    assert "| model | " in text and " | 0.0300 | – |\n| persistence (baseline) |" in text
    assert "low confidence:" in text and "anchor times:" in text and "Table 3" in text
    summary = json.loads(write_summary_json(out, metrics).read_text())
    assert summary["fde@1s"] == pytest.approx(0.03) and summary["ade@2s"] is None
    assert summary["ade"] == pytest.approx(0.03) and summary["ade_persist"] == 0.0 and summary["n"] == 3
    with pytest.raises(FileNotFoundError):
        write_report(out, metrics, base, [out / "missing.png"], meta)


def test_metrics_json_nan_to_null_and_required_keys(tmp_path):
    with pytest.warns(RuntimeWarning):
        traj = trajectory_metrics(np.zeros((1, 2, 1, 3)), np.zeros((1, 2, 1, 3)), np.zeros((1, 2, 1), bool),
                                  horizons=(1,))
    path = write_metrics_json(tmp_path, assemble_metrics(traj, split="val"))
    assert json.loads(path.read_text())["ade"] is None  # strict JSON, no NaN literal
    assert math.isnan(read_metrics_json(path)["ade"])
    with pytest.raises(InputError, match="split"):
        write_metrics_json(tmp_path, {"ade": 1.0, "fde": 1.0, "acc": 0.0, "n": 1})


def test_compare_rows_and_cli(tmp_path):
    _eval_dir(tmp_path / "runs" / "good", "eval", 0.01)          # a run dir holding eval/metrics.json
    _eval_dir(tmp_path, "bad-eval", 0.06, run="bad")               # an eval dir, name from meta.run
    entries = load_entries([tmp_path / "runs" / "good", tmp_path / "bad-eval"])
    assert [e.name for e in entries] == ["good", "bad"]
    rows = comparison_rows(entries)
    # baselines are shared data (same split, fingerprint, n): each shown once; sorted by ADE
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("baseline", "persistence"), ("model", "good"), ("model", "bad"), ("baseline", "constant_velocity")]
    assert rows[1]["ade"] == pytest.approx(0.01) and rows[1]["latent_l2"] == pytest.approx(math.sqrt(8))

    from tjepa.cli import app

    md, js = tmp_path / "cmp.md", tmp_path / "cmp.json"
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "runs" / "good"), str(tmp_path / "bad-eval"),
                                   "--out", str(md), "--json", str(js), "--paper"])
    assert res.exit_code == 0, res.output
    assert "good" in res.output and "NOT comparable" in res.output
    text = md.read_text()
    assert text.index("| model | good |") < text.index("| model | bad |")
    assert "not comparable" in text.lower() and f"| {PAPER_RESULTS[0]['name']} | 0.061 |" in text
    doc = json.loads(js.read_text())
    assert [r["name"] for r in doc["rows"]][:2] == ["persistence", "good"]
    assert doc["paper_reference"]["results"][0]["ade"] == 0.061
    assert doc["by_name"]["good"]["ade"] == pytest.approx(0.01)
    # both protocols, and EgoDex's Table 3 beside ours with --paper
    eg = text[text.index("## EgoDex protocol"):]
    assert "| model | good | " in eg and "| paper | EgoDex Dec + BC (Table 3) | 0.031 | 0.045 | 0.053 | 0.049 |" in eg
    assert "EgoDex protocol" in res.output and "Table 3" in res.output
    assert doc["rows"][1]["egodex"]["1s"]["fde"] == pytest.approx(0.01)
    assert doc["paper_reference"]["egodex_table3"]["results"]["2s"]["ade"] == 0.045

    res = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert isinstance(res.exception, InputError) and "tried" in str(res.exception)
    with pytest.raises(InputError):
        resolve_metrics_path(tmp_path / "runs")


def test_report_rollout_and_stability_sections(tmp_path):
    from tjepa.eval.report import render_report
    from tjepa.metrics import stability_summary

    traj = trajectory_metrics(np.full((1, 4, 1, 3), 0.01), np.zeros((1, 4, 1, 3)), horizons=(4,))
    st = stability_summary([1.0, 4.0], [1.0, 0.05], [1.0, 1.0], [0.0, 0.0])
    m = assemble_metrics(traj, split="test", stability=st, rollout={"4->4": {4: 0.07, "8": 0.08}})
    text = render_report(tmp_path, m, {}, [], {})
    assert "| 4->4 | 0.0700 | 0.0800 |" in text
    assert "**unstable**" in text and "| 2 | 4.0000 | 0.0500 | 1.0000 | 0.000 | yes | yes |" in text


def test_compare_keeps_baselines_of_different_data_apart(tmp_path):
    a, *_ = _eval_dir(tmp_path, "a", 0.01, run="a")
    b, *_ = _eval_dir(tmp_path, "b", 0.02, run="b")
    m = json.loads((b / "metrics.json").read_text())
    m["meta"]["fingerprint"] = "cd" * 32
    (b / "metrics.json").write_text(json.dumps(m))
    names = [r["name"] for r in comparison_rows(load_entries([a, b])) if r["kind"] == "baseline"]
    assert sorted(names)[:2] == ["constant_velocity [test, abababab, n=3]", "constant_velocity [test, cdcdcdcd, n=3]"]
    assert len(names) == 4
