"""The known 3-D scene behind every synthetic episode: two articulated hands, a table, a moving camera.

World frame (ARKit-like, metres): x right, y up, z towards the viewer; the table top is the plane
y = TABLE_Y, three coloured pads lie on it, a striped wall stands at z = WALL_Z.
Camera: `cam[t]` is camera-to-world in the OpenCV convention (camera x right, y down, z forward);
a world point p projects to `K @ (R^T (p - c))` with pixel centres at integer coordinates.

The task is a fair test of forecasting: a cue card in the colour of one pad stands on the table
during the first `cue_fraction` of the frames only. In the first half the hands move from rest to a
ready pose independently of the cue; in the second half both hands reach the pad of the cue's colour
(tens of cm apart), then do the task's action. So the future depends on something seen only early
in the observed half, and extrapolating the last observed frames cannot tell which pad.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tjepa.pipeline.egodex import hand_joint_names
from tjepa.pipeline.synth.config import SynthConfig

TABLE_Y = 0.78
WALL_Z = -1.25
PAD_X = (-0.28, 0.0, 0.28)
PAD_Z = -0.58
PAD_SIZE = 0.10
CUE_NAMES = ("red", "green", "blue")  # pad k has colour CUE_NAMES[k]
CUE_CARD = ((-0.08, TABLE_Y + 0.02), (0.08, TABLE_Y + 0.18), -0.86)  # (x0, y0), (x1, y1), z
EXTRA_JOINTS = ("hip", "neck1", "leftShoulder", "rightShoulder", "leftArm", "rightArm")

_FINGERS = ("Little", "Ring", "Middle", "Index")
_SPREAD = {"Little": -0.028, "Ring": -0.010, "Middle": 0.009, "Index": 0.028}  # towards the thumb
_SCALE = {"Little": 0.80, "Ring": 0.95, "Middle": 1.0, "Index": 0.95}
_PHALANX = (0.045, 0.028, 0.022)  # knuckle->intermediate base->intermediate tip->tip
_THUMB = (0.040, 0.032, 0.026)
_ACTIONS = ("lift", "push", "tap")


@dataclass(frozen=True, eq=False)
class EpisodeScene:
    index: int
    task: str
    action: str  # what the hands do after reaching the pad: "lift", "push" or "tap"
    n_frames: int
    target: int  # index into PAD_X / CUE_NAMES
    cue_frames: int  # the cue card is visible in frames [0, cue_frames)
    joint_names: tuple[str, ...]  # the 52 hand joints (JOINT_NAMES order) then EXTRA_JOINTS
    transforms: np.ndarray  # f32 [T, J, 4, 4] world poses of joint_names
    confidences: np.ndarray  # f32 [T, J]
    cam: np.ndarray  # f32 [T, 4, 4] camera-to-world (OpenCV axes)
    intrinsics: np.ndarray  # f32 [3, 3]

    @property
    def cue(self) -> str:
        return CUE_NAMES[self.target]

    @property
    def positions(self) -> np.ndarray:
        return self.transforms[..., :3, 3]


def intrinsics_for(cfg: SynthConfig) -> np.ndarray:
    f = 0.5 * cfg.width / np.tan(np.radians(cfg.hfov_deg) / 2)
    return np.array([[f, 0, (cfg.width - 1) / 2], [0, f, (cfg.height - 1) / 2], [0, 0, 1]], dtype=np.float32)


def project(
    points: np.ndarray, cam_to_world: np.ndarray, intrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points [..., 3] -> (pixel coordinates [..., 2], depth [...]) for one camera pose."""
    rot, centre = cam_to_world[:3, :3].astype(np.float64), cam_to_world[:3, 3].astype(np.float64)
    pc = (np.asarray(points, np.float64) - centre) @ rot  # = R^T (p - c), row-wise
    uvw = pc @ intrinsics.astype(np.float64).T
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / uvw[..., 2:3]
    return uv, z


