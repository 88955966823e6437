"""The bad-input corpus (pipeline.synth.bad_inputs plus what it lacks) mixed with good videos.

`tjepa cache` over each tree finishes with exit code 3; good and awkward-but-valid rows are done;
each bad row is failed with a failure-ledger reason that names its file and the problem; rows done
before the bad inputs arrived keep their content and are not recomputed; a retry changes nothing.
Stores and runs that do not fit (newer schema, other extraction config, a checkpoint of another
model) are refused with an error naming the path and the problem.
"""

from __future__ import annotations

import json
import shutil

import pytest
from cache_helpers import cache_args, copy_tree, summary_count
from reliability_tools import (
    CACHE_EXTRA,
    done_rows_snapshot,
    is_root,
    ledger,
    nobody_env,
    nobody_prefix,
    open_up,
    run,
    shared_tmp,
    snapshot_changes,
    status_by_video,
    tjepa_cmd,
    write_extra_bad_inputs,
)

from tjepa.pipeline.synth.bad_inputs import EXPECTED, write_bad_inputs

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synth_root):
    root = tmp_path_factory.mktemp("corpus")
    paths = write_bad_inputs(root / "bad")
    good_mp4 = sorted(synth_root.rglob("*.mp4"))[0]
    extras = write_extra_bad_inputs(root / "bad" / "videos", good_mp4)
    return root, paths, extras


def _cache(tree, out, models, *extra):
    return run(tjepa_cmd(*cache_args(tree, out, models, *CACHE_EXTRA, *extra)), timeout=600)


def _check_failures(out, expected_fail: dict[str, tuple[str, str]], figures, tree_name):
    """expected_fail: {row id: (file named in the reason, phrase)}."""
    status = status_by_video(out)
    reasons = {e["video"]: e["reason"] for e in ledger(out)}
    for vid, (named, phrase) in expected_fail.items():
        ok = status.get(vid) == 2 and named in reasons.get(vid, "") and phrase in reasons.get(vid, "")
        figures.record("bad_input", tree=tree_name, input=vid, failed_with_clear_reason=ok)
        assert status.get(vid) == 2, (vid, status.get(vid))
        assert named in reasons[vid] and phrase in reasons[vid], (vid, reasons[vid])


def test_plain_video_corpus_mixed_with_good_videos(corpus, synth_root, tiny_models, tmp_path, figures):
    root, paths, extras = corpus
    tree = tmp_path / "videos"
    good = tree / "good"
    good.mkdir(parents=True)
    for mp4 in sorted(synth_root.rglob("*.mp4"))[:2]:
        shutil.copy2(mp4, good / f"{mp4.parent.name}_{mp4.name}")
    out = tmp_path / "store.zarr"
    first = _cache(tree, out, tiny_models)
    assert first.returncode == 0, first.stdout + first.stderr
    snap = done_rows_snapshot(out)

    # The whole corpus arrives next to the done rows (symlinks and all).
    bad_videos = root / "bad" / "videos"
    for p in bad_videos.iterdir():
        dst = tree / p.name
        if p.is_symlink():
            target = p.readlink()
            dst.symlink_to(tree if target == bad_videos else tree / target.name,
                           target_is_directory=target == bad_videos)
        elif p.is_dir():
            dst.mkdir()
        else:
            shutil.copy2(p, dst)
    res = _cache(tree, out, tiny_models)
    assert res.returncode == 3, res.stdout + res.stderr
    assert summary_count(res.stdout, "already done") == len(snap)
    assert snapshot_changes(out, snap) == []
    status = status_by_video(out)

    expected_fail, expected_ok = {}, [f"good/{n}" for n in sorted(p.name for p in good.iterdir())]
    for name, exp in EXPECTED.items():
        path = paths[name]
        if path.suffix == ".hdf5" or "egodex" in path.parts:
            continue
        (expected_ok.append(path.name) if exp.stage == "ok" else
         expected_fail.__setitem__(path.name, (path.name, exp.phrase)))
    for path, outcome in extras.values():
        if outcome == "ok":
            expected_ok.append(path.name)
    _check_failures(out, expected_fail, figures, "videos")
    for vid in expected_ok:
        figures.record("awkward_input_cached", input=vid, done=status.get(vid) == 1)
        assert status.get(vid) == 1, (vid, status.get(vid), [e for e in ledger(out) if e["video"] == vid])
    # Links: the dangling one and the directory named .mp4 are no rows; the loop added none twice.
    assert set(status) == set(expected_ok) | set(expected_fail), sorted(set(status) ^ (set(expected_ok) | set(expected_fail)))
    assert "already visited" in res.stderr  # the loop: entered once, warned about
    assert "dangling.mp4" in res.stderr and "broken symbolic link" in res.stderr

    retry = _cache(tree, out, tiny_models, "--retry-failed")
    assert retry.returncode == 3
    assert status_by_video(out) == status and snapshot_changes(out, snap) == []
    assert run(tjepa_cmd("validate", out)).returncode == 0


