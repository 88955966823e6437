"""Golden numerics: the first losses of the `tiny` and `tiny-release` presets at fixed seeds.

A change of initialisation order, of a default or of an operator moves these numbers and fails here
on purpose. The values were computed by this code on CPU (torch 2.13.0, float32, one thread,
deterministic algorithms). If a change of them is intended, say why in the commit and regenerate:

    .venv/bin/python tests/test_golden.py      # prints GOLDEN; paste it below

Tolerance rtol 2e-5: 500x the differences that two threads instead of one make (4e-8 relative,
measured), far below what a change of the model moves (building the head before the predictor
moves the first losses by percents).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import store_factory as sf  # noqa: E402

from tjepa.train.config import preset  # noqa: E402
from tjepa.train.loop import train_run  # noqa: E402
from tjepa.train.model import ThinkJEPA, random_batch  # noqa: E402
from tjepa.train.run_config import TrainConfig  # noqa: E402

PRESETS = ("tiny", "tiny-release")
FC = sf.FactoryConfig(n=12, groups=6, n_past=4, n_future=4, speed=0.05, spread=0.02)
EPOCH_KEYS = ("train_loss", "train_traj", "train_latent", "val_ade")

GOLDEN = {
    "tiny": {
        "init": [1.2242203950881958, 0.18964028358459473, 1.034580111503601],
        "epochs": [[1.698215365409851, 0.0152350515127182, 1.6829802989959717, 0.11162006637909316],
                   [1.6281696557998657, 0.01314451638609171, 1.6150251626968384, 0.11547627882055832]],
    },
    "tiny-release": {
        "init": [3.652472972869873, 2.611147165298462, 1.0413258075714111],
        "epochs": [[2.3687762022018433, 0.6327908635139465, 1.735985279083252, 1.0358322731455865],
                   [2.1023433208465576, 0.4228745251893997, 1.6794687509536743, 0.9921933391885676]],
    },
}


def init_losses(name: str) -> list[float]:
    """(total, traj, latent) of a fresh model (seed 42, as the trainer seeds it) on a fixed batch."""
    torch.manual_seed(42)
    model = ThinkJEPA(preset(name, n_past=4, n_future=4)).eval()
    batch = random_batch(model.cfg, batch_size=3, seed=0)
    with torch.no_grad():
        losses = model.loss(batch, model(batch))
    return [float(losses[k]) for k in ("total", "traj", "latent")]


def epoch_losses(name: str, store: Path, run: Path) -> list[list[float]]:
    """EPOCH_KEYS of the first two epochs of the real trainer (published learning rates)."""
    cfg = TrainConfig(epochs=2, batch_size=4, preset=name, device="cpu")
    return [[float(m[k]) for k in EPOCH_KEYS] for m in train_run(cfg, store, run, progress=False)]


def compute(store: Path, workdir: Path) -> dict[str, dict[str, list]]:
    return {name: {"init": init_losses(name), "epochs": epoch_losses(name, store, workdir / name)}
            for name in PRESETS}


@pytest.fixture(scope="module")
def deterministic():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(det)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def values(tmp_path_factory, deterministic):
    tmp = tmp_path_factory.mktemp("golden")
    return compute(sf.write_store(tmp / "s.zarr", FC), tmp)


@pytest.mark.parametrize("name", PRESETS)
def test_first_losses_match_the_golden_values(values, name):
    got, want = values[name], GOLDEN[name]
    torch.testing.assert_close(torch.tensor(got["init"], dtype=torch.float64),
                               torch.tensor(want["init"], dtype=torch.float64), rtol=2e-5, atol=0,
                               msg=lambda m: f"{name} init losses {got['init']} != golden {want['init']}\n{m}")
    torch.testing.assert_close(torch.tensor(got["epochs"], dtype=torch.float64),
                               torch.tensor(want["epochs"], dtype=torch.float64), rtol=2e-5, atol=0,
                               msg=lambda m: f"{name} epochs {got['epochs']} != golden {want['epochs']}\n{m}")


def test_the_presets_are_told_apart(values):
    """The golden values would not notice a release preset that silently built ours."""
    assert abs(values["tiny"]["init"][1] - values["tiny-release"]["init"][1]) > 1e-2


if __name__ == "__main__":
    import pprint
    import tempfile

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as d:
        pprint.pprint(compute(sf.write_store(Path(d) / "s.zarr", FC), Path(d)), width=110)
