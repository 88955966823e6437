"""Pure-torch video preprocessing for V-JEPA 2 and Qwen3-VL (no torchvision, no HF video processors).

Both functions take decoded uint8 frames [T, H, W, 3] and are batched over frames.

V-JEPA 2 (docs/method.md §3, the authors' release): uint8 -> [0, 1] -> antialiased bilinear resize of the
short side to `resize_short` (= int(crop * 256 / 224)) -> centre crop `crop` x `crop` -> ImageNet
mean/std. The HF `VJEPA2VideoProcessor` resizes in uint8 (rounding the resized pixels) before it
normalises; we resize in float as the authors' release does, so the two differ by at most the
rounding (<= 0.5/255 before normalisation).

Qwen3-VL: every frame squashed (no crop, aspect ratio not kept) to `size` x `size`, bicubic with
antialiasing and rounded back to uint8 values exactly as the HF video processor's torchvision resize
does on uint8 input; then (x - 255 * mean) / (255 * std) (the processor's fused rescale+normalise);
then the processor's patchify: temporal padding by repeating the last frame, and the patch-merge
order (t, h/merge, w/merge, merge_h, merge_w) of rows, (channel, temporal, patch_h, patch_w) of
columns. The vision tower's merger pools every run of merge**2 consecutive rows, so this order is
what the model expects.

Parity with the HF processors cannot be checked here (torchvision is broken on CPU machines); the
test `test_hf_processor_parity` in tests/test_preprocess.py runs it wherever torchvision imports
(a GPU box) and is skipped elsewhere. Until it has run there, treat the Qwen patch order as checked
only against the HF patchify code by reading and by the round-trip test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QWEN_MEAN = (0.5, 0.5, 0.5)
QWEN_STD = (0.5, 0.5, 0.5)


def _as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] (numpy or torch) -> float32 [T, 3, H, W] in 0..255."""
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {tuple(x.shape)} {x.dtype}")
    return x.permute(0, 3, 1, 2).to(torch.float32)


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) with the short side at `short`, long side truncated like HF's get_resize_output_image_size."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def vjepa_transform(
    frames: np.ndarray | torch.Tensor,
    crop: int,
    resize_short: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, crop, crop] (resize short side, centre crop, normalise)."""
    if resize_short < crop:
        raise ValueError(f"resize_short={resize_short} is smaller than the crop {crop}")
    x = _as_frames(frames) / 255.0
    h, w = short_side_size(x.shape[-2], x.shape[-1], resize_short)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    top, left = int((h - crop) / 2.0), int((w - crop) / 2.0)  # HF center_crop truncates
    x = x[..., top : top + crop, left : left + crop]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def vjepa_batch(clips: list[np.ndarray], crop: int, resize_short: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """List of uint8 clips [T, H, W, 3] (sizes may differ, T may not) -> float32 [B, T, 3, crop, crop]."""
    if len({c.shape[0] for c in clips}) != 1:
        raise ValueError(f"clips of one batch need the same frame count, got {[c.shape[0] for c in clips]}")
    return torch.stack([vjepa_transform(c, crop, resize_short, mean, std) for c in clips])


def squash(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, size, size] holding integer values 0..255 (bicubic, antialiased)."""
    x = _as_frames(frames)
    if tuple(x.shape[-2:]) != (size, size):
        # torchvision resizes uint8 images in float, then rounds and clamps: do the same.
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255)
    return x


@dataclass(frozen=True)
class QwenVideo:
    """One video as Qwen3-VL consumes it."""

    pixel_values: torch.Tensor  # float32 [grid_t * grid_h * grid_w, 3 * temporal_patch * patch * patch]
    grid_thw: tuple[int, int, int]  # (grid_t, grid_h, grid_w) in patches
    merge: int  # spatial merge size

    @property
    def tokens_per_group(self) -> int:
        """LLM tokens of one temporal group: (grid_h / merge) * (grid_w / merge)."""
        return (self.grid_thw[1] // self.merge) * (self.grid_thw[2] // self.merge)

    @property
    def n_tokens(self) -> int:
        return self.grid_thw[0] * self.tokens_per_group


def qwen_patchify(x: torch.Tensor, patch: int, temporal_patch: int, merge: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Normalised float [T, C, H, W] -> (rows [gt*gh*gw, C*tp*p*p], (gt, gh, gw)), HF Qwen3-VL order."""
    t, c, h, w = x.shape
    if h % (patch * merge) or w % (patch * merge):
        raise ValueError(f"frame size {h}x{w} is not a multiple of patch*merge = {patch * merge}")
    if pad := -t % temporal_patch:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        t += pad
    gt, gh, gw = t // temporal_patch, h // patch, w // patch
    x = x.reshape(gt, temporal_patch, c, gh // merge, merge, patch, gw // merge, merge, patch)
    # rows: (t, h-block, w-block, merge_h, merge_w); columns: (channel, temporal, patch_h, patch_w)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal_patch * patch * patch), (gt, gh, gw)


def qwen_unpatchify(rows: torch.Tensor, grid_thw: tuple[int, int, int], patch: int, temporal_patch: int, merge: int) -> torch.Tensor:
    """Inverse of `qwen_patchify`: rows -> [gt * temporal_patch, C, gh * patch, gw * patch]."""
    gt, gh, gw = grid_thw
    c = rows.shape[1] // (temporal_patch * patch * patch)
    x = rows.reshape(gt, gh // merge, gw // merge, merge, merge, c, temporal_patch, patch, patch)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # -> (t, tp, c, hb, mh, p, wb, mw, p)
    return x.reshape(gt * temporal_patch, c, gh * patch, gw * patch)


def qwen_video(
    frames: np.ndarray | torch.Tensor,
    size: int,
    patch: int = 16,
    temporal_patch: int = 2,
    merge: int = 2,
    mean: tuple[float, ...] = QWEN_MEAN,
    std: tuple[float, ...] = QWEN_STD,
) -> QwenVideo:
    """uint8 [T, H, W, 3] -> `QwenVideo` (squash to size x size, normalise, patchify)."""
    x = squash(frames, size)
    m = torch.tensor([255.0 * v for v in mean]).view(1, 3, 1, 1)
    s = torch.tensor([255.0 * v for v in std]).view(1, 3, 1, 1)
    rows, grid = qwen_patchify((x - m) / s, patch, temporal_patch, merge)
    return QwenVideo(rows, grid, merge)


def group_timestamps(frame_indices: np.ndarray, fps: float, temporal_patch: int = 2) -> list[float]:
    """Seconds of each temporal group: mean of its first and last frame's time (HF Qwen3-VL processor)."""
    idx = [int(i) for i in frame_indices]
    if pad := -len(idx) % temporal_patch:
        idx += [idx[-1]] * pad
    times = [i / fps for i in idx]
    return [(times[i] + times[i + temporal_patch - 1]) / 2 for i in range(0, len(times), temporal_patch)]
