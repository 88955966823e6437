"""`dvc repro` of the real dvc.yaml on a reduced pipeline (few episodes, one epoch), in a scratch git repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", COLUMNS="400")  # DVC would wrap to 80
    for who in ("AUTHOR", "COMMITTER"):  # `dvc exp run` commits experiments
        env.setdefault(f"GIT_{who}_NAME", "tjepa test")
        env.setdefault(f"GIT_{who}_EMAIL", "test@example.invalid")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # the venv's `tjepa`
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["episodes"] = 16  # 2 per task folder: 12 train / 2 val / 2 test videos
    params["train"]["epochs"] = 1
    params["runs"]["seeds"] = "42"  # seed aggregation is tested in test_compare_seeds.py
    params["eval"]["figures"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    return root


def test_repro_runs_every_stage_and_writes_metrics(project):
    _run([sys.executable, "-m", "dvc", "repro"], project)
    variants = yaml.safe_load((project / "params.yaml").read_text())["variants"]
    assert {"thinkjepa", "jepa", "vlm", "thinkjepa-dense", "jepa-dense"} <= set(variants)
    for name in variants:
        metrics = json.loads((project / f"reports/{name}/seed42/metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["n"] > 0
        assert metrics["ade"] is not None and metrics["ade"] > 0
        assert json.loads((project / f"reports/metrics/{name}.json").read_text())["n_seeds"] == 1
    table = (project / "reports/compare.md").read_text()
    assert "thinkjepa-dense" in table and "persistence" in table and "carry the cue" in table
    rows = {r["name"]: r for r in json.loads((project / "reports/compare.json").read_text())["rows"]}
    assert rows["jepa-dense"]["seeds"] == [42] and "probe" in json.loads((project / "reports/compare.json").read_text())
    # the dense store's V-JEPA clip is the window before the split; the uniform one is not
    probe = json.loads((project / "reports/probe.json").read_text())
    assert {r["sampling"] for r in probe["results"]} == {"uniform", "dense window of 8 frames"}
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project)
    assert "ade" in shown.stdout


def test_second_repro_is_a_no_op(project):
    res = _run([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in res.stdout


def test_metrics_show_fits_a_terminal_and_holds_no_absolute_path(project):
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show"], project).stdout
    lines = [ln for ln in shown.splitlines() if ln.strip()]
    # one row per variant, the headline columns only; 160 characters fits a laptop terminal at a normal
    # font size (the full 150-field detail stays in metrics.json / report.md)
    assert len(lines) == 6 and "ade@1s" in lines[0] and "ade_persist" in lines[0] and "n_seeds" in lines[0], shown
    assert max(map(len, lines)) < 160, shown
    for f in sorted((project / "reports").rglob("*.json")):
        def strings(x):
            if isinstance(x, dict):
                return [s for k, v in x.items() for s in [str(k), *strings(v)]]
            if isinstance(x, list):
                return [s for v in x for s in strings(v)]
            return [x] if isinstance(x, str) else []
        bad = [s for s in strings(json.loads(f.read_text())) if os.path.isabs(s) or str(project) in s]
        assert not bad, (f, bad)


def test_a_parameter_sweep_reruns_only_training_and_evaluation(project):
    """`dvc exp run -S train.epochs=2 -S runs.seeds=7 eval@thinkjepa` (a committed baseline first; one
    variant's chain keeps the test short): its training and evaluation re-run, nothing upstream does,
    and the experiment's metrics are recorded; then params.yaml's model section reaches a run with no
    knob listed in dvc.yaml."""
    # metrics files are `cache: false`: git tracks them, so an experiment's commit carries its figures
    summaries = [str(p.relative_to(project)) for p in sorted(project.glob("reports/metrics/*.json"))]
    assert len(summaries) == 5
    _run(["git", "add", "dvc.yaml", "dvc.lock", "params.yaml", ".dvc", ".dvcignore", *summaries], project)
    _run(["git", "commit", "-qm", "baseline"], project)
    res = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=2", "-S", "runs.seeds=7",
                "eval@thinkjepa"], project)
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@thinkjepa", "eval@thinkjepa"}, ran  # nothing upstream, no other variant
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert (params["train"]["epochs"], str(params["runs"]["seeds"])) == (2, "7")
    shown = json.loads(_run([sys.executable, "-m", "dvc", "exp", "show", "--json"], project).stdout)

    def records(node):  # every {params, metrics} record of the nested `exp show --json` document
        if isinstance(node, dict):
            here = [node] if {"params", "metrics"} <= set(node) else []
            return here + [r for v in node.values() for r in records(v)]
        return [r for v in node for r in records(v)] if isinstance(node, list) else []
    swept = [r for r in records(shown) if r["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
             and r["metrics"] and "ade@1s" in r["metrics"]["reports/metrics/thinkjepa.json"]["data"]]
    assert swept, json.dumps(shown)[:2000]
    # params.yaml's model section reaches the runs with no knob listed in dvc.yaml
    params["model"] = {"step_pool": "pairs", "depth": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    _run([sys.executable, "-m", "dvc", "repro", "train@jepa"], project)
    doc = json.loads((project / "runs" / "jepa" / "seed7" / "config.json").read_text())
    assert (doc["model"]["step_pool"], doc["model"]["depth"], doc["train"]["seed"]) == ("pairs", 1, 7)
