"""The cue probe's classifier and its inputs (the store-reading path runs in tests/test_dvc_pipeline.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tjepa.errors import InputError
from tjepa.eval.probe import fit_logistic, read_cues, read_probe


def test_logistic_probe_reads_a_linear_cue_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    means = rng.normal(size=(3, 40)) * 3
    x = means[y] + rng.normal(size=(240, 40))
    predict = fit_logistic(x[:180], y[:180], 3)
    assert (predict(x[180:]) == y[180:]).mean() > 0.95
    noise = rng.normal(size=(240, 40))
    chance = (fit_logistic(noise[:180], y[:180], 3)(noise[180:]) == y[180:]).mean()
    assert chance < 0.6


def test_bad_probe_inputs_name_the_file(tmp_path):
    with pytest.raises(InputError, match="synth.json"):
        read_cues(tmp_path)
    (tmp_path / "p.json").write_text(json.dumps({"results": [{"feature": "x"}]}))
    with pytest.raises(InputError, match="p.json"):
        read_probe(tmp_path / "p.json")
