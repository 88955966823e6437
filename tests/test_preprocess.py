"""Pure-torch preprocessing: hand-computed goldens, PIL as an independent resize reference, patch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tjepa.pipeline.encoders.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    group_timestamps,
    qwen_patchify,
    qwen_unpatchify,
    qwen_video,
    short_side_size,
    squash,
    vjepa_batch,
    vjepa_transform,
)


def _ramp_frame(h: int, w: int) -> np.ndarray:
    """Pixel (y, x, c) = 10*y + x + 50*c (fits uint8 for small sizes): every pixel identifiable."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return (10 * y + x + 50 * c).astype(np.uint8)


def test_vjepa_constant_frame_is_exactly_normalised():
    rgb = np.array([200, 30, 111], np.uint8)
    frames = np.broadcast_to(rgb, (2, 50, 70, 3)).copy()
    out = vjepa_transform(frames, crop=32, resize_short=36)
    assert out.shape == (2, 3, 32, 32)
    want = (rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(want[None, :, None, None], out.shape), atol=1e-5)


@pytest.mark.parametrize("h,w,top,left", [(4, 8, 1, 3), (4, 9, 1, 3), (7, 4, 2, 1)])
def test_vjepa_centre_crop_geometry_without_resize(h, w, top, left):
    # Short side already equals resize_short, so only the crop acts: offsets truncate (HF center_crop).
    short = min(h, w)
    crop = 2
    frame = _ramp_frame(h, w)
    out = vjepa_transform(frame[None], crop=crop, resize_short=short, mean=(0, 0, 0), std=(1, 1, 1))
    want = frame[top : top + crop, left : left + crop].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(out[0].numpy(), want, atol=1e-7)


def test_short_side_size_truncates_the_long_side():
    assert short_side_size(90, 120, 73) == (73, 97)  # 73 * 120 / 90 = 97.33
    assert short_side_size(120, 90, 73) == (97, 73)
    assert short_side_size(1080, 1920, 292) == (292, 519)  # EgoDex: 292 * 16 / 9 = 519.1


def test_vjepa_resize_matches_pil_bilinear():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = vjepa_transform(frame[None], crop=64, resize_short=73, mean=(0, 0, 0), std=(1, 1, 1))[0]
    # PIL's antialiased bilinear on the float image, then the same centre crop: (73, 97) -> top 4, left 16.
    ref = np.stack(
        [np.asarray(Image.fromarray(frame[..., c].astype(np.float32) / 255, mode="F").resize((97, 73), Image.BILINEAR)) for c in range(3)]
    )
    np.testing.assert_allclose(out.numpy(), ref[:, 4:68, 16:80], atol=1e-5)


def test_vjepa_batch_mixed_sizes_and_frame_count_check():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 40, 60, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 70, 50, 3), dtype=np.uint8)
    x = vjepa_batch([a, b], crop=32, resize_short=36)
    assert x.shape == (2, 4, 3, 32, 32)
    torch.testing.assert_close(x[1], vjepa_transform(b, 32, 36))
    with pytest.raises(ValueError, match="same frame count"):
        vjepa_batch([a, b[:2]], crop=32, resize_short=36)


def test_squash_is_identity_at_size_and_matches_pil_bicubic_otherwise():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    torch.testing.assert_close(squash(frame, 64)[0], torch.from_numpy(frame[0]).permute(2, 0, 1).float())
    big = rng.integers(0, 256, (1, 100, 150, 3), dtype=np.uint8)
    out = squash(big, 64)[0]
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    ref = np.stack(
        [np.asarray(Image.fromarray(big[0, ..., c].astype(np.float32), mode="F").resize((64, 64), Image.BICUBIC)) for c in range(3)]
    )
    np.testing.assert_allclose(out.numpy(), np.clip(np.round(ref), 0, 255), atol=1.0)  # rounding ties only


def test_qwen_normalisation_constant_frame():
    v = qwen_video(np.full((2, 32, 32, 3), 51, np.uint8), size=32)
    np.testing.assert_allclose(v.pixel_values.numpy(), (51 / 255 - 0.5) / 0.5, atol=1e-6)


def test_qwen_patchify_shapes_and_temporal_padding():
    rng = np.random.default_rng(3)
    v = qwen_video(rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8), size=64)
    assert v.grid_thw == (3, 4, 4)  # 5 frames padded to 6 by repeating the last one
    assert v.pixel_values.shape == (3 * 4 * 4, 3 * 2 * 16 * 16)
    assert v.tokens_per_group == 4 and v.n_tokens == 12
    # The padded frame repeats the last one: in the last group both temporal slices are equal.
    last = v.pixel_values[-16:].reshape(16, 3, 2, 256)
    torch.testing.assert_close(last[:, :, 0], last[:, :, 1])