def make_episode(cfg: SynthConfig, index: int, target: int | None = None) -> EpisodeScene:
    """Episode `index` of the dataset `cfg`: deterministic in (cfg.seed, index) only.

    `target` overrides the cue (0..2) while keeping every other random draw, which lets tests check
    that the observed half does not depend on the cue.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index]))
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    if target is None:
        # Balanced cues: each block of 3 consecutive episodes uses every pad once, in a random order,
        # so small datasets see all cues and the cue stays independent of the task (index % len(tasks)).
        block = np.random.default_rng(np.random.SeedSequence([cfg.seed, index // len(PAD_X), 1]))
        target = int(block.permutation(len(PAD_X))[index % len(PAD_X)])
    elif target not in range(len(PAD_X)):
        raise ValueError(f"target must be in 0..{len(PAD_X) - 1}, got {target}")
    task = cfg.tasks[index % len(cfg.tasks)]
    action = _ACTIONS[cfg.tasks.index(task) % len(_ACTIONS)]
    t = np.arange(n) / (n - 1)  # normalised time
    seconds = np.arange(n) / cfg.fps

    cam = _camera(rng, seconds)
    head = np.array([0.0, 1.45, 0.02])
    body = head + 0.3 * (cam[:, :3, 3] - head)  # the torso sways less than the head
    wrists, curls, yaws = {}, {}, {}
    t_ready = 0.40 + rng.uniform(-0.03, 0.03)
    amount = rng.uniform(0.8, 1.2)
    for side, sign in (("right", 1.0), ("left", -1.0)):
        start = np.array([0.24 * sign, TABLE_Y + 0.12, -0.22]) + rng.uniform(-0.04, 0.04, 3)
        ready = np.array([0.11 * sign, TABLE_Y + 0.16, -0.40]) + rng.uniform(-0.03, 0.03, 3)
        goal = np.array([PAD_X[target] + 0.09 * sign, TABLE_Y + 0.05, PAD_Z + 0.09])
        wiggle = (
            rng.uniform(-0.03, 0.03, 3)[None]
            * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t + rng.uniform(0, 2 * np.pi))[:, None]
            * (np.sin(np.pi * np.clip(t / 0.5, 0, 1)) ** 2)[:, None]
        )  # first half only
        p = start + (ready - start) * _ramp(t, 0.05, t_ready)[:, None] + wiggle
        p = p + (goal - ready) * _ramp(t, 0.55, 0.80)[:, None] + _action(action, t, amount)
        wrists[side] = p
        curls[side] = _curl(action, t, rng)
        # Turn the fingers towards the pad (negative yaw turns them to +x).
        yaws[side] = rng.uniform(-0.15, 0.15) - 0.3 * PAD_X[target] / 0.28 * _ramp(t, 0.55, 0.8)

    shoulders = {s: body + np.array([0.18 * g, -0.25, 0.05]) for s, g in (("right", 1), ("left", -1))}
    names, mats = [], []
    for side in ("right", "left"):
        elbow = shoulders[side] + np.array([0.0, -0.30, 0.05])
        pos = _hand_joints(side, wrists[side], curls[side], yaws[side], elbow)
        rot = _yaw_rotation(yaws[side])
        names += list(hand_joint_names(side))
        mats += [_pose(rot, pos[:, j]) for j in range(pos.shape[1])]
    extra = {
        "hip": _pose(None, body + np.array([0.0, -0.60, 0.05])),
        "neck1": _pose(None, body + np.array([0.0, -0.12, 0.04])),
        "leftShoulder": _pose(None, shoulders["left"]),
        "rightShoulder": _pose(None, shoulders["right"]),
        "leftArm": _pose(None, shoulders["left"] + np.array([0.0, -0.30, 0.05])),
        "rightArm": _pose(None, shoulders["right"] + np.array([0.0, -0.30, 0.05])),
    }
    names += list(EXTRA_JOINTS)
    mats += [extra[name] for name in EXTRA_JOINTS]
    transforms = np.stack(mats, axis=1).astype(np.float32)
    conf = np.clip(0.9 + 0.08 * rng.standard_normal((n, len(names))), 0.0, 1.0).astype(np.float32)
    return EpisodeScene(
        index=index,
        task=task,
        action=action,
        n_frames=n,
        target=target,
        cue_frames=max(1, int(round(cfg.cue_fraction * n))),
        joint_names=tuple(names),
        transforms=transforms,
        confidences=conf,
        cam=cam.astype(np.float32),
        intrinsics=intrinsics_for(cfg),
    )


def _ramp(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Minimum-jerk 0 -> 1 between t0 and t1 (smooth like a human reach)."""
    x = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return x**3 * (10 - 15 * x + 6 * x**2)


