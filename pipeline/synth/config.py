"""Configuration of the synthetic EgoDex-format dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class SynthConfig:
    episodes: int = 8
    seed: int = 0
    width: int = 128
    height: int = 128
    fps: int = 30
    min_frames: int = 90
    max_frames: int = 160
    # One folder per task; episode i goes to tasks[i % len(tasks)] as <task>/<i // len(tasks)>.mp4.
    tasks: tuple[str, ...] = ("pick_place", "push_forward", "tap_twice")
    hfov_deg: float = 60.0  # horizontal field of view of the pinhole camera
    cue_fraction: float = 0.25  # the cue card is visible in the first cue_fraction of the frames
    codec: str = "libx264"  # libx264 (h264) or mpeg4, always yuv420p
    crf: int = 14  # libx264 quality (lower = better); high quality keeps hand colours testable
    preview: bool = True  # also write <out>/preview.png (a contact sheet with projected joints)

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 32 or value % 2:
                raise ValueError(f"{name} must be even and >= 32 (yuv420p video), got {value}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 8 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be non-empty and unique, got {self.tasks}")
        bad = [t for t in self.tasks if not _TASK_NAME.match(t)]
        if bad:
            raise ValueError(f"task names become folder names; use letters, digits, '_' or '-': {bad}")
        if not 0.0 < self.cue_fraction < 0.5:
            raise ValueError(
                f"cue_fraction must be in (0, 0.5) so the cue is seen early, got {self.cue_fraction}"
            )
        if not 20.0 <= self.hfov_deg <= 120.0:
            raise ValueError(f"hfov_deg must be in [20, 120], got {self.hfov_deg}")
        if self.codec not in ("libx264", "h264", "mpeg4"):
            raise ValueError(f"codec must be libx264, h264 or mpeg4, got {self.codec!r}")
