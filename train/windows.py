"""Leak-free windows for the long-horizon rollout protocol (docs/method.md section 8): a short
`obs -> fut` model (2 -> 2 tubelets = 4 -> 4 frames by default) trained on windows of each video's
sampled sequence, as a mode of the one trainer (`tjepa train --rollout`, train/loop.py).

The sequence. Stage one, with `--window-frames`, encodes every run of `window_tubelets` tubelets of
the To + Tf sampled frames in its own V-JEPA forward (the `vjepa_windows` field); concatenated they form one
sequence of (To + Tf)/t tubelets whose latents never attended across a window edge. A window starting
at tubelet s observes [s, s+obs) and predicts [s+obs, s+obs+fut); its joints and validity are those of
the matching frames, its `cam_last` the camera pose of its last observed frame.

Leak-free starts (`leak_free_starts`): a window is trained on only when
- its first target tubelet begins an encoding window, so no context latent attended to a target
  frame (the `vjepa_past` / `vjepa_future` clips are single bidirectional forwards: cutting
  windows from them leaked the targets into the context of all but one window per video), and
- its targets lie after every frame the VLM saw (the observed half): the guidance is the video's
  own, computed from the observed frames only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tjepa.cache_schema.layout import WINDOWS
from tjepa.errors import TjepaError
from tjepa.train.config import ModelConfig
from tjepa.train.data import CacheDataset

# keys of a stage-two item that belong to the video, not to a time step: shared by all its windows
ROW_KEYS = ("prompt_mean", "think_mean", "prompt_tokens", "prompt_len", "think_tokens", "think_len", "row")


@dataclass(frozen=True)
class WindowSpec:
    obs: int = 2  # observed tubelets per window
    fut: int = 2  # predicted tubelets per window

    def __post_init__(self) -> None:
        if self.obs < 1 or self.fut < 1:
            raise TjepaError(f"a window needs >= 1 observed and >= 1 future tubelet, got {self.obs}, {self.fut}")

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """`base` resized to this window (n_past = obs frames, n_future = fut frames)."""
        return base.replace(n_past=self.obs * base.tubelet, n_future=self.fut * base.tubelet)


def leak_free_starts(layout: dict[str, Any], spec: WindowSpec, store: str = "the store") -> list[int]:
    """Start tubelets of the windows whose context and guidance never saw their targets."""
    chunk = int(layout.get("window_tubelets", 0))
    if chunk < 1:
        raise TjepaError(f"{store}: the store has no independently encoded windows ({WINDOWS}), so every "
                         f"window's context would have attended to its targets; rebuild it with "
                         f"`tjepa cache ... --window-frames 4` for rollouts")
    tubelet = int(layout["tubelet"])
    past, total = int(layout["n_past"]) // tubelet, (int(layout["n_past"]) + int(layout["n_future"])) // tubelet
    starts = [s for s in range(0, total - spec.obs - spec.fut + 1)
              if (s + spec.obs) % chunk == 0 and s + spec.obs >= past]
    if not starts:
        raise TjepaError(f"{store}: no leak-free {spec.obs}->{spec.fut} window fits {past} observed + "
                         f"{total - past} future tubelets (windows of {chunk})")
    return starts


class SequenceDataset(CacheDataset):
    """Whole-video items with the independently encoded latents: `vjepa_past` / `vjepa_future` are
    the split of the `vjepa_windows` field (not the single-forward clips), plus the camera pose of every sampled
    frame, `cams_past` [To,4,4] and `cams_future` [Tf,4,4]."""

    def __init__(self, store: str | Path, rows: Sequence[int], levels: tuple[int, ...] | None = None,
                 with_tokens: bool = False, preload: bool = False):
        super().__init__(store, rows, levels, with_tokens, preload=False)
        layout = self.index.layout.to_dict()
        leak_free_starts(layout, WindowSpec(), self.path)  # refuses a store without windows
        self.past_tubelets = int(layout["n_past"]) // int(layout["tubelet"])
        for key in ("vjepa_past", "vjepa_future"):
            del self.fields[key]
        self.fields.update(vjepa_windows="vjepa_windows", cams_past="cam_past", cams_future="cam_future")
        if preload:
            self._mem = self._read_bulk()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        lat = item.pop("vjepa_windows")
        item["vjepa_past"], item["vjepa_future"] = lat[:self.past_tubelets], lat[self.past_tubelets:]
        return item


class WindowDataset(torch.utils.data.Dataset):
    """One item per (video, leak-free window): the stage-two batch dict of an `obs -> fut` model,
    plus `window_start` (the start tubelet)."""

    def __init__(self, store: str | Path, rows: Sequence[int], spec: WindowSpec,
                 levels: tuple[int, ...] | None = None, with_tokens: bool = False, preload: bool = False):
        self.videos = SequenceDataset(store, rows, levels, with_tokens, preload)
        self.spec, self.rows = spec, self.videos.rows
        self.tubelet = self.videos.index.layout.tubelet
        self.starts = leak_free_starts(self.videos.index.layout.to_dict(), spec, self.videos.path)

    def __len__(self) -> int:
        return len(self.videos) * len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        video, k = divmod(i, len(self.starts))
        seq = sequence({key: v[None] for key, v in self.videos[video].items()})
        pairs = torch.tensor([[0, self.starts[k]]])
        return {key: v[0] for key, v in window_batch(seq, pairs, self.spec, self.tubelet).items()}


def sequence(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of SequenceDataset items -> whole sequences: `latents` [B, (To+Tf)/t, P, D],
    `joints` [B, To+Tf, J, 3], `valid` [B, To+Tf, J], `cams` [B, To+Tf, 4, 4], plus the row keys."""
    seq = {k: batch[k] for k in ROW_KEYS if k in batch}
    seq["latents"] = torch.cat((batch["vjepa_past"], batch["vjepa_future"]), dim=1)
    seq["joints"] = torch.cat((batch["joints_past"], batch["joints_future"]), dim=1)
    seq["valid"] = torch.cat((batch["valid_past"], batch["valid_future"]), dim=1)
    seq["cams"] = torch.cat((batch["cams_past"], batch["cams_future"]), dim=1)
    return seq


def window_batch(seq: dict[str, torch.Tensor], pairs: torch.Tensor, spec: WindowSpec,
                 tubelet: int) -> dict[str, torch.Tensor]:
    """The stage-two batch of the windows `pairs` [M, 2] = (row in `seq`, start tubelet)."""
    b, s = pairs[:, 0], pairs[:, 1]
    n_tub = spec.obs + spec.fut
    tub = s[:, None] + torch.arange(n_tub, device=pairs.device)  # [M, obs+fut]
    frames = s[:, None] * tubelet + torch.arange(n_tub * tubelet, device=pairs.device)
    lat = seq["latents"][b[:, None], tub]
    joints, valid = seq["joints"][b[:, None], frames], seq["valid"][b[:, None], frames]
    n_obs = spec.obs * tubelet
    out = {k: seq[k][b] for k in ROW_KEYS if k in seq}
    out.update(vjepa_past=lat[:, :spec.obs], vjepa_future=lat[:, spec.obs:],
               joints_past=joints[:, :n_obs], valid_past=valid[:, :n_obs],
               joints_future=joints[:, n_obs:], valid_future=valid[:, n_obs:],
               cam_last=seq["cams"][b, frames[:, n_obs - 1]], window_start=s)
    return out
