"""Helpers for stage-one tests: run `tjepa cache`, compare stores, write edited videos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

FEATURE_ARRAYS = (
    "vjepa/past",
    "vjepa/future",
    "vlm/prompt_mean",
    "vlm/think_mean",
    "vlm/think_ids",
    "index/past_idx",
    "index/future_idx",
)


def cache_args(videos: Path, out: Path, models: Path, *extra: str) -> list[str]:
    return [
        "cache", "--videos", str(videos), "--out", str(out), "--models", "tiny",
        "--models-dir", str(models), "--device", "cpu", "--batch-size", "2", "--rows-per-shard", "2", *extra,
    ]  # fmt: skip


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (what users and dvc run)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "tjepa", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def summary_count(stdout: str, label: str) -> int:
    """A number from the summary table `tjepa cache` prints."""
    import re

    match = re.search(re.escape(label) + r"[^\n]*?│\s*(\d+)", stdout)
    assert match, f"no {label!r} in:\n{stdout}"
    return int(match.group(1))


def rows_by_video(store: Path, path: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    videos = list(g["index/video"][:])
    data = g[path][:]
    return {v: data[i] for i, v in enumerate(videos)}


def assert_same_features(a: Path, b: Path, arrays=FEATURE_ARRAYS) -> None:
    """Row-for-row (matched by video id) equality of two stores' arrays."""
    for path in arrays:
        ra, rb = rows_by_video(a, path), rows_by_video(b, path)
        assert ra.keys() == rb.keys(), path
        for video in ra:
            np.testing.assert_array_equal(ra[video], rb[video], err_msg=f"{path} differs for {video}")


def copy_tree(src: Path, dst: Path, n: int | None = None) -> Path:
    """Copy (the first n episodes of) a synthetic EgoDex tree."""
    dst.mkdir(parents=True, exist_ok=True)
    mp4s = sorted(src.rglob("*.mp4"))[: n if n else None]
    for mp4 in mp4s:
        rel = mp4.relative_to(src)
        (dst / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy2(mp4, dst / rel)
        h5 = mp4.with_suffix(".hdf5")
        if h5.exists():
            shutil.copy2(h5, dst / rel.with_suffix(".hdf5"))
    return dst


def write_lossless(path: Path, frames: np.ndarray, fps: int = 30) -> None:
    """Intra-only lossless video: editing frame k cannot change how any other frame decodes."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_all_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def altered_models(src: Path, dst: Path, qwen=None, vjepa=None) -> Path:
    """A copy of a tiny models directory whose Qwen3-VL / V-JEPA 2 weights `qwen(model)` / `vjepa(model)`
    edited in place (real checkpoints saved with save_pretrained, loaded by the production path)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration, VJEPA2Model

    from tjepa.pipeline.encoders.builders import QWEN_DIR, VJEPA_DIR

    shutil.copytree(src, dst)
    for edit, sub, cls in ((qwen, QWEN_DIR, Qwen3VLForConditionalGeneration), (vjepa, VJEPA_DIR, VJEPA2Model)):
        if edit is None:
            continue
        model = cls.from_pretrained(dst / sub)
        with torch.no_grad():
            edit(model)
        model.save_pretrained(dst / sub)
    return dst
