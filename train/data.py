"""A torch Dataset over the feature store: one item = one done video row, as the stage-two batch dict.

Reads only what the model needs (per-level means, tokens only when asked), never opens more than the
rows it was given, and is safe in DataLoader worker processes: the zarr group is opened lazily in each
process and never pickled. `preload=True` reads every needed array once, in bulk, into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tjepa.cache_schema.layout import PATHS, StoreLayout
from tjepa.cache_schema.reader import StoreReader, captured_layers
from tjepa.cache_schema.storage import Location, locate
from tjepa.errors import StoreFormatError, TjepaError

# batch key -> store field (cache_schema.layout.PATHS); `cam_last` is the last step of cam_past
_BASE = {
    "vjepa_past": "vjepa_past", "vjepa_future": "vjepa_future",
    "prompt_mean": "prompt_mean", "think_mean": "think_mean",
    "joints_past": "joints_past", "valid_past": "valid_past",
    "joints_future": "joints_future", "valid_future": "valid_future",
    "cam_last": "cam_past",
    # source frame index of every slot: real time for positions and time-scaled offsets
    "past_idx": "past_idx", "future_idx": "future_idx",
}
_TOKENS = {k: k for k in ("prompt_tokens", "prompt_len", "think_tokens", "think_len")}
__all__ = ["CacheDataset", "StoreIndex", "captured_layers", "level_positions", "read_index", "to_device"]

_LEVELLED = ("prompt_mean", "think_mean", "prompt_tokens", "think_tokens")  # axis 0 = level (per row)


@dataclass(frozen=True)
class StoreIndex:
    """What the trainer needs to know about a store before reading any feature."""

    path: str
    videos: tuple[str, ...]
    groups: tuple[str, ...]
    done: np.ndarray  # bool [N]
    layout: StoreLayout
    config: dict
    fingerprint: str
    layers: tuple[int, ...]
    has_targets: bool
    has_tokens: bool


def read_index(store_path: str | Path | Location) -> StoreIndex:
    """Open a store read-only and read its attributes and index arrays (never the features).

    Only committed rows (the `rows` root attribute: arrays are grown before it is updated) count."""
    reader = StoreReader(store_path)  # StoreFormatError unless this is a tjepa store we can read
    try:
        done, videos, groups = reader.done(), reader.strings("video"), reader.strings("group")
    except KeyError as err:
        raise StoreFormatError(f"{reader.location}: missing index array ({err})") from err
    return StoreIndex(
        path=reader.location, videos=videos, groups=groups, done=done, layout=reader.layout,
        config=reader.config, fingerprint=reader.fingerprint, layers=reader.layers,
        has_targets=reader.has_targets, has_tokens=reader.has_tokens,
    )


def level_positions(captured: Sequence[int], levels: Sequence[int] | None) -> tuple[int, ...]:
    """Positions along the level axis of the requested layer numbers (None = all, in store order)."""
    if levels is None:
        return tuple(range(len(captured)))
    missing = [lv for lv in levels if lv not in captured]
    if missing or len(set(levels)) != len(levels) or not levels:
        raise TjepaError(f"levels {tuple(levels)} must be distinct layer numbers captured in the store "
                         f"{tuple(captured)} (not in the store: {missing}); re-extract to use other layers")
    return tuple(list(captured).index(lv) for lv in levels)


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a batch to `device` (fp16 arrays stay fp16: the model upcasts them there)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class CacheDataset(torch.utils.data.Dataset):
    """Done rows of a store as stage-two batch dicts (bool masks, long lengths, float tensors).

    V-JEPA latents (stored fp16) stay fp16 here: converting 16 MiB of latents per sample to fp32 on
    the loader's CPU halved loading throughput (BENCHMARKS.md); the model upcasts them after the
    copy, on the accelerator. Everything else is float32 (tokens: decoded from their bfloat16 bits).

    `rows`: store rows to serve (None = all done rows); every row must be done. `levels`: a subset of
    the captured decoder layer numbers (None = all). Items also carry `row` (long), the store row.
    `require_targets=False` also serves a store of plain videos (items without the target keys).
    """

    def __init__(self, store_path: str | Path | Location, rows: Sequence[int] | None = None,
                 levels: tuple[int, ...] | None = None, with_tokens: bool = False, preload: bool = False,
                 require_targets: bool = True):
        self.location = locate(store_path)  # carries --storage-options into DataLoader workers
        self.index = read_index(self.location)
        self.path = self.index.path
        if require_targets and not self.index.has_targets:
            raise TjepaError(f"{self.path}: the store has no targets (made from plain videos); the "
                             f"trajectory head needs EgoDex-style labels to train")
        if with_tokens and not self.index.has_tokens:
            raise TjepaError(f"{self.path}: the store has no token arrays ({PATHS['prompt_tokens']}, "
                             f"{PATHS['think_tokens']}); re-run `tjepa cache` keeping tokens, or use mean conditioning")
        done = self.index.done
        if rows is None:
            rows = np.flatnonzero(done).tolist()
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < len(done) or not done[r]]
        if bad:
            raise TjepaError(f"{self.path}: {len(bad)} requested row(s) are not done rows (first: {bad[0]}); "
                             f"only rows with status done can be read")
        self.rows = tuple(rows)
        self.levels = tuple(self.index.layers[i] for i in level_positions(self.index.layers, levels))
        self._lv = np.asarray(level_positions(self.index.layers, levels))
        self._all_levels = np.array_equal(self._lv, np.arange(len(self.index.layers)))
        self.fields = dict(_BASE, **(_TOKENS if with_tokens else {}))
        if not self.index.has_targets:  # plain videos (forecasting only): features, no supervision
            self.fields = {k: v for k, v in self.fields.items() if not PATHS[v].startswith("targets/")}
        self.reader = StoreReader(self.location)  # zarr handles opened lazily per process, never pickled
        self._mem: dict[str, np.ndarray] | None = None
        if preload:
            self._mem = self._read_bulk()

    def _array(self, field: str):
        return self.reader.array(field)

    @property
    def _group(self):
        """The open zarr group of this process (None until the first read, and after unpickling)."""
        return self.reader._group

    def __len__(self) -> int:
        return len(self.rows)

    def _select_levels(self, key: str, x: np.ndarray, level_axis: int) -> np.ndarray:
        if key in _LEVELLED and not self._all_levels:
            return np.take(x, self._lv, axis=level_axis)
        return x

    def _read_bulk(self) -> dict[str, np.ndarray]:
        """One read per array for all rows (a slice when the rows are contiguous)."""
        rows = np.asarray(self.rows, np.int64)
        contiguous = rows.size > 0 and bool((np.diff(rows) == 1).all())
        mem = {}
        for key, name in self.fields.items():
            arr = self._array(name)
            x = self.reader.decode(name, arr[int(rows[0]):int(rows[-1]) + 1] if contiguous else arr.oindex[rows])
            if key == "cam_last":
                x = np.ascontiguousarray(x[:, -1])
            mem[key] = self._select_levels(key, x, 1)
        return mem

    def _read_row(self, i: int) -> dict[str, np.ndarray]:
        if self._mem is not None:
            return {k: v[i] for k, v in self._mem.items()}
        row, out = self.rows[i], {}
        for key, name in self.fields.items():
            x = self._array(name)[row, -1] if key == "cam_last" else self.reader.decode(name, self._array(name)[row])
            out[key] = self._select_levels(key, np.asarray(x), 0)
        return out

    def _read_rows(self, idx: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """Several items at once: every (array, run of consecutive rows) is a slice read, and all of
        them are in flight at the same time, so zarr fetches all the chunks of a batch concurrently
        (on a bucket a batch then costs about one round trip, not one per row and array). Slices,
        not `oindex`: an orthogonal selection inside a sharded array decodes element by element."""
        from concurrent.futures import ThreadPoolExecutor

        rows, inverse = np.unique(np.asarray([self.rows[i] for i in idx], np.int64), return_inverse=True)
        runs = np.split(rows, np.nonzero(np.diff(rows) != 1)[0] + 1)
        for name in self.fields.values():
            self._array(name)  # open handles here, not racing in the threads

        def read(job: tuple[str, str, int, int]) -> np.ndarray:
            key, name, a, b = job
            arr = self._array(name)
            x = arr[a:b, -1] if key == "cam_last" else self.reader.decode(name, arr[a:b])
            return self._select_levels(key, np.asarray(x), 1)

        jobs = [(key, name, int(r[0]), int(r[-1]) + 1) for key, name in self.fields.items() for r in runs]
        with ThreadPoolExecutor(min(32, len(jobs))) as pool:
            parts = list(pool.map(read, jobs))
        cols = {key: np.concatenate(parts[k * len(runs):(k + 1) * len(runs)])[inverse]
                for k, key in enumerate(self.fields)}
        return [{k: v[j] for k, v in cols.items()} for j in range(len(idx))]

    def __getitems__(self, idx: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """What DataLoader calls for a whole batch (torch >= 2.1): the rows are read together."""
        idx = list(idx)
        if type(self).__getitem__ is not CacheDataset.__getitem__:  # a subclass reshapes its items
            return [self[i] for i in idx]
        raws = [self._read_row(i) for i in idx] if self._mem is not None or not idx else self._read_rows(idx)
        return [self._to_item(raw, self.rows[i]) for raw, i in zip(raws, idx, strict=True)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._to_item(self._read_row(i), self.rows[i])

    @staticmethod
    def _to_item(raw: dict[str, np.ndarray], row: int) -> dict[str, torch.Tensor]:
        item: dict[str, torch.Tensor] = {}
        for key, x in raw.items():
            if x.dtype == np.bool_:
                item[key] = torch.from_numpy(np.array(x, dtype=bool))
            elif key.endswith("_len"):
                item[key] = torch.tensor(int(x), dtype=torch.long)
            elif x.dtype == np.float16:
                item[key] = torch.from_numpy(np.ascontiguousarray(x))
            else:
                item[key] = torch.from_numpy(np.array(x, dtype=np.float32))
        item["row"] = torch.tensor(row, dtype=torch.long)
        return item

    def model_layout(self) -> dict:
        """The store layout as the model sees it (level count reduced to the chosen subset)."""
        return self.index.layout.replace(levels=len(self.levels)).to_dict()
