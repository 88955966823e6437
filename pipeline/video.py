"""Video access with PyAV: probe a file, decode exactly the frames the causal split asks for.

- Frame index k means the k-th frame the decoder outputs (presentation order), whatever the
  timestamps say, so variable-frame-rate files index the same way as constant-rate ones.
- Rotation metadata (a display matrix, e.g. from phones) is IGNORED on every path: frames are used in
  their raw stored orientation, identically for V-JEPA, the VLM, thumbnails and the labels' camera
  intrinsics (which describe the stored image). `probe` reports the rotation and warns when it is set.
- Every container is opened with `with av.open(...)`, so long jobs leak no file handles.
- Decoding uses frame threading by default: on an idle machine it gives the most throughput for
  single-slice H.264/HEVC; AUTO measured slowest on 2 cores (docs/dependencies.md). Pass
  `thread_type="NONE"` when running one decode worker per core.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjepa.errors import InputError, TjepaError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width: int  # stored (unrotated) size
    height: int
    codec: str
    rotation: int = 0  # display rotation in degrees from the metadata; ignored when decoding


def probe(path: str | Path, count_packets: bool = False) -> VideoInfo:
    """Read the header of a video (and decode its first frame to prove it decodes).

    The frame count comes from the container header; when the header has none (WebM/MKV) or
    `count_packets` is set, the video packets are counted (a demux pass, no decoding).
    """
    import av

    path = _check_file(path)
    try:
        with _open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise InputError(path, f"no video stream (streams: {', '.join(kinds)}; audio-only file?)")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            width, height, codec = int(ctx.width), int(ctx.height), str(ctx.name)
            header_frames = int(stream.frames or 0)
            first = next(container.decode(stream), None)
            if first is None:
                raise InputError(path, "video stream has no decodable frame")
            rotation = int(round(first.rotation or 0)) % 360
            n_frames = header_frames if header_frames > 0 and not count_packets else _count_packets(path)
            if n_frames <= 0:
                raise InputError(path, "video stream has no frames")
            fps = _frame_rate(stream, n_frames)
            if fps is None:
                raise InputError(path, "no frame rate: the header has no rate and no duration")
    except av.error.FFmpegError as err:
        raise InputError(path, f"not a readable video, truncated or corrupt ({_short(err)})") from err
    if width <= 0 or height <= 0:
        raise InputError(path, f"video stream has invalid size {width}x{height}")
    if rotation:
        warnings.warn(
            f"{path}: rotation metadata {rotation} deg ignored; frames are used as stored", stacklevel=2
        )
    return VideoInfo(n_frames=n_frames, fps=fps, width=width, height=height, codec=codec, rotation=rotation)


def validate_for_sampling(info: VideoInfo, n_past: int, n_future: int, path: str | Path,
                          dense_window: int = 0) -> None:
    """InputError when the video is too short for the causal split (the cache job's per-video check)."""
    from tjepa.pipeline.sampling import min_frames_for_split

    need = min_frames_for_split(n_past, n_future, dense_window)
    if info.n_frames < need:
        window = f" (dense V-JEPA window {dense_window})" if dense_window else ""
        raise InputError(
            path,
            f"too short: video has {info.n_frames} frames, needs at least {need} "
            f"for {n_past} past + {n_future} future frames{window}",
        )


def decode_frames(
    path: str | Path,
    indices: Sequence[int] | np.ndarray,
    size: tuple[int, int] | None = None,
    thread_type: str = "FRAME",
) -> np.ndarray:
    """Decode exactly the frames `indices` (any order, repeats allowed) in one sequential pass.

    Returns uint8 RGB [len(indices), H, W, 3]. `size` = (width, height), as in PyAV's
    `frame.reformat` and PIL, resizes during decoding (swscale bilinear); None keeps the stored size.
    Decoding stops after the last needed frame.
    Raises InputError when the stream ends or breaks before a requested index.
    """
    import av

    path = _check_file(path)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-D integer sequence, got {idx!r}")
    if idx.min() < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (width, height) with positive ints, got {size!r}")
    wanted, inverse = np.unique(idx, return_inverse=True)
    out: np.ndarray | None = None
    n_seen, cursor, last = 0, 0, int(wanted[-1])
    with _open(path) as container:
        if not container.streams.video:
            raise InputError(path, "no video stream (audio-only file?)")
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        try:
            for frame in container.decode(stream):
                if n_seen == wanted[cursor]:
                    if size is not None:
                        frame = frame.reformat(width=int(size[0]), height=int(size[1]))
                    rgb = frame.to_ndarray(format="rgb24")
                    if out is None:
                        out = np.empty((len(wanted), *rgb.shape), dtype=np.uint8)
                    out[cursor] = rgb
                    cursor += 1
                    if cursor == len(wanted):
                        break
                n_seen += 1
        except av.error.FFmpegError as err:
            raise InputError(
                path,
                f"truncated or corrupt: decoding failed after {n_seen} frames, needed index "
                f"{int(wanted[cursor])} ({_short(err)})",
            ) from err
    if cursor < len(wanted):
        raise InputError(
            path,
            f"truncated: has {n_seen} decodable frames, needed index {int(wanted[cursor])} (up to {last})",
        )
    assert out is not None
    return out[inverse.reshape(-1)]


DECODERS = ("pyav", "nvdec")
_NVDEC_HINT = "or use --decoder pyav (the default)"


def require_nvdec():
    """torchcodec's VideoDecoder when NVDEC can run here; a TjepaError saying what is missing otherwise."""
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise TjepaError(
            "--decoder nvdec needs torchcodec with CUDA support on a GPU machine (pip install torchcodec, "
            f"a build matching this torch and CUDA), {_NVDEC_HINT}"
        ) from err
    import torch

    if not torch.cuda.is_available():
        raise TjepaError(f"--decoder nvdec needs a CUDA GPU with NVDEC and none is visible, {_NVDEC_HINT}")
    return VideoDecoder


def decode_frames_nvdec(
    path: str | Path, indices: Sequence[int] | np.ndarray, size: tuple[int, int] | None = None, device: str = "cuda"
) -> np.ndarray:
    """`decode_frames` on the GPU's hardware decoder (torchcodec), same indexing and output layout.

    The pixels are not PyAV's: NVDEC's YUV->RGB conversion and a torch antialiased bilinear resize
    replace swscale's, so the decoder is part of the extraction config (scripts/gpu_check.sh
    measures the difference)."""
    import torch
    import torch.nn.functional as F

    VideoDecoder = require_nvdec()
    path = _check_file(path)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of integers >= 0, got {idx!r}")
    wanted, inverse = np.unique(idx, return_inverse=True)
    try:
        decoder = VideoDecoder(str(path), device=device, seek_mode="exact")
        n = int(decoder.metadata.num_frames or 0)
        if int(wanted[-1]) >= n:
            raise InputError(path, f"truncated: has {n} frames, needed index {int(wanted[-1])}")
        frames = decoder.get_frames_at(indices=wanted.tolist()).data  # uint8 [N, 3, H, W] on the GPU
    except (RuntimeError, ValueError) as err:  # torchcodec reports demux/decode failures this way
        raise InputError(path, f"NVDEC could not decode it ({_short(err)})") from err
    x = frames.float()
    if size is not None:
        x = F.interpolate(x, size=(int(size[1]), int(size[0])), mode="bilinear", antialias=True, align_corners=False)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return out[inverse.reshape(-1)]


def _open(path: Path):
    """av.open for reading, with open failures (not a video, no header, cut-off header) as InputError."""
    import av

    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise InputError(path, f"not a readable video, truncated or corrupt ({_short(err)})") from err


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "video file not found")
    if not path.is_file():
        raise InputError(path, "video path is not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return path


def _count_packets(path: Path) -> int:
    """Frames of a container without a frame count in its header (WebM/MKV): one packet per frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)


def _frame_rate(stream, n_frames: int) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    if stream.duration and stream.time_base:
        # No rate in the header: mean rate over the stream's duration (what average_rate would be).
        return n_frames / float(stream.duration * stream.time_base)
    return None


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) < 200 else text[:197] + "..."
