"""The bad-input corpus: each file fails at its stage with an InputError naming file and problem,
and each awkward-but-valid file works end to end."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tjepa.errors import InputError
from tjepa.pipeline.egodex import JOINT_NAMES, read_labels
from tjepa.pipeline.sampling import causal_split
from tjepa.pipeline.sources import discover
from tjepa.pipeline.synth.bad_inputs import (
    EXPECTED,
    LARGE_SIZE,
    NONFINITE_ENTRIES,
    ODD_SIZE,
    read_frame_number,
    write_bad_inputs,
)
from tjepa.pipeline.video import decode_frames, probe, validate_for_sampling


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, write_bad_inputs(root)


def run_stages(path):
    """What the cache job does for one input, up to the first failure."""
    if path.suffix == ".hdf5":
        info = probe(path.with_suffix(".mp4"))
        return read_labels(path, expected_frames=info.n_frames)
    info = probe(path)
    validate_for_sampling(info, 32, 32, path)
    past, future = causal_split(info.n_frames)
    return decode_frames(path, np.concatenate([past, future]), size=(32, 32))


def stage_reached(path):
    """The stage an InputError came from (re-running the steps one by one)."""
    if path.suffix == ".hdf5":
        return "labels"
    try:
        info = probe(path)
    except InputError:
        return "probe"
    try:
        validate_for_sampling(info, 32, 32, path)
    except InputError:
        return "sampling"
    return "decode"


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e.stage != "ok"])
def test_bad_input_fails_at_its_stage(corpus, name):
    _, paths = corpus
    path, expected = paths[name], EXPECTED[name]
    with pytest.raises(InputError) as info:
        run_stages(path)
    message = str(info.value)
    assert message.startswith(str(path)) and info.value.path == str(path)
    assert expected.phrase in message, message
    assert stage_reached(path) == expected.stage


def test_awkward_videos_work(corpus):
    _, paths = corpus
    odd = run_stages(paths["odd_175x143"])
    assert odd.shape == (64, 32, 32, 3)
    info = probe(paths["odd_175x143"])
    assert (info.height, info.width) == ODD_SIZE
    assert decode_frames(paths["odd_175x143"], [69]).shape == (1, *ODD_SIZE, 3)

    vfr = probe(paths["variable_frame_rate"])
    assert vfr.n_frames == 70 and 20 < vfr.fps < 60
    webm = probe(paths["webm_vp9"])
    assert webm.n_frames == 70 and webm.codec == "vp9"
    for name in ("variable_frame_rate", "webm_vp9"):
        frames = run_stages(paths[name])
        assert frames.shape == (64, 32, 32, 3)
        every = decode_frames(paths[name], np.arange(70))
        assert [read_frame_number(f) for f in every] == list(range(70))  # indexed by order, not time

    with pytest.warns(UserWarning, match="rotation metadata 90 deg ignored"):
        rot = probe(paths["rotated_90"])
    assert rot.rotation == 90 and (rot.width, rot.height) == (96, 64)
    assert decode_frames(paths["rotated_90"], [0]).shape == (1, 64, 96, 3)  # stored orientation

    big = probe(paths["large_1920x1080"])
    assert (big.height, big.width) == LARGE_SIZE
    assert decode_frames(paths["large_1920x1080"], [5], size=(192, 108)).shape == (1, 108, 192, 3)


def test_nonfinite_labels_counted_and_masked(corpus):
    _, paths = corpus
    with pytest.warns(UserWarning, match=f"{NONFINITE_ENTRIES} non-finite joint positions"):
        labels = run_stages(paths["nonfinite"])
    assert labels.n_nonfinite == NONFINITE_ENTRIES
    tip, wrist = JOINT_NAMES.index("rightIndexFingerTip"), JOINT_NAMES.index("leftHand")
    expected_bad = {(3, tip), (10, tip), (40, tip), (5, wrist), (6, wrist)}
    assert {tuple(x) for x in np.argwhere(~labels.valid)} == expected_bad
    assert np.isfinite(labels.joints).all() and all(not labels.joints[t, j].any() for t, j in expected_bad)


def test_corpus_discoverable_without_crash(corpus):
    root, paths = corpus
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        videos = discover(root / "videos", "videos")
    assert {e.video for e in videos} == {p for p in paths.values() if p.parent == root / "videos"}
    labelled = discover(root / "egodex", "egodex")
    assert len(labelled) == 8 and all(e.group == "bad_labels" for e in labelled)
    missing = next(e for e in labelled if e.id.endswith("missing_labels.mp4"))
    assert missing.labels == paths["missing_labels"] and not missing.labels.exists()
