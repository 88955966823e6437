"""Episode discovery: layouts, auto rule, ids, groups, links and loops, refusals."""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath

import pytest

from tjepa.errors import InputError
from tjepa.pipeline.sources import Episode, discover


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # discover never reads contents


def test_egodex_layout(tmp_path):
    touch(
        tmp_path,
        "wipe/1.mp4",
        "wipe/1.hdf5",
        "wipe/0.mp4",
        "wipe/0.hdf5",
        "part2/stack/3.mp4",
        "part2/stack/3.hdf5",
        "part1/stack/0.mp4",
        "part1/stack/0.hdf5",
        "wipe/notes.txt",
        "wipe/2.json",
    )
    eps = discover(tmp_path, "egodex")
    assert [e.id for e in eps] == ["part1/stack/0.mp4", "part2/stack/3.mp4", "wipe/0.mp4", "wipe/1.mp4"]
    first = eps[0]
    assert first == Episode(
        "part1/stack/0.mp4", tmp_path / "part1/stack/0.mp4", tmp_path / "part1/stack/0.hdf5", "stack"
    )
    # One task split over two parts stays one group (so group-disjoint splits cannot leak it).
    assert [e.group for e in eps] == ["stack", "stack", "wipe", "wipe"]
    assert discover(tmp_path) == eps  # auto picks egodex when every video is labelled


def test_missing_hdf5_is_listed_with_expected_path(tmp_path):
    touch(tmp_path, "t/0.mp4", "t/0.hdf5", "t/1.mp4", "t/1.hdf5", "t/2.mp4")
    with pytest.warns(UserWarning, match="1 of 3 videos have no sibling .hdf5"):
        eps = discover(tmp_path)
    assert [e.id for e in eps] == ["t/0.mp4", "t/1.mp4", "t/2.mp4"]
    assert eps[2].labels == tmp_path / "t/2.hdf5" and not eps[2].labels.exists()


def test_videos_layout_any_tree(tmp_path):
    touch(
        tmp_path,
        "root.MP4",
        "a/clip.mov",
        "a/b/c/deep.WebM",
        "a/b/x.mkv",
        "z.avi",
        "a/readme.md",
        "a/b/frames.png",
        ".hidden/h.mp4",
        "a/._resource.mp4",
        "a/.x.mp4",
    )
    eps = discover(tmp_path, "videos")
    assert [e.id for e in eps] == ["a/b/c/deep.WebM", "a/b/x.mkv", "a/clip.mov", "root.MP4", "z.avi"]
    assert [e.group for e in eps] == ["a/b/c", "a/b", "a", ".", "."]
    assert all(e.labels is None for e in eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing labelled: auto is silent
        assert discover(tmp_path) == eps


def test_auto_rule_is_majority(tmp_path):
    touch(tmp_path, "t/0.mp4", "t/0.hdf5", "t/1.mp4", "t/2.mp4", "t/2.hdf5", "t/3.mp4")  # 2 of 4 labelled
    with pytest.warns(UserWarning, match="plain-videos layout chosen"):
        eps = discover(tmp_path)
    assert all(e.labels is None for e in eps) and eps[0].group == "t"
    touch(tmp_path, "t/3.hdf5")  # 3 of 4: egodex
    with pytest.warns(UserWarning, match="EgoDex layout chosen"):
        eps = discover(tmp_path, "auto")
    assert all(e.labels is not None for e in eps)
    assert len(discover(tmp_path, "egodex")) == 4


def test_refusals(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")
    touch(tmp_path, "file.mp4")
    with pytest.raises(InputError, match="not a directory"):
        discover(tmp_path / "file.mp4")
    empty = tmp_path / "empty"
    touch(empty, "a/b.txt", "c.hdf5")
    with pytest.raises(InputError, match="unsupported layout: no video files") as info:
        discover(empty)
    assert str(empty) in str(info.value) and "<task>/<n>.mp4" in str(info.value)
    plain = tmp_path / "plain"
    touch(plain, "x/0.mp4")
    with pytest.raises(InputError, match="none of the 1 videos has a sibling .hdf5"):
        discover(plain, "egodex")
    with pytest.raises(ValueError, match="layout"):
        discover(plain, "kinetics")


def test_symlink_loop_and_duplicate_links(tmp_path):
    touch(tmp_path, "t/0.mp4", "t/0.hdf5")
    os.symlink(tmp_path, tmp_path / "t" / "loop")  # t/loop -> root: a cycle
    os.symlink(tmp_path / "t", tmp_path / "t_again")  # a second way into t
    with pytest.warns(UserWarning, match="already visited") as record:
        eps = discover(tmp_path)
    assert [e.id for e in eps] == ["t/0.mp4"]
    assert any("loop" in str(w.message) or "t_again" in str(w.message) for w in record)


def test_symlinked_task_folder_is_followed(tmp_path):
    store = tmp_path / "store"
    touch(store, "pour/0.mp4", "pour/0.hdf5")
    data = tmp_path / "data"
    touch(data, "wipe/0.mp4", "wipe/0.hdf5")
    os.symlink(store / "pour", data / "pour")
    os.symlink(tmp_path / "gone", data / "broken")  # dangling link: warned, skipped
    with pytest.warns(UserWarning, match="broken symbolic link"):
        eps = discover(data)
    assert [(e.id, e.group) for e in eps] == [("pour/0.mp4", "pour"), ("wipe/0.mp4", "wipe")]
    assert eps[0].video == data / "pour/0.mp4" and eps[0].video.is_file()


def test_ids_are_safe_relative_posix(tmp_path):
    touch(
        tmp_path,
        "a b/ü ñ.mp4",
        "a b/ü ñ.hdf5",
        "x/y/z/0.mp4",
        "x/y/z/0.hdf5",
        "weird..name.mp4",
        "weird..name.hdf5",
    )
    eps = discover(tmp_path)
    ids = [e.id for e in eps]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for e in eps:
        rel = PurePosixPath(e.id)
        assert not rel.is_absolute() and ".." not in rel.parts and "\\" not in e.id
        assert tmp_path / e.id == e.video
