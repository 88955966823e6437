"""Safety by behaviour (the static checks run in make test: tests/test_reliability_quick.py).

- model directories that ask for remote code (`auto_map` + a .py file) load without running it;
- a checkpoint that is a pickle bomb is refused by `tjepa train` (weights_only=True) naming the file;
- ids from a crafted dataset tree (links out of the tree, a loop, odd names) never lead a write
  outside the output store, and never contain '..' or an absolute path;
- no store the pipeline writes holds a pickle: every array's codecs and dtype are plain data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cache_helpers import cache_args
from reliability_tools import (
    CACHE_EXTRA,
    add_remote_code,
    ledger,
    run,
    status_by_video,
    store_pickle_problems,
    tjepa_cmd,
    write_malicious_checkpoint,
)

pytestmark = pytest.mark.reliability


def test_remote_code_in_a_model_directory_never_runs(tmp_path, synth_root, tiny_models, figures):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    marker = tmp_path / "REMOTE_CODE_RAN"
    for sub in sorted(p for p in models.iterdir() if p.is_dir()):
        add_remote_code(sub, marker)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy2(sorted(synth_root.rglob("*.mp4"))[0], videos / "a.mp4")
    res = run(tjepa_cmd(*cache_args(videos, tmp_path / "s.zarr", models, *CACHE_EXTRA)))
    figures.record("safety", check="auto_map remote code ignored", passed=res.returncode == 0 and not marker.exists())
    assert not marker.exists(), "transformers imported the model directory's own code"
    assert res.returncode == 0, res.stdout + res.stderr
    assert status_by_video(tmp_path / "s.zarr") == {"a.mp4": 1}


def test_a_pickle_bomb_checkpoint_is_refused_on_resume(tmp_path, figures):
    import store_factory as sf

    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4))
    run_dir = tmp_path / "run"
    args = ["train", "--cache", store, "--out", run_dir, "--preset", "tiny", "--epochs", "2", "--device", "cpu",
            "--no-progress"]
    proc = run(tjepa_cmd(*args))
    assert proc.returncode == 0, proc.stderr
    marker = tmp_path / "PICKLE_RAN"
    write_malicious_checkpoint(run_dir / "ckpt_latest.pt", marker)
    res = run(tjepa_cmd(*args))
    text = res.stderr.replace("\n", " ")
    ok = not marker.exists() and res.returncode == 2 and str(run_dir / "ckpt_latest.pt") in text
    figures.record("safety", check="pickle-bomb checkpoint refused", passed=ok)
    assert not marker.exists(), "unpickling ran code: the checkpoint was not loaded with weights_only=True"
    assert res.returncode == 2 and "Traceback" not in text, text
    assert str(run_dir / "ckpt_latest.pt") in text, text


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under root, links not followed."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_dataset_paths_never_escape_the_output(tmp_path, synth_root, tiny_models, figures):
    mp4 = sorted(synth_root.rglob("*.mp4"))[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(mp4, outside / "victim.mp4")
    tree = tmp_path / "tree"
    (tree / "task").mkdir(parents=True)
    shutil.copy2(mp4, tree / "task" / "a..b.mp4")  # '..' inside a name is not a path component
    shutil.copy2(mp4, tree / "task" / "..hidden.mp4")  # dot-names are skipped by discovery
    (tree / "task" / "up").symlink_to("../..", target_is_directory=True)  # leads above the root
    (tree / "escape").symlink_to(outside, target_is_directory=True)
    (tree / "abs.mp4").symlink_to(outside / "victim.mp4")
    before_tree, before_outside = _listing(tree), _listing(outside)

    out = tmp_path / "work" / "store.zarr"
    res = run(tjepa_cmd(*cache_args(tree, out, tiny_models, *CACHE_EXTRA)))
    assert res.returncode in (0, 3), res.stdout + res.stderr
    ids = list(status_by_video(out))
    bad_ids = [i for i in ids if i.startswith("/") or ".." in Path(i).parts or "\\" in i]
    # Nothing was written outside the store: not in the tree, not where its links lead, not beside
    # the store (only failure records and zarr files inside it).
    changed = (_listing(tree) != before_tree) or (_listing(outside) != before_outside)
    beside = sorted(p.name for p in out.parent.iterdir() if p != out)
    figures.record("safety", check="dataset paths stay inside the output", passed=not bad_ids and not changed
                   and not beside)
    assert bad_ids == [], bad_ids
    assert "task/a..b.mp4" in ids and "escape/victim.mp4" in ids and "abs.mp4" in ids
    assert not any("hidden" in i for i in ids)
    assert not changed and beside == []
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_unsafe_ids_are_refused_by_construction(tmp_path):
    from pathlib import PurePosixPath

    from tjepa.errors import InputError
    from tjepa.pipeline.sources import _safe_rel, discover

    for rel in ("../x.mp4", "a/../../x.mp4", "/etc/x.mp4", ""):
        with pytest.raises(InputError, match="unsafe"):
            _safe_rel(tmp_path, PurePosixPath(rel))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "v.mp4").write_bytes(b"x")
    for root in (tmp_path / "a" / ".." / "a", Path(os.path.relpath(tmp_path / "a"))):
        assert [e.id for e in discover(root, "videos")] == ["v.mp4"]


def test_no_pickle_in_any_store(reference, tmp_path, synth_root, tiny_models, figures):
    """The reference store, and one with per-token states (--keep-tokens) and a failed row."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy2(sorted(synth_root.rglob("*.mp4"))[0], videos / "a.mp4")
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    tokens = tmp_path / "tokens.zarr"
    res = run(tjepa_cmd(*cache_args(videos, tokens, tiny_models, *CACHE_EXTRA, "--keep-tokens")))
    assert res.returncode == 3, res.stdout + res.stderr
    for store in (reference.path, tokens):
        problems = store_pickle_problems(store)
        figures.record("safety", check=f"no pickle codec/object dtype in {store.name}", passed=not problems)
        assert problems == [], problems
        import zarr

        g = zarr.open_group(str(store), mode="r")
        kinds = {name: arr.dtype.kind for name, arr in g.members(max_depth=None) if isinstance(arr, zarr.Array)}
        assert "O" not in kinds.values(), kinds
        assert "vlm/think_tokens" in kinds or store == reference.path
    ledger_lines = ledger(tokens)
    assert [e["video"] for e in ledger_lines] == ["broken.mp4"]
