"""Shared fixtures: a synthetic EgoDex-format dataset and tiny random-weight models, built once per session.

Everything is real (PyAV mp4s, HDF5 files, transformers models saved with save_pretrained); nothing
is mocked. Both are small enough for 2 CPU cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic EgoDex tree (several task folders, mp4 + hdf5 per episode)."""
    from tjepa.pipeline.synth import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SynthConfig(episodes=6, seed=0))
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight V-JEPA 2 + Qwen3-VL (+ tokenizer) saved to disk; returns the directory."""
    from tjepa.pipeline.encoders.presets import build_tiny_models

    out = tmp_path_factory.mktemp("models")
    build_tiny_models(out, seed=0)
    return out


@pytest.fixture(scope="session")
def stage_one_run(synth_root, tiny_models, tmp_path_factory):
    """(store, run): `synth_root` cached by `tjepa cache` (tiny encoders, 8 + 8 frames, rollout windows
    of 4 frames) and a tiny run trained on it for one epoch by `tjepa train`, both through the real CLI."""
    from typer.testing import CliRunner

    from tjepa.cli import app

    root = tmp_path_factory.mktemp("stage_one_run")
    store, run = root / "s.zarr", root / "run"
    for args in (["cache", "--videos", str(synth_root), "--out", str(store), "--models", "tiny", "--models-dir",
                  str(tiny_models), "--past", "8", "--future", "8", "--window-frames", "4", "--device", "cpu"],
                 ["train", "--cache", str(store), "--out", str(run), "--preset", "tiny", "--epochs", "1",
                  "--batch-size", "2", "--device", "cpu", "--no-progress"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, (args[0], res.output, res.exception)
    return store, run


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

from s3_server import s3_server  # noqa: E402,F401  (session fixture: one real S3 server)
