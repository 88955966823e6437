"""Paper-shaped training data in three on-disk forms, filled with random-normal values:

- ours: a `FeatureStore` at the paper layout (what `tjepa cache` writes), optionally with tokens;
- reference: one `np.savez_compressed` file per video, as the authors' release caches it (prompt and
  thinking tokens of 8 layers, both V-JEPA clips, targets);
- raw: one plain file per video holding exactly the bytes a training sample needs (the physical
  limit of reading them).

Random generation and zlib compression dominate set-up time, so a few distinct payloads are made and
reused across rows (reference files are byte copies of a few compressed files). Every row still has
its own bytes on disk, so cold reads are real reads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjepa.cache_schema import FeatureStore, RowData, StoreLayout

PAPER_LAYERS = [0, 4, 8, 12, 16, 20, 24, 27]
N_JOINTS = 52


@dataclass(frozen=True)
class Shapes:
    n_past: int = 32
    n_future: int = 32
    tubelet: int = 2
    patches: int = 256
    vjepa_width: int = 1024
    levels: int = 8
    vlm_width: int = 2048
    max_new_tokens: int = 16
    prompt_tokens: int = 1150  # ~1.1-1.2k for 32 frames at 256 px (docs/method.md)
    think_tokens: int = 15  # 16 generated, the last never fed back
    thumb: tuple[int, int] | None = (96, 128)
    rows_per_shard: int = 8

    def layout(self, keep_tokens: bool = False) -> StoreLayout:
        return StoreLayout(
            n_past=self.n_past, n_future=self.n_future, tubelet=self.tubelet, patches=self.patches,
            vjepa_width=self.vjepa_width, levels=self.levels, vlm_width=self.vlm_width,
            max_new_tokens=self.max_new_tokens, with_targets=True, keep_tokens=keep_tokens,
            max_prompt_tokens=self.prompt_tokens + 50 if keep_tokens else 0, thumb_size=self.thumb,
            rows_per_shard=self.rows_per_shard,
        )

    def sample_nbytes(self) -> int:
        """Bytes of one training sample as stored (fp16 latents, fp32 means, targets): what must be read."""
        tp, tf = self.n_past // self.tubelet, self.n_future // self.tubelet
        vjepa = (tp + tf) * self.patches * self.vjepa_width * 2
        means = 2 * self.levels * self.vlm_width * 4
        targets = (self.n_past + self.n_future) * N_JOINTS * (3 * 4 + 1) + 16 * 4
        return vjepa + means + targets


PAPER = Shapes()
SMOKE = Shapes(n_past=4, n_future=4, patches=4, vjepa_width=8, levels=2, vlm_width=8, max_new_tokens=3,
               prompt_tokens=6, think_tokens=2, thumb=(4, 6), rows_per_shard=2)


def store_config(shapes: Shapes) -> dict:
    """A stand-in extraction config shaped like the real one (the trainer reads `layers` from it)."""
    layers = PAPER_LAYERS if shapes.levels == len(PAPER_LAYERS) else list(range(shapes.levels))
    return {"encoders": {"preset": "benchmark-random", "layers": layers, "max_new_tokens": shapes.max_new_tokens},
            "sampling": {"n_past": shapes.n_past, "n_future": shapes.n_future}}


@dataclass
class Payload:
    """One video's random content, shared by all three forms."""

    vjepa_past: np.ndarray  # f16 [To/t, P, D]
    vjepa_future: np.ndarray  # f16 [Tf/t, P, D]
    prompt_tokens: np.ndarray  # f16 [L, S, H]
    think_tokens: np.ndarray  # f16 [L, K', H]
    targets: dict[str, np.ndarray]


def make_payloads(shapes: Shapes, n: int, seed: int = 0) -> list[Payload]:
    rng = np.random.default_rng(seed)

    def f16(*shape):
        return rng.standard_normal(shape, dtype=np.float32).astype(np.float16)

    tp, tf, J = shapes.n_past // shapes.tubelet, shapes.n_future // shapes.tubelet, N_JOINTS
    out = []
    for _ in range(n):
        targets = {}
        for side, T in (("past", shapes.n_past), ("future", shapes.n_future)):
            targets[f"joints_{side}"] = rng.normal(0, 0.3, (T, J, 3)).astype(np.float32)
            targets[f"valid_{side}"] = rng.random((T, J)) > 0.05
            cam = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
            cam[:, :3, 3] = rng.normal(size=(T, 3))
            targets[f"cam_{side}"] = cam
        targets["intrinsics"] = np.array([[1400, 0, 960], [0, 1400, 540], [0, 0, 1]], np.float32)
        out.append(Payload(
            vjepa_past=f16(tp, shapes.patches, shapes.vjepa_width),
            vjepa_future=f16(tf, shapes.patches, shapes.vjepa_width),
            prompt_tokens=f16(shapes.levels, shapes.prompt_tokens, shapes.vlm_width),
            think_tokens=f16(shapes.levels, shapes.think_tokens, shapes.vlm_width),
            targets=targets,
        ))
    return out