def test_egodex_label_corpus_mixed_with_good_episodes(corpus, synth_root, tiny_models, tmp_path, figures):
    root, paths, _ = corpus
    tree = copy_tree(synth_root, tmp_path / "egodex", n=2)
    out = tmp_path / "store.zarr"
    first = _cache(tree, out, tiny_models, "--layout", "egodex")
    assert first.returncode == 0, first.stdout + first.stderr
    snap = done_rows_snapshot(out)
    shutil.copytree(root / "bad" / "egodex" / "bad_labels", tree / "bad_labels")
    res = _cache(tree, out, tiny_models, "--layout", "egodex")
    assert res.returncode == 3, res.stdout + res.stderr
    assert summary_count(res.stdout, "already done") == len(snap)
    assert snapshot_changes(out, snap) == []
    expected_fail = {}
    status = status_by_video(out)
    for name, exp in EXPECTED.items():
        path = paths[name]
        if path.suffix != ".hdf5":
            continue
        vid = f"bad_labels/{name}.mp4"
        if exp.stage == "ok":
            figures.record("awkward_input_cached", input=vid, done=status.get(vid) == 1)
            assert status.get(vid) == 1, [e for e in ledger(out) if e["video"] == vid]
        else:
            expected_fail[vid] = (path.name, exp.phrase)
    _check_failures(out, expected_fail, figures, "egodex")
    assert run(tjepa_cmd("validate", out)).returncode == 0


def test_unreadable_video_fails_alone(synth_root, tiny_models, figures):
    """A video the job may not read (as root: the job runs as nobody) fails with a reason naming it."""
    if is_root():
        prefix, env_home = nobody_prefix(), True
    else:
        prefix, env_home = [], False
    with shared_tmp() as d:
        tree = d / "videos"
        tree.mkdir()
        mp4s = sorted(synth_root.rglob("*.mp4"))[:2]
        shutil.copy2(mp4s[0], tree / "good.mp4")
        shutil.copy2(mp4s[1], tree / "secret.mp4")
        shutil.copytree(tiny_models, d / "models")
        out_dir = d / "out"
        out_dir.mkdir()
        open_up(d)
        out_dir.chmod(0o777)
        (tree / "secret.mp4").chmod(0o000)
        home = d / "home"
        home.mkdir()
        home.chmod(0o777)
        res = run([*prefix, *tjepa_cmd(*cache_args(tree, out_dir / "s.zarr", d / "models", *CACHE_EXTRA))],
                  env=nobody_env(home) if env_home else None)
        status = status_by_video(out_dir / "s.zarr")
        reasons = {e["video"]: e["reason"] for e in ledger(out_dir / "s.zarr")}
    figures.record("bad_input", tree="unreadable", input="secret.mp4",
                   failed_with_clear_reason=status.get("secret.mp4") == 2 and "secret.mp4" in reasons.get("secret.mp4", ""))
    assert res.returncode == 3, res.stdout + res.stderr
    assert status == {"good.mp4": 1, "secret.mp4": 2}
    assert "secret.mp4" in reasons["secret.mp4"] and "ermission" in reasons["secret.mp4"], reasons


