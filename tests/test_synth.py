"""Synthetic EgoDex: CLI round trip, exact labels, projection onto drawn hands, determinism, fairness."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from tjepa.cli import app
from tjepa.errors import InputError
from tjepa.pipeline.egodex import JOINT_NAMES, N_JOINTS, read_labels
from tjepa.pipeline.sampling import causal_split
from tjepa.pipeline.sources import discover
from tjepa.pipeline.synth import SynthConfig, make_episode, project, write_dataset
from tjepa.pipeline.synth.render import CUE_COLOURS, HAND_COLOURS, Renderer
from tjepa.pipeline.synth.scene import EXTRA_JOINTS
from tjepa.pipeline.video import decode_frames, probe

FIXTURE_CFG = SynthConfig(episodes=6, seed=0)  # what conftest's synth_root writes


def test_cli_writes_dataset_read_back_exactly(tmp_path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        app, ["synth", "--out", str(out), "--episodes", "4", "--seed", "1", "--width", "96", "--height", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "pick_place/0.mp4" in result.output and "4 episodes, 3 tasks" in result.output
    cfg = SynthConfig(episodes=4, seed=1, width=96, height=64)
    episodes = discover(out)
    assert len(episodes) == 4 and {e.group for e in episodes} == set(cfg.tasks)
    manifest = json.loads((out / "synth.json").read_text())
    by_id = {ep["id"]: ep for ep in manifest["episodes"]}
    for i in range(4):
        scene = make_episode(cfg, i)
        task, n = cfg.tasks[i % 3], i // 3
        ep = next(e for e in episodes if e.id == f"{task}/{n}.mp4")
        info = probe(ep.video)
        assert (info.n_frames, info.width, info.height) == (scene.n_frames, 96, 64)
        assert info.fps == pytest.approx(30.0) and info.codec == "h264"
        labels = read_labels(ep.labels, expected_frames=info.n_frames)
        np.testing.assert_array_equal(labels.joints, scene.positions[:, :N_JOINTS])
        assert list(scene.joint_names[:N_JOINTS]) == list(JOINT_NAMES)
        np.testing.assert_array_equal(labels.cam, scene.cam)
        np.testing.assert_array_equal(labels.intrinsics, scene.intrinsics)
        np.testing.assert_array_equal(labels.confidences, scene.confidences[:, :N_JOINTS])
        assert labels.valid.all() and labels.n_nonfinite == 0
        assert scene.cue in labels.description and labels.llm_type == "synthetic"
        assert by_id[ep.id]["cue"] == scene.cue and by_id[ep.id]["frames"] == scene.n_frames
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_files_hold_body_joints_and_camera(synth_root):
    ep = discover(synth_root)[0]
    with h5py.File(ep.labels) as f:
        names = set(f["transforms"].keys())
        assert names == set(JOINT_NAMES) | set(EXTRA_JOINTS) | {"camera"}
        assert f["camera/intrinsic"].shape == (3, 3)
        assert f["confidences/rightHand"].shape == (f["transforms/camera"].shape[0],)
        assert "opencv" in f.attrs["synth_camera_convention"]


def test_projected_joints_land_on_drawn_hands(synth_root):
    colours = np.array([HAND_COLOURS["right"]] * 26 + [HAND_COLOURS["left"]] * 26, dtype=float)
    for ep in discover(synth_root):
        labels = read_labels(ep.labels)
        idx = np.linspace(0, labels.n_frames - 1, 6).astype(int)
        frames = decode_frames(ep.video, idx).astype(float)
        h, w = frames.shape[1:3]
        scores = {}
        for mode in ("true", "mirrored", "hands swapped"):  # the controls must fail
            hits = total = 0
            for k, t in enumerate(idx):
                uv, z = project(labels.joints[t], labels.cam[t], labels.intrinsics)
                assert (z > 0).all()
                if mode == "mirrored":
                    uv[:, 0] = (w - 1) - uv[:, 0]
                ref = colours[::-1] if mode == "hands swapped" else colours
                for j, (u, v) in enumerate(np.round(uv).astype(int)):
                    if 1 <= u < w - 1 and 1 <= v < h - 1:
                        patch = frames[k, v - 1 : v + 2, u - 1 : u + 2].reshape(-1, 3)
                        hits += np.linalg.norm(patch - ref[j], axis=1).min() < 60  # codec blur allowed
                        total += 1
            assert total > 100  # most joints are in view
            scores[mode] = hits / total
        assert scores["true"] >= 0.95, (ep.id, scores)
        assert scores["mirrored"] < 0.3 and scores["hands swapped"] < 0.3, (ep.id, scores)


def test_deterministic_from_seed(tmp_path):
    cfg = SynthConfig(episodes=2, seed=7, min_frames=40, max_frames=50, preview=False)
    a, b = write_dataset(tmp_path / "a", cfg), write_dataset(tmp_path / "b", cfg)
    other = write_dataset(
        tmp_path / "c", SynthConfig(episodes=2, seed=8, min_frames=40, max_frames=50, preview=False)
    )
    for va, vb, vc in zip(a, b, other, strict=True):
        assert va.read_bytes() == vb.read_bytes()
        assert va.read_bytes() != vc.read_bytes()
        ha, hb = _h5_contents(va.with_suffix(".hdf5")), _h5_contents(vb.with_suffix(".hdf5"))
        assert ha.keys() == hb.keys()
        for key in ha:
            np.testing.assert_array_equal(ha[key], hb[key], err_msg=key)
        hc = _h5_contents(vc.with_suffix(".hdf5"))
        assert not np.array_equal(ha["transforms/rightHand"], hc["transforms/rightHand"])
    # Episodes depend on (seed, index) only: a longer dataset starts with the same episodes.
    np.testing.assert_array_equal(
        make_episode(cfg, 1).transforms,
        make_episode(SynthConfig(episodes=9, seed=7, min_frames=40, max_frames=50), 1).transforms,
    )


def _h5_contents(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        out.update({f"@{k}": np.asarray(v) for k, v in f.attrs.items()})
    return out


@pytest.mark.parametrize("index", [0, 1, 2, 4])
def test_future_depends_on_early_cue_only(index):
    cfg = FIXTURE_CFG
    scenes = [make_episode(cfg, index, target=k) for k in range(3)]
    n = scenes[0].n_frames
    past, future = causal_split(n)
    for s in scenes[1:]:
        # Observed half, camera and cue timing identical whatever the cue: only the cue tells.
        np.testing.assert_array_equal(s.transforms[: n // 2], scenes[0].transforms[: n // 2])
        np.testing.assert_array_equal(s.cam, scenes[0].cam)
        assert s.cue_frames == scenes[0].cue_frames <= past[len(past) // 2] + 1
    ends = np.stack(
        [
            s.positions[future[-1], [JOINT_NAMES.index("rightHand"), JOINT_NAMES.index("leftHand")]]
            for s in scenes
        ]
    )
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.linalg.norm(ends[a] - ends[b], axis=-1).min() > 0.2  # tens of cm apart
    for s in scenes:
        wrist = s.positions[:, JOINT_NAMES.index("rightHand")]
        assert np.linalg.norm(wrist[future] - wrist[past[-1]], axis=-1).max() > 0.1


def test_cue_card_drawn_only_early():
    scene = make_episode(FIXTURE_CFG, 3)
    renderer = Renderer(scene, FIXTURE_CFG.width, FIXTURE_CFG.height)
    cue = np.array(CUE_COLOURS[scene.cue])

    def cue_pixels(t):
        return int((np.abs(renderer.frame(t).astype(int) - cue).sum(-1) < 10).sum())

    shown, hidden = cue_pixels(scene.cue_frames - 1), cue_pixels(scene.cue_frames)
    assert shown > hidden + 30  # the card, on top of the always-visible pad of that colour
    assert hidden > 0  # the pad itself stays
    assert scene.cue_frames <= 0.25 * scene.n_frames + 1


def test_balanced_cues_and_rigid_hands(synth_root):
    episodes = discover(synth_root)
    cues = [read_labels(e.labels).description for e in episodes]
    for colour in CUE_COLOURS:
        assert sum(colour in c for c in cues) == 2  # 6 episodes: every pad twice
    labels = read_labels(episodes[0].labels)
    chain = [
        JOINT_NAMES.index(f"rightIndexFinger{p}")
        for p in ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
    ]
    for a, b in zip(chain, chain[1:], strict=False):
        length = np.linalg.norm(labels.joints[:, a] - labels.joints[:, b], axis=-1)
        assert 0.015 < length.mean() < 0.06 and np.ptp(length) < 1e-5  # bones keep their length


def test_config_validation():
    for bad in (
        {"width": 33},
        {"height": 16},
        {"min_frames": 100, "max_frames": 90},
        {"tasks": ()},
        {"tasks": ("a/b",)},
        {"cue_fraction": 0.6},
        {"codec": "vp9"},
        {"episodes": 0},
    ):
        with pytest.raises(ValueError):
            SynthConfig(**bad)
    result = CliRunner().invoke(app, ["synth", "--out", "unused", "--width", "34", "--height", "35"])
    assert result.exit_code == 2 and "even" in result.output


def test_rewrite_replaces_previous_dataset_and_protects_other_dirs(tmp_path):
    out = tmp_path / "ds"
    small = dict(min_frames=40, max_frames=45, preview=False)
    write_dataset(out, SynthConfig(episodes=5, seed=0, **small))
    write_dataset(out, SynthConfig(episodes=2, seed=0, **small))
    assert [e.id for e in discover(out)] == ["pick_place/0.mp4", "push_forward/0.mp4"]  # no stale episodes
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="not empty"):
        write_dataset(foreign, SynthConfig(episodes=1, **small))
    assert (foreign / "keep.txt").read_text() == "user data"
