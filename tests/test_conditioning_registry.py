"""A conditioning mode is one registration: defined here, in the test file, and trained through the config."""

from __future__ import annotations

import json

import pytest
import store_factory as sf
import torch
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.errors import ConfigError
from tjepa.train import conditioning
from tjepa.train.config import preset
from tjepa.train.model import ThinkJEPA, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")


class Shift(conditioning.Conditioning):
    """A made-up mode: the guidance adds one vector per layer to the stream (no scale)."""

    mod_chunks = 1

    def stream(self, block, x, mod):
        return x if mod is None else x + mod[:, None, :]


@pytest.fixture(scope="module")
def shift():
    conditioning.register("shift", Shift())
    yield "shift"
    conditioning._REGISTRY.pop(("shift", "ours"))


def test_a_registered_mode_builds_forwards_and_learns(shift):
    model = ThinkJEPA(preset("tiny", conditioning=shift))
    assert model.guidance.film[0][-1].out_features == model.cfg.width  # mod_chunks * width
    assert all(blk.conditioning == shift for blk in model.predictor.blocks)
    batch = random_batch(model.cfg, past_tubelets=2, future_tubelets=2)
    closed = model(batch).pred_frames.detach()
    with torch.no_grad():
        model.guidance.gate.fill_(0.5)
    out = model(batch)
    assert (out.pred_frames - closed).abs().max() > 1e-4  # the guidance now moves the prediction
    model.loss(batch, out)["total"].backward()
    assert model.guidance.film[0][-1].weight.grad.abs().sum() > 0
    # only the registered style exists; an unknown name lists the registered ones
    with pytest.raises(ValueError, match="no cond_style='release'"):
        preset("tiny", conditioning=shift, cond_style="release")
    with pytest.raises(ValueError, match="shift"):
        preset("tiny", conditioning="nope")


def test_tjepa_train_takes_the_registered_mode_by_set(tmp_path, shift):
    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4))
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--epochs", "1", "--batch-size", "4",
                                   "--no-progress", "--device", "cpu", "--cache", str(store), "--out",
                                   str(run_dir), "--set", f"model.conditioning={shift}"])
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "config.json").read_text())["model"]["conditioning"] == shift
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--cache", str(store), "--out",
                                   str(tmp_path / "bad"), "--set", "model.conditioning=nope"])
    # a ConfigError (the entry point prints it without a traceback) that lists the registered modes
    assert isinstance(res.exception, ConfigError) and "'nope'" in str(res.exception)
    assert "shift" in str(res.exception)
