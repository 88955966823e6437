"""Everything stage one reads from disk for one episode, before any model runs.

One call decodes exactly the sampled frames (past and future in a single sequential pass), samples
the labels at the same indices and makes the thumbnail. Any problem surfaces as an `InputError`
naming the file, so the caller can record the failure and move on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjepa.config_io import ConfigMixin
from tjepa.errors import ConfigError
from tjepa.pipeline.sampling import sample_frames
from tjepa.pipeline.sources import Episode
from tjepa.pipeline.video import (
    DECODERS,
    VideoInfo,
    decode_frames,
    decode_frames_nvdec,
    probe,
    validate_for_sampling,
)


@dataclass(frozen=True)
class SamplingConfig(ConfigMixin):
    """How frames are chosen and decoded; part of the store's fingerprint."""

    n_past: int = 32  # uniform observed frames (the VLM's; V-JEPA's too unless dense_window > 0)
    n_future: int = 32
    # > 0: the V-JEPA observed clip (and the past supervision) is the `dense_window` consecutive
    # frames ending at the split, while the VLM keeps the n_past uniform frames (sampling.py).
    dense_window: int = 0
    # Frames are decoded straight to this short side (never upscaled): both encoders downsample
    # further anyway, and decoding 1080p frames at full size costs far more than the models' input.
    decode_short_side: int = 292
    thumb_size: tuple[int, int] = (96, 128)
    # > 0: also encode every run of this many sampled frames in its own V-JEPA forward (vjepa/windows),
    # so a rollout window's context latents never attended to the frames it must predict.
    window_frames: int = 0
    decoder: str = "pyav"  # or "nvdec" (GPU hardware decode, torchcodec): other pixels, so fingerprinted

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder={self.decoder!r}: one of {', '.join(DECODERS)}")
        if self.dense_window < 0:
            raise ConfigError(f"dense_window={self.dense_window} must be >= 0 (0: uniform sampling)")
        if self.dense_window and self.window_frames:
            raise ConfigError("dense_window and window_frames cannot be combined: rollout windows cut the uniform "
                              "observed clip, which a dense window replaces")
        if self.window_frames and (self.window_frames < 1 or self.n_past % self.window_frames
                                   or self.n_future % self.window_frames):
            raise ConfigError(f"window_frames={self.window_frames} must divide both --past ({self.n_past}) and "
                             f"--future ({self.n_future}): a window may not straddle the split")

    def to_dict(self) -> dict:
        d = super().to_dict()
        # absent when off, so stores made before these options keep their fingerprint
        for name in ("window_frames", "dense_window"):
            if not getattr(self, name):
                del d[name]
        return d

    @property
    def vjepa_past_frames(self) -> int:
        """Frames of the V-JEPA observed clip (the store's To)."""
        return self.dense_window or self.n_past


@dataclass
class LoadedEpisode:
    """Decoded frames, indices and (EgoDex only) targets of one episode."""

    episode: Episode
    info: VideoInfo
    past_idx: np.ndarray
    future_idx: np.ndarray
    vlm_idx: np.ndarray  # == past_idx unless the sampling is dense
    past_frames: np.ndarray  # uint8 [To, h, w, 3]
    future_frames: np.ndarray  # uint8 [Tf, h, w, 3]
    vlm_frames: np.ndarray  # uint8 [n_past, h, w, 3]
    thumb: np.ndarray  # uint8 [th, tw, 3]: the last observed frame
    targets: dict[str, np.ndarray] | None


def decode_size(info: VideoInfo, short_side: int) -> tuple[int, int] | None:
    """(width, height) to decode at, or None to keep the native size. Even sizes for swscale."""
    short = min(info.width, info.height)
    if short <= short_side:
        return None
    scale = short_side / short
    w = max(2, int(round(info.width * scale / 2)) * 2)
    h = max(2, int(round(info.height * scale / 2)) * 2)
    return (w, h)


def make_thumb(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one uint8 HxWx3 frame to (th, tw) with antialiasing (pure torch, no torchvision)."""
    import torch
    import torch.nn.functional as F

    th, tw = size
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def load_targets(episode: Episode, n_frames: int, past_idx: np.ndarray, future_idx: np.ndarray) -> dict:
    """Joints, validity and camera poses at exactly the sampled indices (world metres)."""
    from tjepa.pipeline.egodex import read_labels

    labels = read_labels(episode.labels, expected_frames=n_frames)
    return {
        "joints_past": labels.joints[past_idx].astype(np.float32),
        "joints_future": labels.joints[future_idx].astype(np.float32),
        "valid_past": labels.valid[past_idx],
        "valid_future": labels.valid[future_idx],
        "cam_past": labels.cam[past_idx].astype(np.float32),
        "cam_future": labels.cam[future_idx].astype(np.float32),
        "intrinsics": labels.intrinsics.astype(np.float32),
    }


def load_episode(episode: Episode, cfg: SamplingConfig, thread_type: str = "FRAME") -> LoadedEpisode:
    """Probe, sample, decode and read labels for one episode; InputError on any bad input.

    `thread_type` is the decoder's threading (PyAV's names); the frames are the same either way."""
    info = probe(episode.video)
    validate_for_sampling(info, cfg.n_past, cfg.n_future, episode.video, cfg.dense_window)
    past_idx, future_idx, vlm_idx = sample_frames(info.n_frames, cfg.n_past, cfg.n_future, cfg.dense_window)
    # Labels first: a missing HDF5 should fail before paying for the decode.
    targets = None
    if episode.labels is not None:
        targets = load_targets(episode, info.n_frames, past_idx, future_idx)
    dense = cfg.dense_window > 0
    wanted = np.concatenate([past_idx, future_idx] + ([vlm_idx] if dense else []))
    size = decode_size(info, cfg.decode_short_side)
    if cfg.decoder == "nvdec":
        frames = decode_frames_nvdec(episode.video, wanted, size=size)
    else:
        frames = decode_frames(episode.video, wanted, size=size, thread_type=thread_type)
    n_p, n_f = len(past_idx), len(future_idx)
    past, future = frames[:n_p], frames[n_p : n_p + n_f]
    return LoadedEpisode(
        episode=episode,
        info=info,
        past_idx=past_idx.astype(np.int32),
        future_idx=future_idx.astype(np.int32),
        vlm_idx=vlm_idx.astype(np.int32),
        past_frames=past,
        future_frames=future,
        vlm_frames=frames[n_p + n_f :] if dense else past,
        thumb=make_thumb(past[-1], cfg.thumb_size),
        targets=targets,
    )


def source_signature(episode: Episode) -> tuple[int, float]:
    """(size, mtime) of an episode's sources (video plus labels when present).

    A changed signature marks the row stale; the labels count too, since targets come from them.
    A missing labels file contributes nothing here and fails later, per video, with its own error.
    """
    paths = [episode.video] + ([episode.labels] if episode.labels is not None else [])
    size, mtime = 0, 0.0
    for p in paths:
        try:
            st = Path(p).stat()
        except OSError:
            continue
        size += int(st.st_size)
        mtime = max(mtime, float(st.st_mtime))
    return size, mtime
