"""EgoDex HDF5 reader: joints by name, camera, intrinsics, confidences, attrs, and every refusal."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tjepa.errors import InputError
from tjepa.pipeline.egodex import JOINT_NAMES, N_JOINTS, hand_joint_names, read_labels

T = 6


def _positions(rng):
    return rng.normal(size=(T, N_JOINTS, 3)).astype(np.float32)


def write_h5(
    path,
    positions,
    *,
    extra_joints=("hip", "neck1"),
    skip=(),
    cam=None,
    intrinsics=None,
    confidences=True,
    attrs=None,
    shuffle_seed=0,
):
    """An EgoDex-like file written in a shuffled joint order, with non-hand joints mixed in."""
    n = positions.shape[0]
    names = list(JOINT_NAMES) + list(extra_joints)
    order = np.random.default_rng(shuffle_seed).permutation(len(names))
    with h5py.File(path, "w") as f:
        for k in order:
            name = names[k]
            if name in skip:
                continue
            pose = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
            pose[:, :3, 3] = positions[:, k] if k < N_JOINTS else 9.0
            f.create_dataset(f"transforms/{name}", data=pose)
            if confidences:
                f.create_dataset(f"confidences/{name}", data=np.full(n, k / 100, np.float32))
        if cam is not False:
            f.create_dataset(
                "transforms/camera", data=cam if cam is not None else np.tile(np.eye(4), (n, 1, 1))
            )
        if intrinsics is not False:
            k_mat = (
                intrinsics if intrinsics is not None else np.array([[100, 0, 64], [0, 100, 64], [0, 0, 1.0]])
            )
            f.create_dataset("camera/intrinsic", data=k_mat)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def test_joint_names_documented_order():
    assert len(JOINT_NAMES) == 52 == len(set(JOINT_NAMES))
    right = hand_joint_names("right")
    assert JOINT_NAMES[:26] == right and JOINT_NAMES[26:] == hand_joint_names("left")
    assert right[:5] == (
        "rightLittleFingerMetacarpal",
        "rightLittleFingerKnuckle",
        "rightLittleFingerIntermediateBase",
        "rightLittleFingerIntermediateTip",
        "rightLittleFingerTip",
    )
    assert right[15:20] == tuple(
        f"rightIndexFinger{p}"
        for p in ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
    )
    assert right[20:] == (
        "rightThumbKnuckle",
        "rightThumbIntermediateBase",
        "rightThumbIntermediateTip",
        "rightThumbTip",
        "rightHand",
        "rightForearm",
    )
    assert all(
        a.replace("right", "left", 1) == b for a, b in zip(JOINT_NAMES[:26], JOINT_NAMES[26:], strict=True)
    )


def test_reads_joints_by_name_not_file_order(tmp_path):
    pos = _positions(np.random.default_rng(1))
    cam = np.tile(np.eye(4), (T, 1, 1))
    cam[:, :3, 3] = np.arange(T)[:, None] * [0.1, 0.2, 0.3]
    path = write_h5(
        tmp_path / "0.hdf5",
        pos,
        cam=cam,
        attrs={
            "llm_description": "pick up the cup",
            "llm_description2": b"bytes text",
            "llm_type": "reversible",
        },
    )
    labels = read_labels(path, expected_frames=T)
    assert labels.joints.dtype == np.float32 and labels.joints.shape == (T, 52, 3)
    np.testing.assert_array_equal(labels.joints, pos)
    assert labels.valid.dtype == bool and labels.valid.all() and labels.n_nonfinite == 0
    assert labels.cam.dtype == np.float32 and labels.cam.shape == (T, 4, 4)
    np.testing.assert_allclose(labels.cam[:, :3, 3], cam[:, :3, 3], rtol=1e-6)
    assert labels.intrinsics.shape == (3, 3) and labels.intrinsics[0, 0] == 100
    np.testing.assert_allclose(labels.confidences[0], np.arange(52) / 100, rtol=1e-6)  # by name too
    assert labels.description == "pick up the cup"
    assert labels.description2 == "bytes text" and labels.llm_type == "reversible"
    assert labels.n_frames == T


def test_optional_fields_absent(tmp_path):
    path = write_h5(tmp_path / "a.hdf5", _positions(np.random.default_rng(2)), confidences=False)
    labels = read_labels(path)
    assert labels.confidences is None and labels.description == "" and labels.llm_type == ""


def test_partial_confidences_warn_and_are_dropped(tmp_path):
    path = write_h5(tmp_path / "a.hdf5", _positions(np.random.default_rng(3)))
    with h5py.File(path, "a") as f:
        del f["confidences/leftHand"]
    with pytest.warns(UserWarning, match="confidences"):
        labels = read_labels(path)
    assert labels.confidences is None


def test_nonfinite_positions_counted_masked_zeroed(tmp_path):
    pos = _positions(np.random.default_rng(4))
    pos[1, 3, 0] = np.nan
    pos[2, 30, 2] = np.inf
    pos[2, 31, :] = -np.inf
    path = write_h5(tmp_path / "nf.hdf5", pos)
    with pytest.warns(UserWarning, match="3 non-finite"):
        labels = read_labels(path)
    assert labels.n_nonfinite == 3
    bad = {(1, 3), (2, 30), (2, 31)}
    assert {tuple(x) for x in np.argwhere(~labels.valid)} == bad
    for t, j in bad:
        assert np.all(labels.joints[t, j] == 0)
    assert np.isfinite(labels.joints).all()
    keep = labels.valid
    np.testing.assert_array_equal(labels.joints[keep], pos[keep])


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda p, pos: p, "not found"),
        (lambda p, pos: (p.write_text("not hdf5"), p)[1], "not a readable HDF5"),
        (
            lambda p, pos: write_h5(p, pos, skip=("leftThumbTip", "rightHand")),
            "missing joint rightHand, leftThumbTip",
        ),
        (lambda p, pos: write_h5(p, pos, cam=False), "missing camera poses /transforms/camera"),
        (lambda p, pos: write_h5(p, pos, intrinsics=False), "missing camera intrinsics /camera/intrinsic"),
        (lambda p, pos: write_h5(p, pos, cam=np.zeros((T, 3, 4))), "expected [T,4,4]"),
        (lambda p, pos: write_h5(p, pos, intrinsics=np.eye(4)), "expected [3,3]"),
        (lambda p, pos: write_h5(p, pos, cam=np.tile(np.eye(4), (T + 1, 1, 1))), "has shape (6, 4, 4)"),
        (lambda p, pos: write_h5(p, pos, cam=np.full((T, 4, 4), np.nan)), "camera is non-finite"),
        (lambda p, pos: write_h5(p, pos, intrinsics=np.full((3, 3), np.inf)), "intrinsic has non-finite"),
    ],
    ids=[
        "missing",
        "not-hdf5",
        "missing-joint",
        "no-camera",
        "no-intrinsics",
        "camera-shape",
        "intrinsics-shape",
        "joint-vs-camera-frames",
        "nonfinite-camera",
        "nonfinite-intrinsics",
    ],
)
def test_input_errors_name_file_and_problem(tmp_path, make, phrase):
    path = tmp_path / "bad.hdf5"
    make(path, _positions(np.random.default_rng(5)))
    with pytest.raises(InputError) as info:
        read_labels(path)
    assert str(path) in str(info.value) and phrase in str(info.value)


def test_frame_count_mismatch(tmp_path):
    path = write_h5(tmp_path / "m.hdf5", _positions(np.random.default_rng(6)))
    assert read_labels(path, expected_frames=T).n_frames == T
    with pytest.raises(InputError, match=r"labels have 6 frames, the video has 7") as info:
        read_labels(path, expected_frames=T + 1)
    assert info.value.path == str(path)


def test_directory_and_wrong_type(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        read_labels(tmp_path)
    path = tmp_path / "group.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("transforms", data=np.zeros(3))  # a dataset where a group belongs
    with pytest.raises(InputError, match="missing group /transforms"):
        read_labels(path)
