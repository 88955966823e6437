"""`preview.png`: a contact sheet of a synthetic dataset, read back through the real readers.

Each row is one episode (first frame with the cue, last observed frame, mid-horizon, last frame);
the HDF5 joints are projected on top with the HDF5 camera, so a wrong pose, intrinsics or
convention shows up as dots off the drawn hands.
"""

from __future__ import annotations

from pathlib import Path

from tjepa.pipeline.egodex import N_JOINTS, read_labels
from tjepa.pipeline.synth.scene import project
from tjepa.pipeline.video import decode_frames

MAX_ROWS = 6


def write_preview(path: Path, root: Path, table: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[:MAX_ROWS]
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    half = N_JOINTS // 2
    for r, ep in enumerate(rows):
        video = root / ep["id"]
        labels = read_labels(video.with_suffix(".hdf5"), expected_frames=ep["frames"])
        n = ep["frames"]
        idx = [0, n // 2 - 1, int(0.8 * (n - 1)), n - 1]
        frames = decode_frames(video, idx)
        for c, (t, img) in enumerate(zip(idx, frames, strict=True)):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            uv, z = project(labels.joints[t], labels.cam[t], labels.intrinsics)
            for sl, colour in ((slice(0, half), "red"), (slice(half, N_JOINTS), "blue")):
                ax.scatter(uv[sl, 0], uv[sl, 1], s=3, c=colour, linewidths=0)
            ax.set_xlim(-0.5, img.shape[1] - 0.5)
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            label = ("cue", "last observed", "horizon", "end")[c]
            ax.set_title(f"{label} t={t}", fontsize=7)
        axes[r, 0].set_ylabel(f"{ep['id']}\ncue {ep['cue']}", fontsize=7)
    fig.suptitle("synthetic EgoDex: video frames + HDF5 joints projected (red right, blue left)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