def test_qwen_patch_merge_order_by_hand():
    # Encode (t, c, y, x) in the pixel values and read the layout back from hand-derived positions.
    t, c, h, w, p = 2, 3, 64, 64, 16
    tt, cc, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    x = (tt * 1_000_000 + cc * 100_000 + yy * 100 + xx).double()
    rows, grid = qwen_patchify(x, patch=p, temporal_patch=2, merge=2)
    assert grid == (1, 4, 4)

    def patch_origin(row):  # top-left pixel (temporal 0, channel 0) of a row
        v = int(rows[row, 0].item())
        return (v // 100) % 1000, v % 100

    # Merge order: rows 0-3 are the 2x2 block at the top-left, row-major inside the block; row 4 starts
    # the next block to the right (patch column 2), row 8 the block below (patch row 2).
    assert [patch_origin(r) for r in range(5)] == [(0, 0), (0, 16), (16, 0), (16, 16), (0, 32)]
    assert patch_origin(8) == (32, 0)
    # Columns: (channel, temporal, py, px).
    row0 = rows[0].reshape(c, 2, p, p)
    assert int(row0[1, 0, 0, 0]) == 100_000 and int(row0[0, 1, 0, 0]) == 1_000_000
    assert int(row0[0, 0, 3, 5]) == 305


def test_qwen_unpatchify_round_trip():
    x = torch.randn(6, 3, 96, 64, dtype=torch.float64)
    rows, grid = qwen_patchify(x, 16, 2, 2)
    assert grid == (3, 6, 4)
    torch.testing.assert_close(qwen_unpatchify(rows, grid, 16, 2, 2), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of patch"):
        qwen_patchify(torch.zeros(2, 3, 48, 64), 16, 2, 2)


def test_group_timestamps():
    assert group_timestamps(np.array([0, 3, 6, 9]), 30.0) == pytest.approx([0.05, 0.25])
    assert group_timestamps(np.array([0, 10, 20]), 10.0) == pytest.approx([0.5, 2.0])  # last frame repeated


def _torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # a broken CUDA build raises RuntimeError/OSError, not only ImportError
        return f"torchvision is unavailable here ({type(err).__name__}); the HF processors need it"
    return None


@pytest.mark.skipif(_torchvision_problem() is not None, reason=str(_torchvision_problem()))
def test_hf_processor_parity():
    """Our preprocessing against transformers' own video processors (runs where torchvision works)."""
    from transformers import VJEPA2VideoProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    rng = np.random.default_rng(4)
    clip = rng.integers(0, 256, (8, 90, 120, 3), dtype=np.uint8)
    hf = VJEPA2VideoProcessor(crop_size=64)(list(clip[None]), return_tensors="pt")["pixel_values_videos"]
    ours = vjepa_batch([clip], crop=64, resize_short=73)
    assert hf.shape == ours.shape
    # HF resizes in uint8 (rounded) before normalising; we resize in float: <= 0.5/255/std apart.
    torch.testing.assert_close(ours, hf.float(), atol=0.03, rtol=0)

    frames = rng.integers(0, 256, (8, 300, 300, 3), dtype=np.uint8)  # smart_resize -> 288 x 288
    proc = Qwen3VLVideoProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 32 * 32, "longest_edge": 10**9}, do_sample_frames=False, cap_pixels_per_frame=False,
    )
    out = proc(videos=[frames], return_tensors="pt")
    mine = qwen_video(frames, size=288)
    assert tuple(out["video_grid_thw"][0].tolist()) == mine.grid_thw
    torch.testing.assert_close(mine.pixel_values, out["pixel_values_videos"].float(), atol=2 / 127.5, rtol=0)


@pytest.mark.skipif(_torchvision_problem() is not None, reason=str(_torchvision_problem()))
def test_hf_processor_parity_from_checkpoint_configs(tiny_models):
    """HF's video processor as vLLM loads it from the configs `build-models` writes, on our squashed frames."""
    from tjepa.pipeline.encoders.vllm_generator import check_pixels, hf_video_pixels

    frames = np.random.default_rng(5).integers(0, 256, (7, 90, 120, 3), dtype=np.uint8)
    sq = squash(frames, 64).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    check_pixels([qwen_video(frames, size=64)], [sq], hf_video_pixels(tiny_models / "qwen3vl"))  # raises on any difference
