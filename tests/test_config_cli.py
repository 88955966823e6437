"""Configuration from the dataclasses: `--config`, `--set`, typed and validated, recorded in RUN."""

from __future__ import annotations

import json

import pytest
import store_factory as sf
from reliability_tools import run, tjepa_cmd
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.config_io import overrides, select
from tjepa.errors import ConfigError
from tjepa.train.run_config import run_settings

FC = sf.FactoryConfig(n=12, groups=4, n_past=4, n_future=4)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return sf.write_store(tmp_path_factory.mktemp("cfgcli") / "s.zarr", FC)


def _train(*args: str):
    return CliRunner().invoke(app, ["train", "--preset", "tiny", "--epochs", "1", "--batch-size", "4",
                                    "--no-progress", "--device", "cpu", *args])


def test_set_switches_the_published_choices_and_the_run_records_them(tmp_path, store):
    run_dir = tmp_path / "run"
    res = _train("--cache", str(store), "--out", str(run_dir), "--set", "model.step_pool=pairs",
                 "--set", "model.anchor=none", "--set", "model.depth=1", "--set", "train.head_lr_decay=0.5")
    assert res.exit_code == 0, res.output
    doc = json.loads((run_dir / "config.json").read_text())
    assert (doc["model"]["step_pool"], doc["model"]["anchor"], doc["model"]["depth"]) == ("pairs", "none", 1)
    assert doc["train"]["head_lr_decay"] == 0.5 and doc["train"]["epochs"] == 1

    # the run directory re-creates the run: same train and model sections from its config.json
    again = tmp_path / "again"
    res = CliRunner().invoke(app, ["train", "--cache", str(store), "--out", str(again), "--no-progress",
                                   "--config", str(run_dir / "config.json")])
    assert res.exit_code == 0, res.output
    redo = json.loads((again / "config.json").read_text())
    assert (redo["train"], redo["model"]) == (doc["train"], doc["model"])


def test_config_file_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 2\n  preset: tiny\nmodel:\n  depth: 3\n  variant: jepa\n")
    from tjepa.commands.train import flag_settings
    from tjepa.config_io import load_file, merge

    doc = merge(load_file(path), flag_settings(train__batch_size=8, model__variant=None),
                overrides(["model.depth=1", "train.levels=[0, 4]"]))
    cfg, model = run_settings(doc)
    assert (cfg.epochs, cfg.batch_size, cfg.preset, cfg.levels) == (5, 8, "tiny", (0, 4))
    assert model == {"depth": 1, "variant": "jepa"}
    # a shared file (params.yaml): --section picks the sections; a missing one is named
    shared = {"data": {"root": "x"}, **load_file(path)}
    assert run_settings(select(shared, ["train", "model"]))[0].epochs == 5
    with pytest.raises(ConfigError, match="data"):
        run_settings(shared)
    with pytest.raises(ConfigError, match="modle"):
        select(shared, ["train", "modle"])


@pytest.mark.parametrize("setting, names", [
    ("model.bogus=1", ["model", "bogus", "step_pool", "anchor"]),  # unknown: named, valid ones listed
    ("train.epoch=3", ["train", "epoch", "epochs", "batch_size"]),
    ("optim.lr=1", ["optim", "train", "model"]),
    ("model.depth=deep", ["model.depth", "int", "deep"]),  # wrong type: field and expected type
    ("train.amp=maybe", ["train.amp", "bool"]),
    ("model.vjepa_width=8", ["vjepa_width", "store layout"]),  # comes from the store
    ("model.anchor=sideways", ["anchor", "last_observed"]),  # the dataclass's own check
])
def test_bad_settings_name_the_key(setting, names):
    with pytest.raises(ConfigError) as err:
        run_settings(overrides([setting]))
    for name in names:
        assert name in str(err.value), (name, str(err.value))


def test_unknown_key_on_the_command_line_has_no_traceback(tmp_path, store):
    res = run(tjepa_cmd("train", "--cache", store, "--out", tmp_path / "r", "--set", "model.nope=1"))
    assert res.returncode == 2
    assert "nope" in res.stderr and "step_pool" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()
