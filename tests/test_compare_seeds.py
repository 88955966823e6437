"""`tjepa compare` over seeds: `reports/<name>/seed<N>/` evaluations become one mean ± std row.

The metrics.json files are written by hand here (no training), so every expected mean and std is
computed from the inputs below.
"""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from tjepa.errors import InputError
from tjepa.eval.compare import comparison_rows, load_entries

FP = "ab" * 32
# per seed: (ade, fde, acc, egodex ade@1s)
THINK = {42: (0.10, 0.20, 0.50, 0.03), 43: (0.12, 0.26, 0.40, 0.05), 44: (0.17, 0.23, 0.60, 0.04)}


def _metrics(ade, fde, acc, eg1=None, *, split="test", n=6, threshold=0.05, **meta):
    m = {"split": split, "n": n, "ade": ade, "fde": fde, "acc": acc, "threshold": threshold,
         "latent": {"l2": 2 * ade},
         "baselines": {"persistence": {"ade": 0.2, "fde": 0.3, "acc": 0.1, "n": n}},
         "meta": {"fingerprint": FP, "split": split, **meta}}
    if eg1 is not None:
        m["egodex"] = {"1s": {"ade": eg1, "fde": 2 * eg1}, "2s": {"ade": None, "fde": None},
                       "counts": {"1s": n, "2s": 0, "3s": 0},
                       "baselines": {"persistence": {"1s": {"ade": 0.07, "fde": 0.09}}}}
    return m


def _write(d, metrics):
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture
def reports(tmp_path):
    """reports/thinkjepa/seed42..44 (seed 44's only in its run's config.json), reports/jepa/seed42."""
    for seed, (ade, fde, acc, eg1) in THINK.items():
        run_dir = tmp_path / "runs" / "thinkjepa" / f"seed{seed}"
        meta = {"run": f"seed{seed}", "run_dir": str(run_dir)}
        if seed == 44:
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text(json.dumps({"train": {"seed": 44}}))
        else:
            meta["seed"] = seed
        _write(tmp_path / "reports" / "thinkjepa" / f"seed{seed}", _metrics(ade, fde, acc, eg1, **meta))
    _write(tmp_path / "reports" / "jepa" / "seed42", _metrics(0.15, 0.25, 0.45, 0.06, run="seed42", seed=42))
    return tmp_path / "reports"


def test_seed_directories_become_one_row_of_means_and_sample_stds(reports):
    rows = comparison_rows(load_entries([reports / "thinkjepa", reports / "jepa"]))
    by = {r["name"]: r for r in rows}
    assert sorted(by) == ["jepa", "persistence", "thinkjepa"]  # named after the parent, baseline once
    t = by["thinkjepa"]
    for i, key in enumerate(("ade", "fde", "acc")):
        vals = [v[i] for v in THINK.values()]
        assert t[key] == pytest.approx(statistics.fmean(vals), abs=1e-12)
        assert t[f"{key}_std"] == pytest.approx(statistics.stdev(vals), abs=1e-12)
    assert t["ade_std"] == pytest.approx(0.0360555, abs=1e-6)  # sqrt((.03² + .01² + .04²) / 2), ddof=1
    assert t["latent_l2"] == pytest.approx(2 * 0.13)
    assert t["seeds"] == [42, 43, 44] and t["n_seeds"] == 3 and t["n"] == 6
    eg = t["egodex"]["1s"]
    assert eg["ade"] == pytest.approx(0.04) and eg["ade_std"] == pytest.approx(0.01)
    assert eg["fde"] == pytest.approx(0.08) and eg["fde_std"] == pytest.approx(0.02) and eg["n"] == 6
    assert eg["ade"] == pytest.approx(0.04) and t["egodex"]["2s"]["ade_std"] is None  # no samples at 2 s
    j = by["jepa"]  # one seed: its values, no spread
    assert (j["ade"], j["seeds"], j["n_seeds"]) == (0.15, [42], 1)
    assert j["ade_std"] is j["fde_std"] is j["acc_std"] is j["egodex"]["1s"]["ade_std"] is None
    assert by["persistence"]["seeds"] == [] and by["persistence"]["ade_std"] is None


