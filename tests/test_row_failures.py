"""One bad row fails alone (issue 11.1): invalid row data is recorded, the job goes on, exit 3.

Only the store itself failing stops a job, with a message and no traceback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cache_helpers import altered_models, cache_args, copy_tree, run_cli
from store_factory import FactoryConfig, write_store

from tjepa.cache_schema.ledger import Ledger
from tjepa.cache_schema.store import DONE, FAILED, FeatureStore
from tjepa.pipeline.worker import store_rows


def test_an_invalid_row_in_a_batch_fails_alone(tmp_path):
    path = write_store(tmp_path / "s.zarr", FactoryConfig(n=4, rows_per_shard=4))
    store = FeatureStore.open(path, mode="r+")
    videos = {r: v for v, r in store.row_of().items()}
    datas = [store.read_row(r) for r in range(3)]
    datas[1].vjepa_past = datas[1].vjepa_past.astype(np.float32) * np.float32(1e6)  # overflows float16
    datas[2].prompt_mean = np.full_like(datas[2].prompt_mean, np.nan)
    outcomes = store_rows(store, [(r, videos[r], d) for r, d in enumerate(datas)])
    assert outcomes[0] == (videos[0], None)
    assert "vjepa_past" in outcomes[1][1] and "overflow float16" in outcomes[1][1]
    assert "prompt_mean has" in outcomes[2][1] and "non-finite" in outcomes[2][1]
    assert store.status().tolist() == [DONE, FAILED, FAILED, DONE]
    ledger = {f.row: f.reason for f in store.ledger.read()}
    assert set(ledger) == {1, 2} and ledger[1] == outcomes[1][1]


def _nan_embeddings(model) -> None:
    model.model.language_model.embed_tokens.weight.fill_(float("nan"))


@pytest.fixture(scope="module")
def nan_models(tiny_models, tmp_path_factory):
    return altered_models(tiny_models, tmp_path_factory.mktemp("nan") / "models", qwen=_nan_embeddings)


def test_non_finite_encoder_output_fails_rows_not_the_job(synth_root, nan_models, tmp_path):
    """Every row is recorded failed with its reason and the command ends normally with exit 3."""
    videos = copy_tree(synth_root, tmp_path / "videos", n=4)
    out = tmp_path / "store.zarr"
    res = run_cli(cache_args(videos, out, nan_models, "--keep-tokens", "--think-tokens", "2", "--json"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    summary = json.loads(res.stdout)  # issue 11.8: stdout is exactly one JSON object
    assert summary["exit_code"] == 3 and summary["rows"] == {"total": 4, "done": 0, "failed": 4, "pending": 0}
    assert summary["this_run"] == {"todo": 4, "done": 0, "failed": 4, "skipped": 0}
    assert sorted(f["video"] for f in summary["failures"]) == sorted(str(p.relative_to(videos))
                                                                     for p in videos.rglob("*.mp4"))
    assert all("prompt_mean has" in f["reason"] and "non-finite" in f["reason"] for f in summary["failures"])
    assert summary["stage_seconds"]["model"] > 0 and summary["seconds"] > 0 and "videos_per_s" in summary
    store = FeatureStore.open(out)
    assert (store.status() == FAILED).all() and store.n_rows == 4
    lines = [f.__dict__ for f in Ledger.of_store(out).read()]
    assert len(lines) == 4 and all("non-finite" in x["reason"] for x in lines), lines


def test_a_store_failure_is_fatal_with_a_message(tmp_path):
    from tjepa.errors import StoreError

    path = write_store(tmp_path / "s.zarr", FactoryConfig(n=2, rows_per_shard=2))
    store = FeatureStore.open(path, mode="r+")
    data = store.read_row(0)
    videos = {r: v for v, r in store.row_of().items()}
    import shutil

    chunks = path / "vjepa" / "past" / "c"
    shutil.rmtree(chunks)
    chunks.write_text("not a directory")  # the store refuses the write: not the row's fault (root ignores chmod)
    with pytest.raises(StoreError, match="s.zarr: writing rows"):
        store_rows(store, [(0, videos[0], data)])
