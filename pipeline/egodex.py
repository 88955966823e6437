"""EgoDex labels: read the 52 hand joints, camera poses and intrinsics of one episode's HDF5.

File layout (EgoDex): `/transforms/<joint>` [T,4,4] world-frame pose per tracked joint (files hold
more joints than the 52 hand joints used here; those are ignored), `/transforms/camera` [T,4,4]
camera-to-world, `/camera/intrinsic` [3,3], optional `/confidences/<joint>` [T], and file attributes
`llm_description` (optionally `llm_description2`, `llm_type`).

Joints are read BY NAME in `JOINT_NAMES` order, never by file order. A joint position is the
translation `transform[..., :3, 3]` in metres, world frame. Non-finite positions are set to 0, marked
invalid in `valid` and counted in `n_nonfinite` (one count per (frame, joint)); a warning names the
file. Non-finite camera poses or intrinsics raise (there is no mask for them, and the trajectory head
maps predictions to world with the camera pose).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjepa.cache_schema.joints import JOINT_NAMES, N_JOINTS, hand_joint_names
from tjepa.errors import InputError

__all__ = ["JOINT_NAMES", "N_JOINTS", "Labels", "hand_joint_names", "read_labels"]


@dataclass(frozen=True, eq=False)
class Labels:
    """Supervision of one episode, all frames (index with the causal split's indices)."""

    joints: np.ndarray  # f32 [T,52,3] world metres; non-finite entries set to 0 and marked invalid
    valid: np.ndarray  # bool [T,52]
    cam: np.ndarray  # f32 [T,4,4] camera-to-world
    intrinsics: np.ndarray  # f32 [3,3]
    confidences: np.ndarray | None  # f32 [T,52], None when the file has none
    description: str  # attr llm_description ("" when absent)
    n_nonfinite: int  # number of (frame, joint) positions that were non-finite
    description2: str = ""  # attr llm_description2 ("" when absent)
    llm_type: str = ""  # attr llm_type ("" when absent)

    @property
    def n_frames(self) -> int:
        return int(self.joints.shape[0])


def read_labels(path: str | Path, expected_frames: int | None = None) -> Labels:
    """Read one EgoDex HDF5. Raises InputError naming the file and the problem."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(path, "labels file not found (EgoDex expects <task>/<n>.hdf5 next to <n>.mp4)")
    if not path.is_file():
        raise InputError(path, "labels path is not a regular file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from err
    try:
        with f:
            return _read(f, path, expected_frames)
    except (OSError, KeyError) as err:  # corrupt datasets surface only when read
        raise InputError(path, f"HDF5 read failed ({err})") from err


def _read(f, path: Path, expected_frames: int | None) -> Labels:
    import h5py

    tf = f.get("transforms")
    if not isinstance(tf, h5py.Group):
        raise InputError(path, "missing group /transforms (not an EgoDex labels file?)")
    missing = [name for name in JOINT_NAMES if not isinstance(tf.get(name), h5py.Dataset)]
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise InputError(path, f"missing joint {shown} under /transforms ({len(missing)} of 52 absent)")
    if not isinstance(tf.get("camera"), h5py.Dataset):
        raise InputError(path, "missing camera poses /transforms/camera")
    if not isinstance(f.get("camera/intrinsic"), h5py.Dataset):
        raise InputError(path, "missing camera intrinsics /camera/intrinsic")

    cam = np.asarray(tf["camera"][()], dtype=np.float32)
    if cam.ndim != 3 or cam.shape[1:] != (4, 4):
        raise InputError(path, f"/transforms/camera has shape {cam.shape}, expected [T,4,4]")
    n_frames = cam.shape[0]
    if n_frames == 0:
        raise InputError(path, "labels have 0 frames")
    if expected_frames is not None and n_frames != expected_frames:
        raise InputError(
            path, f"frame-count mismatch: labels have {n_frames} frames, the video has {expected_frames}"
        )
    intrinsics = np.asarray(f["camera/intrinsic"][()], dtype=np.float32)
    if intrinsics.shape != (3, 3):
        raise InputError(path, f"/camera/intrinsic has shape {intrinsics.shape}, expected [3,3]")
    if not np.isfinite(intrinsics).all():
        raise InputError(path, "/camera/intrinsic has non-finite values")
    bad_cam = np.flatnonzero(~np.isfinite(cam).all(axis=(1, 2)))
    if bad_cam.size:
        raise InputError(
            path, f"/transforms/camera is non-finite at {bad_cam.size} frames (first: {bad_cam[:5].tolist()})"
        )

    joints = np.empty((n_frames, N_JOINTS, 3), dtype=np.float32)
    for j, name in enumerate(JOINT_NAMES):
        ds = tf[name]
        if ds.shape != (n_frames, 4, 4):
            raise InputError(path, f"/transforms/{name} has shape {ds.shape}, expected ({n_frames}, 4, 4)")
        joints[:, j] = ds[:, :3, 3]
    valid = np.isfinite(joints).all(axis=-1)
    n_nonfinite = int((~valid).sum())
    if n_nonfinite:
        joints[~valid] = 0.0
        warnings.warn(
            f"{path}: {n_nonfinite} non-finite joint positions (of {valid.size}) zeroed and masked invalid",
            stacklevel=3,
        )

    return Labels(
        joints=joints,
        valid=valid,
        cam=cam,
        intrinsics=intrinsics,
        confidences=_read_confidences(f, path, n_frames),
        description=_attr(f, "llm_description"),
        n_nonfinite=n_nonfinite,
        description2=_attr(f, "llm_description2"),
        llm_type=_attr(f, "llm_type"),
    )


def _read_confidences(f, path: Path, n_frames: int) -> np.ndarray | None:
    import h5py

    group = f.get("confidences")
    if group is None:
        return None
    if not isinstance(group, h5py.Group):
        raise InputError(path, "/confidences is not a group")
    missing = [name for name in JOINT_NAMES if not isinstance(group.get(name), h5py.Dataset)]
    if missing:
        # Optional data: the file stays usable, but say so instead of inventing values.
        warnings.warn(
            f"{path}: /confidences lacks {len(missing)} of the 52 joints (e.g. {missing[0]}); confidences ignored",
            stacklevel=4,
        )
        return None
    conf = np.empty((n_frames, N_JOINTS), dtype=np.float32)
    for j, name in enumerate(JOINT_NAMES):
        ds = group[name]
        if ds.shape != (n_frames,):
            raise InputError(path, f"/confidences/{name} has shape {ds.shape}, expected ({n_frames},)")
        conf[:, j] = ds[()]
    return conf


def _attr(f, name: str) -> str:
    value = f.attrs.get(name)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return str(value)