def _action(action: str, t: np.ndarray, amount: float) -> np.ndarray:
    out = np.zeros((t.size, 3))
    if action == "lift":
        out += np.array([0.0, 0.14, 0.06]) * amount * _ramp(t, 0.86, 1.0)[:, None]
    elif action == "push":
        out += np.array([0.0, 0.0, -0.16]) * amount * _ramp(t, 0.84, 1.0)[:, None]
    else:  # two taps: |sin| has two humps per period
        phase = np.clip((t - 0.82) / 0.18, 0.0, 1.0)
        out[:, 1] = -0.04 * amount * np.abs(np.sin(2 * np.pi * phase))
    return out


def _curl(action: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    early = 0.2 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi))
    final = {"lift": 0.85, "push": 0.05, "tap": 0.45}[action]
    return early + (final - early) * _ramp(t, 0.76, 0.86)


def _yaw_rotation(yaw: np.ndarray) -> np.ndarray:
    """[T,3,3] hand orientation: columns = fingers (-z at yaw 0), thumb side of a right hand, back of hand."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((yaw.size, 3, 3))
    rot[:, :, 0] = np.stack([-s, np.zeros_like(s), -c], -1)  # fingers
    rot[:, :, 1] = np.stack([-c, np.zeros_like(c), s], -1)  # towards a right thumb
    rot[:, 1, 2] = 1.0  # back of the hand, up
    return rot


def _hand_joints(
    side: str, wrist: np.ndarray, curl: np.ndarray, yaw: np.ndarray, elbow: np.ndarray
) -> np.ndarray:
    """[T, 26, 3] joint positions in `hand_joint_names(side)` order."""
    rot = _yaw_rotation(yaw)
    f, s, n = rot[:, :, 0], rot[:, :, 1] * (1.0 if side == "right" else -1.0), rot[:, :, 2]
    c = curl[:, None]
    joints = []
    for finger in _FINGERS:
        off, k = _SPREAD[finger], _SCALE[finger]
        meta = wrist + 0.025 * f + 0.5 * off * s
        knuckle = wrist + 0.085 * k * f + off * s
        chain, angle, p = [meta, knuckle], np.zeros_like(c), knuckle
        for length, bend in zip(_PHALANX, (1.2, 1.4, 0.9), strict=True):
            angle = angle + bend * c
            p = p + length * k * (np.cos(angle) * f - np.sin(angle) * n)
            chain.append(p)
        joints += chain
    base = wrist + 0.03 * f + 0.025 * s - 0.01 * n
    inward = (f - s) / np.sqrt(2.0)
    d0 = 0.55 * f + 0.8 * s - 0.2 * n
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    p, angle, thumb = base, np.zeros_like(c), [base]
    for length in _THUMB:
        angle = angle + 0.6 * c
        d = np.cos(angle) * d0 + np.sin(angle) * inward
        p = p + length * d / np.linalg.norm(d, axis=1, keepdims=True)
        thumb.append(p)
    joints += thumb
    to_elbow = elbow - wrist
    forearm = wrist + 0.24 * to_elbow / np.linalg.norm(to_elbow, axis=1, keepdims=True)
    joints += [wrist, forearm]
    return np.stack(joints, axis=1)


def _pose(rot: np.ndarray | None, pos: np.ndarray) -> np.ndarray:
    out = np.zeros((pos.shape[0], 4, 4))
    out[:, :3, :3] = np.eye(3) if rot is None else rot
    out[:, :3, 3] = pos
    out[:, 3, 3] = 1.0
    return out


def _camera(rng: np.random.Generator, seconds: np.ndarray) -> np.ndarray:
    """[T,4,4] camera-to-world of a head looking at the table, swaying smoothly (OpenCV axes)."""

    def sway(amp_lo: float, amp_hi: float) -> np.ndarray:
        amp = rng.uniform(amp_lo, amp_hi, 3)
        freq = rng.uniform(0.2, 0.6, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        return amp * np.sin(2 * np.pi * freq * seconds[:, None] + phase)

    centre = np.array([0.0, 1.45, 0.02]) + sway(0.01, 0.03)  # same rest point as `head` above
    look = np.array([0.0, TABLE_Y, -0.50]) + sway(0.02, 0.06)
    roll = 0.03 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * seconds + rng.uniform(0, 2 * np.pi))
    z = look - centre
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    x, y = cr * x + sr * y, -sr * x + cr * y
    cam = np.zeros((seconds.size, 4, 4))
    cam[:, :3, 0], cam[:, :3, 1], cam[:, :3, 2], cam[:, :3, 3] = x, y, z, centre
    cam[:, 3, 3] = 1.0
    return cam
