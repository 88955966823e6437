"""Forecasts drawn on video (`tjepa predict`): hand skeletons projected through the intrinsics onto
the frames, an MP4 of the observed frames followed by the forecast, and one PNG summary frame.

Points are in a camera frame (OpenCV: x right, y down, z forward, metres) and are projected with a
pinhole `intrinsics` of the source resolution, scaled to the frame being drawn on. Without labelled
intrinsics, `default_intrinsics` is a centred pinhole with a horizontal field of view of
`DEFAULT_HFOV_DEG` (the synthetic data's camera). Skeletons are drawn with PIL (fast per frame);
the summary PNG is a matplotlib figure; the MP4 is encoded with PyAV (H.264, yuv420p).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tjepa.cache_schema.joints import JOINT_NAMES
from tjepa.eval.plots import _new_figure, _save, project_points

DEFAULT_HFOV_DEG = 60.0
FORECAST_RGB = (255, 120, 0)  # orange
TRUTH_RGB = (255, 0, 255)  # magenta (the synthetic hands are cyan and yellow)
_FINGERS = ("Little", "Ring", "Middle", "Index")
_PARTS = ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
_THUMB = ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")


def _bones() -> tuple[tuple[int, int], ...]:
    """Joint index pairs of both hands' skeletons: wrist -> each finger's chain, wrist -> forearm."""
    ix = {n: i for i, n in enumerate(JOINT_NAMES)}
    out = []
    for side in ("right", "left"):
        chains = [[f"{side}{f}Finger{p}" for p in _PARTS] for f in _FINGERS] + [[f"{side}Thumb{p}" for p in _THUMB]]
        for chain in chains:
            names = [f"{side}Hand", *chain]
            out += [(ix[a], ix[b]) for a, b in zip(names[:-1], names[1:], strict=True)]
        out.append((ix[f"{side}Hand"], ix[f"{side}Forearm"]))
    return tuple(out)


BONES = _bones()


def default_intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """A centred pinhole with square pixels and the given horizontal field of view."""
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def project_camera(points_cam: Any, intrinsics: Any, src_size: tuple[int, int],
                   frame_size: tuple[int, int]) -> np.ndarray:
    """Camera-frame points [..., 3] -> pixel coordinates [..., 2] of a frame of `frame_size` (w, h),
    the intrinsics being those of `src_size` (w, h); NaN behind the camera or where not finite."""
    scale = (frame_size[0] / src_size[0], frame_size[1] / src_size[1])
    uv, _ = project_points(points_cam, np.eye(4), intrinsics, scale)
    return uv


def draw_skeleton(frame: np.ndarray, uv: np.ndarray, rgb: tuple[int, int, int], width: int = 2,
                  radius: float = 2.0) -> np.ndarray:
    """Draw both hands' bones and joints (pixel coordinates [52, 2], NaN = not drawn) onto a copy."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    ok = np.isfinite(uv).all(axis=-1)
    for a, b in BONES:
        if ok[a] and ok[b]:
            draw.line([tuple(uv[a]), tuple(uv[b])], fill=rgb, width=width)
    for j in np.flatnonzero(ok):
        x, y = uv[j]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=rgb)
    return np.asarray(img)


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, min(frame.shape[1], 7 * len(text) + 6), 12], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(img)


def overlay_frames(frames: np.ndarray, n_observed: int, forecast_cam: np.ndarray | None,
                   truth_cam: np.ndarray | None, intrinsics: Any, src_size: tuple[int, int],
                   times_s: Sequence[float], caption: bool = True) -> np.ndarray:
    """Frames [N, H, W, 3] (the first `n_observed` observed, then the forecast window) with the
    skeletons drawn: `forecast_cam` [N, J, 3] and `truth_cam` [N, J, 3] are each frame's joints in
    that frame's camera (NaN rows: nothing to draw). Truth first, so the forecast is on top."""
    h, w = frames.shape[1:3]
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        img = frame
        for pts, rgb in ((truth_cam, TRUTH_RGB), (forecast_cam, FORECAST_RGB)):
            if pts is not None:
                img = draw_skeleton(img, project_camera(pts[i], intrinsics, src_size, (w, h)), rgb)
        if caption:
            label = "observed" if i < n_observed else f"forecast +{times_s[i]:.2f} s"
            img = _caption(img, label)
        out[i] = img
    return out


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Encode uint8 RGB frames [N, H, W, 3] as H.264 (yuv420p; odd sizes are padded by one pixel)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    from fractions import Fraction

    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(max(fps, 1.0)).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for frame in frames:
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def write_summary_png(frame: np.ndarray, forecast_uv: np.ndarray, truth_uv: np.ndarray | None,
                      keypoints: Sequence[int], path: str | Path, title: str = "") -> Path:
    """One summary picture: the last forecast frame (skeletons already drawn) with the keypoints'
    forecast tracks (`forecast_uv` [T, J, 2], pixels) and, when known, the true tracks."""
    h, w = frame.shape[:2]
    fig = _new_figure(4.8, 4.8 * h / w + 0.6)  # ~530 px wide: a README-sized PNG
    ax = fig.add_subplot()
    ax.imshow(frame)
    for uv, rgb, style, label in ((truth_uv, TRUTH_RGB, "-", "truth"), (forecast_uv, FORECAST_RGB, "--", "forecast")):
        if uv is None:
            continue
        colour = tuple(c / 255 for c in rgb)
        for k, j in enumerate(keypoints):
            ax.plot(uv[:, j, 0], uv[:, j, 1], style, color=colour, lw=1.2, label=label if k == 0 else None)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path)
