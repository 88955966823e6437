"""Write synthetic episodes as a real EgoDex-layout tree: `<task>/<n>.mp4` + `<task>/<n>.hdf5`.

The HDF5 has every field the reader uses (`/transforms/<joint>` for the 52 hand joints plus a few
body joints, `/transforms/camera` camera-to-world in OpenCV axes, `/camera/intrinsic`,
`/confidences/<joint>`, attrs `llm_description`, `llm_description2`, `llm_type`) plus the scene's
ground truth as `synth_*` attrs (task, cue colour, target pad, seed). Also written: `synth.json`
(config + episode table) and, unless disabled, `preview.png`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import numpy as np

from tjepa.pipeline.synth.config import SynthConfig
from tjepa.pipeline.synth.render import Renderer
from tjepa.pipeline.synth.scene import CUE_NAMES, EpisodeScene, make_episode

_DESCRIPTIONS = {
    "lift": "Both hands reach for the {c} pad, grasp the object on it and lift it.",
    "push": "Both hands reach for the {c} pad and push it away across the table.",
    "tap": "Both hands reach for the {c} pad and tap it twice.",
}


def encode_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
) -> int:
    """Encode RGB uint8 frames to `path` with PyAV; returns the number of frames written.

    `pts` / `time_base` override the constant-rate timestamps (for variable-frame-rate files).
    """
    import av

    n = 0
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = None
        for i, rgb in enumerate(frames):
            if stream is None:
                stream = container.add_stream(codec, rate=fps, options=options or {})
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = pix_fmt
                if time_base is not None:
                    stream.codec_context.time_base = time_base
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            if time_base is not None:
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return n


def codec_options(cfg: SynthConfig) -> dict[str, str]:
    if cfg.codec in ("libx264", "h264"):
        # x264 is deterministic unless asked otherwise, so the same seed gives the same bytes.
        return {"preset": "superfast", "crf": str(cfg.crf), "g": str(2 * cfg.fps)}
    return {"qscale": "2", "g": str(2 * cfg.fps)}


def episode_paths(out: Path, cfg: SynthConfig, index: int) -> tuple[Path, Path]:
    task = cfg.tasks[index % len(cfg.tasks)]
    stem = out / task / str(index // len(cfg.tasks))
    return stem.with_suffix(".mp4"), stem.with_suffix(".hdf5")


def write_labels(path: Path, scene: EpisodeScene, cfg: SynthConfig) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        tf = f.create_group("transforms")
        conf = f.create_group("confidences")
        for j, name in enumerate(scene.joint_names):
            tf.create_dataset(name, data=scene.transforms[:, j], track_times=False)
            conf.create_dataset(name, data=scene.confidences[:, j], track_times=False)
        tf.create_dataset("camera", data=scene.cam, track_times=False)
        f.create_group("camera").create_dataset("intrinsic", data=scene.intrinsics, track_times=False)
        f.attrs["llm_description"] = _DESCRIPTIONS[scene.action].format(c=scene.cue)
        f.attrs["llm_description2"] = f"A {scene.cue} card shown at the start says which pad to use."
        f.attrs["llm_type"] = "synthetic"
        f.attrs["synth_task"] = scene.task
        f.attrs["synth_cue"] = scene.cue
        f.attrs["synth_target"] = scene.target
        f.attrs["synth_cue_frames"] = scene.cue_frames
        f.attrs["synth_seed"] = cfg.seed
        f.attrs["synth_camera_convention"] = "opencv: x right, y down, z forward; camera-to-world"


def write_dataset(
    out: str | Path, cfg: SynthConfig = SynthConfig(), progress: Callable[[int, int, str], None] | None = None
) -> list[Path]:
    """Write cfg.episodes episodes under `out`; returns the video paths in episode order.

    `out` must be empty or an earlier synthetic dataset; the earlier one's files are removed first,
    so a smaller rewrite leaves no stale episodes for `discover` to pick up.
    """
    out = Path(out)
    _clear_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    videos, table = [], []
    for i in range(cfg.episodes):
        scene = make_episode(cfg, i)
        video, labels = episode_paths(out, cfg, i)
        video.parent.mkdir(parents=True, exist_ok=True)
        renderer = Renderer(scene, cfg.width, cfg.height)
        frames = (renderer.frame(t) for t in range(scene.n_frames))
        encode_video(video, frames, cfg.fps, codec=cfg.codec, options=codec_options(cfg))
        write_labels(labels, scene, cfg)
        videos.append(video)
        rel = video.relative_to(out).as_posix()
        table.append(
            {
                "id": rel,
                "task": scene.task,
                "frames": scene.n_frames,
                "cue": scene.cue,
                "target": scene.target,
                "cue_frames": scene.cue_frames,
            }
        )
        if progress is not None:
            progress(i + 1, cfg.episodes, rel)
    manifest = {
        "generator": "tjepa.pipeline.synth",
        "config": asdict(cfg),
        "pads": list(CUE_NAMES),
        "episodes": table,
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if cfg.preview:
        from tjepa.pipeline.synth.preview import write_preview

        write_preview(out / "preview.png", out, table)
    return videos


def read_manifest(out: str | Path) -> dict:
    """The `synth.json` written by `write_dataset` (config + one entry per episode)."""
    return json.loads((Path(out) / "synth.json").read_text())


def _clear_previous(out: Path) -> None:
    from tjepa.errors import InputError

    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(out, "output path exists and is not a directory")
    manifest = out / "synth.json"
    if not manifest.is_file():
        if any(out.iterdir()):
            raise InputError(
                out, "output directory is not empty and holds no synth.json; use an empty directory"
            )
        return
    for ep in json.loads(manifest.read_text()).get("episodes", []):
        video = out / ep["id"]
        if ".." in Path(ep["id"]).parts:  # never delete outside `out`, whatever the manifest says
            raise InputError(manifest, f"episode id {ep['id']!r} points outside the dataset")
        for path in (video, video.with_suffix(".hdf5")):
            path.unlink(missing_ok=True)
        if video.parent != out and video.parent.is_dir() and not any(video.parent.iterdir()):
            video.parent.rmdir()
    for path in (manifest, out / "preview.png"):
        path.unlink(missing_ok=True)
