"""Disk errors: an output directory the user cannot write and a store on a read-only mount give a
clear error naming the path (exit 2, no traceback); reading a read-only store still works.

Root ignores permission bits, so as root the directory is made immutable (`chattr +i`), the CLI is
run as `nobody` (`setpriv`), or the store is bind-mounted read-only in a private mount namespace;
an ordinary user gets `chmod`.
"""

from __future__ import annotations

import shutil

import pytest
from cache_helpers import cache_args
from reliability_tools import (
    CACHE_EXTRA,
    is_root,
    nobody_env,
    nobody_prefix,
    open_up,
    readonly_mount_prefix,
    readonly_mount_works,
    run,
    shared_tmp,
    status_by_video,
    tjepa_cmd,
    unwritable_dir,
)

pytestmark = pytest.mark.reliability


def assert_clear_error(res, path, figures, case):
    text = res.stdout + res.stderr
    figures.record("disk_error", case=case, clear_error=res.returncode == 2 and str(path) in text
                   and "Traceback" not in text)
    assert res.returncode == 2, text
    assert "Traceback" not in text, text
    assert str(path) in text.replace("\n", ""), text


def test_cache_into_an_unwritable_directory(tmp_path, synth_root, tiny_models, figures):
    parent = tmp_path / "locked"
    with unwritable_dir(parent):
        out = parent / "store.zarr"
        res = run(tjepa_cmd(*cache_args(synth_root, out, tiny_models, "--limit", "1")))
    assert_clear_error(res, out, figures, "cache --out in an unwritable directory")
    assert not out.exists()


def test_resume_a_store_whose_directory_became_unwritable(tmp_path, synth_root, tiny_models, reference, figures):
    out = tmp_path / "store.zarr"
    shutil.copytree(reference.path, out)
    shutil.rmtree(out / "failures", ignore_errors=True)
    status_before = status_by_video(out)
    with unwritable_dir(out):
        res = run(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA, "--retry-failed")))
    assert_clear_error(res, out, figures, "cache resume into an unwritable store")
    assert status_by_video(out) == status_before


@pytest.mark.skipif(not is_root(), reason="running as another user needs root (setpriv)")
def test_cache_as_nobody_into_a_root_owned_directory(synth_root, tiny_models, figures):
    with shared_tmp() as d:
        shutil.copytree(synth_root, d / "videos")
        shutil.copytree(tiny_models, d / "models")
        open_up(d)
        out = d / "store.zarr"  # d is root's and 0755: nobody cannot create anything in it
        cmd = [*nobody_prefix(), *tjepa_cmd(*cache_args(d / "videos", out, d / "models", "--limit", "1"))]
        home = d / "home"
        home.mkdir()
        home.chmod(0o777)
        res = run(cmd, env=nobody_env(home))
    assert_clear_error(res, out, figures, "cache --out as nobody in root's directory")


def test_store_on_a_read_only_mount(tmp_path, synth_root, tiny_models, reference, figures):
    if not readonly_mount_works(tmp_path):
        pytest.skip("no private read-only bind mount here (needs root and unshare)")
    out = tmp_path / "store.zarr"
    shutil.copytree(reference.path, out)
    ro = readonly_mount_prefix(out)
    res = run([*ro, *tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA))])
    assert_clear_error(res, out, figures, "cache into a store on a read-only mount")
    assert "read-only" in res.stderr
    # Reading needs no write access: validate, inspect and training's reader all work.
    assert run([*ro, *tjepa_cmd("validate", out)]).returncode == 0
    info = run([*ro, *tjepa_cmd("inspect", out, "--json")])
    assert info.returncode == 0 and '"done": 6' in info.stdout


def test_store_opened_read_only_refuses_writes_naming_it(reference):
    from tjepa.cache_schema.store import FeatureStore
    from tjepa.errors import TjepaError

    store = FeatureStore.open(reference.path, mode="r")
    with pytest.raises(TjepaError, match=str(reference.path)):
        store.write_row(0, store.read_row(0))
    with pytest.raises(TjepaError, match="read-only"):
        store.mark_failed(0, str(store.array("index/video")[0]), "x")
    assert not (reference.path / "failures").exists()


def test_train_into_an_unwritable_directory_is_a_clear_error(tmp_path, figures):
    """Was a bug (a PermissionError traceback from prepare_run_dir): now an error naming the run dir."""
    import store_factory as sf

    store = sf.write_store(tmp_path / "s.zarr", sf.FactoryConfig(n=8, groups=4, n_past=4, n_future=4))
    parent = tmp_path / "locked"
    with unwritable_dir(parent):
        run_dir = parent / "run"
        res = run(tjepa_cmd("train", "--cache", store, "--out", run_dir, "--preset", "tiny", "--epochs", "1",
                            "--device", "cpu", "--no-progress"))
    assert_clear_error(res, run_dir, figures, "train --out in an unwritable directory")
