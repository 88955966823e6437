"""A corpus of bad and awkward inputs, for tests and the reliability suite.

`write_bad_inputs(out_dir)` writes two trees and returns {name: path of the offending file}:
- `out_dir/videos/...`: video problems (plain-videos layout; no labels);
- `out_dir/egodex/bad_labels/<name>.mp4 + <name>.hdf5`: a good 70-frame video with a bad HDF5
  (EgoDex layout; `missing_labels` has no HDF5 at all, its entry is the expected path).
`EXPECTED[name]` says where each must fail (`stage`: probe, sampling, decode, labels) and a phrase
the InputError message contains, or `stage="ok"` for awkward inputs that must work.
Sampling stage = the default causal split of 32 + 32 frames (needs 64 frames).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tjepa.pipeline.synth.config import SynthConfig
from tjepa.pipeline.synth.render import Renderer
from tjepa.pipeline.synth.scene import make_episode
from tjepa.pipeline.synth.writer import encode_video, write_labels


@dataclass(frozen=True)
class Expectation:
    stage: str  # "probe" | "sampling" | "decode" | "labels" | "ok"
    phrase: str  # contained in the InputError message (for "ok": what must hold)


EXPECTED: dict[str, Expectation] = {
    "truncated": Expectation("probe", "truncated or corrupt"),
    "truncated_faststart": Expectation("decode", "truncated"),
    "zero_byte": Expectation("probe", "empty file"),
    "text_named_mp4": Expectation("probe", "not a readable video"),
    "audio_only": Expectation("probe", "no video stream"),
    "one_frame": Expectation("sampling", "too short"),
    "short_40_frames": Expectation("sampling", "too short"),
    "large_1920x1080": Expectation("sampling", "too short"),  # few frames; for decode/resize checks
    "odd_175x143": Expectation("ok", "odd size decodes"),
    "variable_frame_rate": Expectation("ok", "irregular timestamps, frames indexed by order"),
    "webm_vp9": Expectation("ok", "no frame count in the header: packets counted"),
    "rotated_90": Expectation("ok", "rotation metadata reported, frames kept as stored"),
    "missing_joint": Expectation("labels", "missing joint leftThumbTip"),
    "nonfinite": Expectation("ok", "non-finite joint positions counted and masked (NONFINITE_ENTRIES)"),
    "length_mismatch": Expectation("labels", "frame-count mismatch"),
    "not_hdf5": Expectation("labels", "not a readable HDF5"),
    "missing_camera": Expectation("labels", "missing camera poses"),
    "missing_intrinsics": Expectation("labels", "missing camera intrinsics"),
    "wrong_shape": Expectation("labels", "expected ("),
    "missing_labels": Expectation("labels", "labels file not found"),
}
NONFINITE_ENTRIES = 5  # (frame, joint) positions made non-finite in the "nonfinite" file
GOOD_FRAMES = 70
ODD_SIZE = (143, 175)  # (height, width)
LARGE_SIZE = (1080, 1920)


FRAME_BITS = 8


def numbered_frames(n: int, height: int, width: int, start: int = 0):
    """Frames that carry their index: the lower half holds FRAME_BITS black/white stripes (the
    binary index, most significant bit left; robust to lossy codecs and resizing), the upper half a
    grey level 8 + 3 * (k % 80), and a red bar marks the top-left corner (orientation)."""
    edges = np.linspace(0, width, FRAME_BITS + 1).astype(int)
    for k in range(start, start + n):
        rgb = np.full((height, width, 3), 8 + 3 * (k % 80), np.uint8)
        for b in range(FRAME_BITS):
            bit = (k >> (FRAME_BITS - 1 - b)) & 1
            rgb[height // 2 :, edges[b] : edges[b + 1]] = 235 if bit else 20
        rgb[: max(2, height // 8), : width // 2] = (200, 40, 40)
        yield rgb


def read_frame_number(rgb: np.ndarray) -> int:
    """Inverse of `numbered_frames` for one decoded (possibly resized) frame."""
    h, w = rgb.shape[:2]
    edges = np.linspace(0, w, FRAME_BITS + 1)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(int)
    grey = rgb[(3 * h) // 4, centres].mean(axis=-1)
    return int(sum(int(g > 128) << (FRAME_BITS - 1 - b) for b, g in enumerate(grey)))


def write_bad_inputs(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    vids, labs = out_dir / "videos", out_dir / "egodex" / "bad_labels"
    vids.mkdir(parents=True, exist_ok=True)
    labs.mkdir(parents=True, exist_ok=True)
    paths = _write_videos(vids)
    paths.update(_write_labels(labs))
    assert set(paths) == set(EXPECTED), set(paths) ^ set(EXPECTED)
    return paths


def _write_videos(d: Path) -> dict[str, Path]:
    x264 = {"preset": "ultrafast"}
    p: dict[str, Path] = {}

    good = d / "_good.mp4"
    encode_video(good, numbered_frames(GOOD_FRAMES, 64, 64), 30, options=x264)
    data = good.read_bytes()
    good.unlink()
    p["truncated"] = d / "truncated.mp4"  # moov atom at the end: cut off with the second half
    p["truncated"].write_bytes(data[: len(data) // 2])

    fast = d / "_fast.mp4"
    encode_video(
        fast,
        numbered_frames(GOOD_FRAMES, 64, 64),
        30,
        options=x264,
        container_options={"movflags": "faststart"},
    )
    data = fast.read_bytes()
    fast.unlink()
    p["truncated_faststart"] = d / "truncated_faststart.mp4"  # header intact, frame data cut
    p["truncated_faststart"].write_bytes(data[: len(data) * 2 // 3])

    p["zero_byte"] = d / "zero_byte.mp4"
    p["zero_byte"].write_bytes(b"")
    p["text_named_mp4"] = d / "text_named.mp4"
    p["text_named_mp4"].write_text("this is a text file, not a video\n" * 20)
    p["audio_only"] = d / "audio_only.mp4"
    _write_audio(p["audio_only"])

    p["one_frame"] = d / "one_frame.mp4"
    encode_video(p["one_frame"], numbered_frames(1, 64, 64), 30, options=x264)
    p["short_40_frames"] = d / "short_40_frames.mp4"
    encode_video(p["short_40_frames"], numbered_frames(40, 64, 64), 30, options=x264)
    p["large_1920x1080"] = d / "large_1920x1080.mp4"
    encode_video(p["large_1920x1080"], numbered_frames(6, *LARGE_SIZE), 30, options=x264)
    # libx264 rejects odd sizes in 4:2:0; mpeg4 accepts them (as phone/cropped exports do).
    p["odd_175x143"] = d / "odd_175x143.mp4"
    encode_video(
        p["odd_175x143"], numbered_frames(GOOD_FRAMES, *ODD_SIZE), 30, codec="mpeg4", options={"qscale": "2"}
    )

    rng = np.random.default_rng(0)
    ticks = rng.integers(1500, 4500, GOOD_FRAMES)  # 20-60 fps in a 90 kHz time base
    pts = np.concatenate([[0], np.cumsum(ticks)[:-1]]).tolist()
    p["variable_frame_rate"] = d / "variable_frame_rate.mp4"
    encode_video(
        p["variable_frame_rate"],
        numbered_frames(GOOD_FRAMES, 64, 64),
        30,
        options=x264,
        pts=[int(v) for v in pts],
        time_base=Fraction(1, 90000),
    )
    p["webm_vp9"] = d / "webm_vp9.webm"
    encode_video(
        p["webm_vp9"],
        numbered_frames(GOOD_FRAMES, 64, 64),
        30,
        codec="libvpx-vp9",
        options={"deadline": "realtime", "cpu-used": "8"},
        container_format="webm",
    )
    p["rotated_90"] = d / "rotated_90.mp4"
    _write_rotated(p["rotated_90"])
    return p


def _write_audio(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(16):
            tone = np.sin(np.arange(1024) * 0.05 + i).astype(np.float32)[None] * 0.1
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_rotated(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(90)
        for k, rgb in enumerate(numbered_frames(GOOD_FRAMES, 64, 96)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_labels(d: Path) -> dict[str, Path]:
    import h5py

    cfg = SynthConfig(
        episodes=1, width=64, height=64, min_frames=GOOD_FRAMES, max_frames=GOOD_FRAMES, preview=False
    )
    scene = make_episode(cfg, 0)
    renderer = Renderer(scene, cfg.width, cfg.height)
    video = d / "_good.mp4"
    encode_video(
        video, (renderer.frame(t) for t in range(scene.n_frames)), cfg.fps, options={"preset": "ultrafast"}
    )
    good_hdf5 = d / "_good.hdf5"
    write_labels(good_hdf5, scene, cfg)

    names = [
        "missing_joint",
        "nonfinite",
        "length_mismatch",
        "not_hdf5",
        "missing_camera",
        "missing_intrinsics",
        "wrong_shape",
        "missing_labels",
    ]
    p: dict[str, Path] = {}
    for name in names:
        shutil.copyfile(video, d / f"{name}.mp4")
        p[name] = d / f"{name}.hdf5"
        if name not in ("not_hdf5", "missing_labels"):
            shutil.copyfile(good_hdf5, p[name])
    video.unlink()
    good_hdf5.unlink()

    with h5py.File(p["missing_joint"], "a") as f:
        del f["transforms/leftThumbTip"]
    with h5py.File(p["nonfinite"], "a") as f:
        tip = f["transforms/rightIndexFingerTip"]
        value = tip[()]
        value[[3, 10, 40], 0, 3] = np.nan
        tip[...] = value
        wrist = f["transforms/leftHand"]
        value = wrist[()]
        value[[5, 6], 2, 3] = np.inf
        wrist[...] = value
    with h5py.File(p["length_mismatch"], "a") as f:  # labels one frame short of the video
        for group in ("transforms", "confidences"):
            for key in list(f[group].keys()):
                data = f[group][key][()][:-1]
                del f[group][key]
                f[group].create_dataset(key, data=data)
    p["not_hdf5"].write_text("joint,x,y,z\nrightHand,0,0,0\n")
    with h5py.File(p["missing_camera"], "a") as f:
        del f["transforms/camera"]
    with h5py.File(p["missing_intrinsics"], "a") as f:
        del f["camera/intrinsic"]
    with h5py.File(p["wrong_shape"], "a") as f:
        data = f["transforms/rightHand"][()][:, :3, 3]  # positions only: [T,3] instead of [T,4,4]
        del f["transforms/rightHand"]
        f["transforms"].create_dataset("rightHand", data=data)
    return p