def _row(shapes: Shapes, p: Payload, keep_tokens: bool) -> RowData:
    n_frames = 4 * (shapes.n_past + shapes.n_future)
    m = n_frames // 2
    ids = np.arange(shapes.think_tokens, dtype=np.int32) + 100
    row = RowData(
        n_frames=n_frames, fps=30.0, width=1920, height=1080,
        past_idx=np.linspace(0, m - 1, shapes.n_past).astype(np.int32),
        future_idx=np.linspace(m, n_frames - 1, shapes.n_future).astype(np.int32),
        vjepa_past=p.vjepa_past, vjepa_future=p.vjepa_future,
        prompt_mean=p.prompt_tokens.mean(axis=1, dtype=np.float32),
        think_mean=p.think_tokens.mean(axis=1, dtype=np.float32),
        prompt_len=shapes.prompt_tokens, think_len=shapes.think_tokens, think_ids=ids, think_text="<think> hmm",
        prompt_tokens=p.prompt_tokens if keep_tokens else None, think_tokens=p.think_tokens if keep_tokens else None,
        thumb=np.zeros((*shapes.thumb, 3), np.uint8) if shapes.thumb else None,
        **p.targets,
    )
    return row


def write_store(path: Path, shapes: Shapes, n_rows: int, payloads: list[Payload],
                keep_tokens: bool = False) -> FeatureStore:
    """A done store of `n_rows` videos written shard by shard (as stage-one workers do)."""
    store = FeatureStore.create(path, shapes.layout(keep_tokens), store_config(shapes), {"code_version": "benchmark"})
    groups = [f"task{i % 3}" for i in range(n_rows)]
    rows = store.add_rows([f"{g}/{i}.mp4" for i, g in enumerate(groups)], groups, [1000] * n_rows,
                          [1.7e9] * n_rows)
    for start in range(0, n_rows, shapes.rows_per_shard):
        chunk = [int(r) for r in rows[start:start + shapes.rows_per_shard]]
        store.write_rows(chunk, [_row(shapes, payloads[r % len(payloads)], keep_tokens) for r in chunk])
    return store


def write_reference(folder: Path, shapes: Shapes, n_rows: int, payloads: list[Payload]) -> list[Path]:
    """One compressed npz per video (tokens, both clips, targets); copies of len(payloads) originals."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for i, p in enumerate(payloads[:n_rows]):
        path = folder / f"video{i:05d}.npz"
        np.savez_compressed(
            path, vjepa_past=p.vjepa_past, vjepa_future=p.vjepa_future,
            prompt_hidden=p.prompt_tokens, think_hidden=p.think_tokens,
            layers=np.asarray(store_config(shapes)["encoders"]["layers"], np.int32),
            **p.targets,
        )
        originals.append(path)
    files = list(originals)
    for i in range(len(originals), n_rows):
        dst = folder / f"video{i:05d}.npz"
        shutil.copyfile(originals[i % len(originals)], dst)
        files.append(dst)
    return files


def write_raw(folder: Path, shapes: Shapes, n_rows: int, payloads: list[Payload]) -> list[Path]:
    """One plain file per video with the sample's bytes (latents f16, means f32, targets)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_rows):
        p = payloads[i % len(payloads)]
        parts = [p.vjepa_past, p.vjepa_future, p.prompt_tokens.mean(axis=1, dtype=np.float32),
                 p.think_tokens.mean(axis=1, dtype=np.float32), p.targets["joints_past"], p.targets["joints_future"],
                 p.targets["valid_past"], p.targets["valid_future"], p.targets["cam_past"][-1]]
        blob = b"".join(np.ascontiguousarray(a).tobytes() for a in parts)
        assert len(blob) == shapes.sample_nbytes(), (len(blob), shapes.sample_nbytes())
        path = folder / f"video{i:05d}.bin"
        path.write_bytes(blob)
        files.append(path)
    return files
