"""NVDEC (torchcodec) frames against PyAV frames on the same sampled indices; exit 1 when they differ
by more than a colour-conversion difference (mean |diff| >= 3 gray levels, or other shapes).

Used by scripts/gpu_check.sh: python scripts/nvdec_parity.py VIDEO_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from tjepa.pipeline.episode_io import decode_size
from tjepa.pipeline.sampling import causal_split
from tjepa.pipeline.video import decode_frames, decode_frames_nvdec, probe


def main(root: str, n_videos: int = 4) -> int:
    worst = 0.0
    for mp4 in sorted(Path(root).rglob("*.mp4"))[:n_videos]:
        info = probe(mp4)
        idx = np.concatenate(causal_split(info.n_frames))
        for size in (None, decode_size(info, 292)):
            t0 = time.perf_counter()
            a = decode_frames(mp4, idx, size=size)
            t1 = time.perf_counter()
            b = decode_frames_nvdec(mp4, idx, size=size)
            t2 = time.perf_counter()
            if a.shape != b.shape:
                print(f"{mp4}: shapes differ, PyAV {a.shape} NVDEC {b.shape}")
                return 1
            d = np.abs(a.astype(np.int16) - b.astype(np.int16))
            worst = max(worst, float(d.mean()))
            print(f"{mp4.name} {'native' if size is None else 'resized'}: mean |diff| {d.mean():.2f}, max {d.max()}; "
                  f"PyAV {t1 - t0:.2f} s, NVDEC {t2 - t1:.2f} s")
    print(f"worst mean |diff| {worst:.2f} gray levels (the same frames with another YUV->RGB and resize: < 3 expected)")
    return 1 if worst >= 3 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
