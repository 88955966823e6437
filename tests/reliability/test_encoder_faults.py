"""Fault: an encoder returns non-finite or out-of-range values (issue 11.1/11.2).

Real tiny checkpoints whose weights were edited (saved with save_pretrained, loaded by the
production path), cached in-process and on a dask LocalCluster (`--workers 1`):
- Qwen3-VL embeddings NaN: the VLM states are non-finite -> every row fails alone, with the reason;
- V-JEPA 2's final LayerNorm x1e6: latents overflow float16 -> every row fails alone;
- Qwen3-VL embeddings x1e6 with --keep-tokens (massive activations beyond float16, within bfloat16):
  every row is done, its tokens finite.
Each run must end normally (exit 3 or 0, no traceback), print a JSON summary that says the same as
the store, leave no half-written row done, and leave a store `tjepa validate` accepts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cache_helpers import altered_models, cache_args, copy_tree
from reliability_tools import ledger, run, status_by_video, tjepa_cmd

from tjepa.cache_schema.store import FeatureStore

pytestmark = pytest.mark.reliability


def _qwen_nan(model) -> None:
    model.model.language_model.embed_tokens.weight.fill_(float("nan"))


def _qwen_massive(model) -> None:
    model.model.language_model.embed_tokens.weight.mul_(1e6)


def _vjepa_overflow(model) -> None:
    model.encoder.layernorm.weight.mul_(1e6)


# name -> (qwen edit, vjepa edit, extra args, expected exit code, phrase every failure reason holds)
FAULTS = {
    "VLM states NaN": (_qwen_nan, None, (), 3, "non-finite"),
    "V-JEPA latents beyond float16": (None, _vjepa_overflow, (), 3, "vjepa_past"),
    "VLM tokens beyond float16 (--keep-tokens)": (_qwen_massive, None, ("--keep-tokens",), 0, None),
}
EXECUTORS = {"in-process": (), "dask (--workers 1)": ("--workers", "1")}


@pytest.fixture(scope="module")
def videos(synth_root, tmp_path_factory):
    return copy_tree(synth_root, tmp_path_factory.mktemp("enc_fault") / "videos", n=4)


@pytest.fixture(scope="module")
def faulty_models(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty_models")
    return {name: altered_models(tiny_models, root / f"m{i}", qwen=q, vjepa=v)
            for i, (name, (q, v, *_)) in enumerate(FAULTS.items())}


@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_encoder_fault(fault, executor, videos, faulty_models, tmp_path, figures):
    _, _, extra, want_code, phrase = FAULTS[fault]
    out = tmp_path / "store.zarr"
    args = cache_args(videos, out, faulty_models[fault], "--think-tokens", "2", "--json", *extra, *EXECUTORS[executor])
    res = run(tjepa_cmd(*args), timeout=900)
    traceback = "Traceback" in res.stderr
    summary = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    status = status_by_video(out)
    reasons = {e["video"]: e["reason"] for e in ledger(out)}
    failed = [v for v, s in status.items() if s == 2]
    clear = [v for v in failed if phrase is None or phrase in reasons.get(v, "")]
    valid = run(tjepa_cmd("validate", str(out))).returncode == 0
    finite_tokens = True
    if "--keep-tokens" in extra and status and all(s == 1 for s in status.values()):
        store = FeatureStore.open(out)
        rows = [store.read_row(r) for r in range(store.n_rows)]
        finite_tokens = all(np.isfinite(r.prompt_tokens).all() for r in rows)
        big = max(float(np.abs(r.prompt_tokens).max()) for r in rows)
    figures.record("encoder_fault", fault=fault, executor=executor, rows=len(status),
                   done=sum(s == 1 for s in status.values()), failed=len(failed), failed_with_reason=len(clear),
                   exit_code=res.returncode, traceback=traceback, json_ok=bool(summary), validate_ok=valid)
    assert res.returncode == want_code, res.stdout[-2000:] + res.stderr[-4000:]
    assert not traceback, res.stderr[-4000:]
    assert summary["rows"]["failed"] == len(failed) and summary["exit_code"] == want_code
    assert len(status) == 4 and valid
    if want_code == 3:
        assert len(failed) == 4 and len(clear) == 4, reasons
    else:
        assert all(s == 1 for s in status.values()) and finite_tokens and big > 65504