def test_compare_cli_writes_mean_pm_std_and_seeds(reports, tmp_path):
    from tjepa.cli import app

    md, js = tmp_path / "cmp.md", tmp_path / "cmp.json"
    res = CliRunner().invoke(app, ["compare", str(reports / "thinkjepa"), str(reports / "jepa"),
                                   "--out", str(md), "--json", str(js)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "| model | thinkjepa | test | 6 | 0.1300 ± 0.0361 | 0.2300 ± 0.0300 | 0.500 ± 0.100 | 0.2600 | 42,43,44 |" \
        in text
    assert "| model | jepa | test | 6 | 0.1500 | 0.2500 | 0.450 | 0.3000 | 42 |" in text
    assert "| model | thinkjepa | 0.0400 ± 0.0100 |" in text  # the EgoDex table aggregates too
    doc = json.loads(js.read_text())
    row = next(r for r in doc["rows"] if r["name"] == "thinkjepa")
    assert {"kind", "name", "split", "ade", "fde", "acc", "ade_std", "fde_std", "acc_std", "seeds"} <= set(row)
    assert row["seeds"] == [42, 43, 44] and row["fde_std"] == pytest.approx(0.03)
    assert next(r for r in doc["rows"] if r["name"] == "jepa")["acc_std"] is None


def test_unknown_or_repeated_seeds_are_separate_models(reports, tmp_path):
    # the same seed twice, and an evaluation that records no seed: numeric suffixes, as before seeds
    anon = _write(tmp_path / "anon" / "thinkjepa", _metrics(0.3, 0.3, 0.3))
    entries = load_entries([reports / "thinkjepa" / "seed42", reports / "thinkjepa" / "seed42", anon])
    assert [e.name for e in entries] == ["thinkjepa", "thinkjepa (2)", "thinkjepa (3)"]
    assert [r["n_seeds"] for r in comparison_rows(entries) if r["kind"] == "model"] == [1, 1, 1]
    # one seed scored on two splits: two rows, each saying which data
    val = _write(tmp_path / "val" / "thinkjepa" / "seed42", _metrics(0.5, 0.5, 0.5, split="val", run="seed42", seed=42,
                                                        run_dir=str(tmp_path / "runs" / "thinkjepa" / "seed42")))
    names = [r["name"] for r in comparison_rows(load_entries([reports / "thinkjepa" / "seed42", val]))
             if r["kind"] == "model"]
    assert names == ["thinkjepa [test, abababab, n=6]", "thinkjepa [val, abababab, n=6]"]


def test_bad_seed_sets_are_refused_naming_the_file(reports):
    (reports / "thinkjepa" / "seed45").mkdir()
    with pytest.raises(InputError, match="seed45"):
        load_entries([reports / "thinkjepa"])
    (reports / "thinkjepa" / "seed45").rmdir()
    m = json.loads((reports / "thinkjepa" / "seed43" / "metrics.json").read_text())
    m["threshold"] = 0.1
    (reports / "thinkjepa" / "seed43" / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="different Acc thresholds"):
        comparison_rows(load_entries([reports / "thinkjepa"]))


def test_probe_section_and_flat_summary(reports, tmp_path):
    from tjepa.cli import app

    probe = tmp_path / "probe.json"  # what `tjepa probe --out` writes
    probe.write_text(json.dumps({"chance": 1 / 3, "results": [
        {"feature": "vlm/prompt_mean (all levels)", "store": str(tmp_path / "stores" / "dense.zarr"),
         "sampling": "dense window of 8 frames", "dims": 64, "heldout_acc": 0.9, "train_acc": 1.0,
         "n_train": 27, "n_test": 3},
        {"feature": "vjepa/past (mean over patches, all tubelets)", "store": "stores/dense.zarr",
         "sampling": "dense window of 8 frames", "dims": 32, "heldout_acc": 0.25, "train_acc": 0.5,
         "n_train": 27, "n_test": 3}]}))
    md, js, summ = tmp_path / "cmp.md", tmp_path / "cmp.json", tmp_path / "out" / "summary.json"
    res = CliRunner().invoke(app, ["compare", str(reports / "thinkjepa"), str(reports / "jepa"), "--probe", str(probe),
                                   "--out", str(md), "--json", str(js), "--summary", str(summ)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    section = text[text.index("## Does the cached VLM state carry the cue?"):]
    assert "| vlm/prompt_mean (all levels) | dense window of 8 frames | 64 | 0.90 | 0.33 |" in section
    assert "| vjepa/past (mean over patches, all tubelets) | dense window of 8 frames | 32 | 0.25 | 0.33 |" in section
    assert "Does the cached VLM state" in res.output
    doc = json.loads(js.read_text())
    assert [r["heldout_acc"] for r in doc["probe"]["results"]] == [0.9, 0.25]
    assert doc["probe"]["results"][0]["store"] == "dense.zarr"  # an absolute path outside the cwd: its name
    s = json.loads(summ.read_text())
    assert s == {"thinkjepa": {"ade": 0.13, "ade_std": 0.0361, "fde": 0.23, "acc": 0.5, "n_seeds": 3},
                 "jepa": {"ade": 0.15, "ade_std": None, "fde": 0.25, "acc": 0.45, "n_seeds": 1},
                 "persistence": {"ade": 0.2, "fde": 0.3, "acc": 0.1}}
    # a file that is not a probe result is refused, naming it
    (tmp_path / "bad.json").write_text("{}")
    res = CliRunner().invoke(app, ["compare", str(reports / "jepa"), "--probe", str(tmp_path / "bad.json")])
    assert isinstance(res.exception, InputError) and "bad.json" in str(res.exception)


def test_seed_summary_is_one_flat_row_of_seed_means(reports, tmp_path):
    from tjepa.cli import app

    out = tmp_path / "metrics" / "thinkjepa.json"
    res = CliRunner().invoke(app, ["compare", str(reports / "thinkjepa"), "--seed-summary", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    ades = [v[0] for v in THINK.values()]
    assert doc["ade"] == round(statistics.fmean(ades), 4) and doc["ade_std"] == round(statistics.stdev(ades), 4)
    assert doc["fde"] == round(statistics.fmean(v[1] for v in THINK.values()), 4)
    assert doc["ade@1s"] == round(statistics.fmean(v[3] for v in THINK.values()), 4)
    assert doc["ade@2s"] is None and doc["ade_persist"] == 0.2 and (doc["n"], doc["n_seeds"]) == (6, 3)
    assert all(not isinstance(v, (dict, list)) for v in doc.values())  # one flat row
    # seeds of two models are not one row: refused, naming them
    res = CliRunner().invoke(app, ["compare", str(reports / "thinkjepa"), str(reports / "jepa"),
                                   "--seed-summary", str(out)])
    assert isinstance(res.exception, InputError) and "one model" in str(res.exception) and "jepa" in str(res.exception)