# ---------------------------------------------------------------- stores and runs that do not fit
def test_store_from_a_newer_schema_is_refused_everywhere(tmp_path, synth_root, tiny_models, reference, figures):
    out = tmp_path / "newer.zarr"
    shutil.copytree(reference.path, out)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["version"] = 2
    (out / "zarr.json").write_text(json.dumps(meta))
    results = {
        "cache": _cache(synth_root, out, tiny_models),
        "validate": run(tjepa_cmd("validate", out)),
        "inspect": run(tjepa_cmd("inspect", out)),
        "train": run(tjepa_cmd("train", "--cache", out, "--out", tmp_path / "run", "--preset", "tiny",
                               "--epochs", "1", "--device", "cpu", "--no-progress")),
    }
    for verb, res in results.items():
        text = (res.stdout + res.stderr).replace("\n", " ")
        clear = res.returncode in (1, 2) and str(out) in text and "v2" in text and "Traceback" not in text
        figures.record("bad_input", tree="stores", input=f"newer schema ({verb})", failed_with_clear_reason=clear)
        assert clear, (verb, res.returncode, text)


def test_store_with_another_extraction_config_is_refused(tmp_path, synth_root, tiny_models, reference, figures):
    out = tmp_path / "store.zarr"
    shutil.copytree(reference.path, out)
    snap = done_rows_snapshot(out)
    for extra, key in ((("--past", "16", "--future", "16"), "n_past"), (("--layers", "0,1"), "layers"),
                       (("--rows-per-shard", "3"), "rows_per_shard")):
        res = _cache(synth_root, out, tiny_models, *extra)
        text = res.stderr.replace("\n", " ")
        clear = res.returncode == 2 and str(out) in text and key in text and "Traceback" not in text
        figures.record("bad_input", tree="stores", input=f"other config ({' '.join(extra)})",
                       failed_with_clear_reason=clear)
        assert clear, text
    assert snapshot_changes(out, snap) == []


def test_run_resumed_on_another_store_is_refused(tmp_path, figures):
    import store_factory as sf

    a = sf.write_store(tmp_path / "a.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4))
    b = sf.write_store(tmp_path / "b.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4, seed=1,
                                                            vjepa_width=16))
    run_dir = tmp_path / "run"
    common = ["--out", run_dir, "--preset", "tiny", "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert run(tjepa_cmd("train", "--cache", a, *common)).returncode == 0
    res = run(tjepa_cmd("train", "--cache", b, *common))
    text = res.stderr.replace("\n", " ")
    clear = res.returncode == 2 and str(run_dir) in text and "fingerprint" in text and "Traceback" not in text
    figures.record("bad_input", tree="runs", input="resume on another store", failed_with_clear_reason=clear)
    assert clear, text


def test_a_checkpoint_from_another_config_is_a_clear_error(tmp_path, figures):
    """Was a bug (a raw load_state_dict traceback): now exit 2 naming the checkpoint file."""
    import store_factory as sf

    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4))
    common = ["--cache", store, "--preset", "tiny", "--epochs", "1", "--device", "cpu", "--no-progress"]
    a, b = tmp_path / "thinkjepa", tmp_path / "jepa"
    assert run(tjepa_cmd("train", *common, "--out", a)).returncode == 0
    assert run(tjepa_cmd("train", *common, "--out", b, "--variant", "jepa")).returncode == 0
    shutil.copy2(a / "ckpt_latest.pt", b / "ckpt_latest.pt")
    res = run(tjepa_cmd("train", *common, "--out", b, "--variant", "jepa"))
    text = res.stderr.replace("\n", " ")
    ckpt = b / "ckpt_latest.pt"
    clear = res.returncode == 2 and str(ckpt) in text and "Traceback" not in text
    figures.record("bad_input", tree="runs", input="checkpoint of another config", failed_with_clear_reason=clear)
    assert clear, text[-2000:]
