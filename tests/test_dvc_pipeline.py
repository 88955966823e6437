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
    env = dict(os.environ, DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # the venv's `tjepa`
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["episodes"] = 9
    params["train"]["epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    return root


def test_repro_runs_every_stage_and_writes_metrics(project):
    _run([sys.executable, "-m", "dvc", "repro"], project)
    for variant in ("thinkjepa", "jepa", "vlm"):
        metrics = json.loads((project / f"reports/{variant}/metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["n"] > 0
        assert metrics["ade"] is not None and metrics["ade"] > 0
    table = (project / "reports/compare.md").read_text()
    assert "thinkjepa" in table and "persistence" in table
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project)
    assert "ade" in shown.stdout


def test_second_repro_is_a_no_op(project):
    res = _run([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in res.stdout


def test_a_training_param_reruns_only_training_and_evaluation(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    res = _run([sys.executable, "-m", "dvc", "repro"], project)
    ran = {line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")}
    assert {"train@thinkjepa", "train@jepa", "train@vlm", "eval@thinkjepa"} <= ran
    assert not ran & {"synth", "models", "cache"}
    # params.yaml's model section reaches the runs with no knob listed in dvc.yaml
    params["model"] = {"step_pool": "pairs", "depth": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    res = _run([sys.executable, "-m", "dvc", "repro", "train@jepa"], project)
    doc = json.loads((project / "runs" / "jepa" / "config.json").read_text())
    assert (doc["model"]["step_pool"], doc["model"]["depth"], doc["train"]["seed"]) == ("pairs", 1, 7)
