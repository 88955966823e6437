"""A torch Dataset over the feature store: one item = one done video row, as the stage-two batch dict.

Reads only what the model needs (per-level means, tokens only when asked), never opens more than the
rows it was given, and is safe in DataLoader worker processes: the zarr group is opened lazily in each
process and never pickled. `preload=True` reads every needed array once, in bulk, into memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from tjepa.cache_schema.layout import BFLOAT16, PATHS, StoreLayout
from tjepa.cache_schema.reader import SPECS, StoreReader, captured_layers
from tjepa.cache_schema.storage import Location, locate
from tjepa.errors import StoreFormatError, TjepaError
from tjepa.train import chunk_reads, shard_blobs
from tjepa.train.row_cache import RowCache, store_key

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
_DECODED = frozenset(f for f, spec in SPECS.items() if spec.dtype == BFLOAT16)  # stored as other bits
READ_THREADS = 16  # requests in flight per process: a batch's chunks are fetched concurrently
BIG_ROW = 2**20  # bytes per row from which a row is its own request (smaller: one per shard)
KEEP_SHARDS = 16  # shards of every small array kept in memory per process (a few MiB)


def _batch_dtype(key: str, dtype: np.dtype) -> np.dtype:
    """What an item holds for a stored dtype (`CacheDataset._to_item`): bool, long lengths, fp16
    latents as stored, everything else float32."""
    if dtype == np.bool_:
        return np.dtype(bool)
    if key.endswith("_len"):
        return np.dtype(np.int64)
    return np.dtype(np.float16) if dtype == np.float16 else np.dtype(np.float32)


def _nd(view: np.ndarray):
    """A numpy view as the zarr output buffer it will be written into."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().nd_buffer.from_numpy_array(view)


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
    `row_cache`: keep what batches read from the store in a bounded local directory (train/row_cache.py).
    """

    def __init__(self, store_path: str | Path | Location, rows: Sequence[int] | None = None,
                 levels: tuple[int, ...] | None = None, with_tokens: bool = False, preload: bool = False,
                 require_targets: bool = True, row_cache: RowCache | None = None):
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
        self._shards: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # small arrays, by shard
        self._fetching: dict[tuple[str, int], Future] = {}  # ... being read by one thread for all
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._plans: dict[tuple[str, str], object] = {}  # ("rows" | "shard", field) -> its read plan
        self._cache = self._bind_cache(row_cache) if row_cache is not None else None
        if preload:
            self._mem = self._read_bulk()

    def _bind_cache(self, cache: RowCache) -> RowCache:
        """`cache` for this store; entry names carry the run that wrote each row (index/run)."""
        loc, attrs = self.location, self.reader.attrs
        url = loc.url if not loc.local else str(loc.path.resolve())
        creation = {"provenance": attrs.get("provenance"), "token": attrs.get("creation"),
                    "runs": None if self.reader.has("run") else len(attrs.get("runs", []))}
        self._row_runs = self.reader.read("run") if self.reader.has("run") else np.zeros(len(self.index.done), int)
        return cache.for_store(store_key(url, self.index.fingerprint, creation))

    def _cache_name(self, key: str, name: str, row: int | None = None, shard: int | None = None) -> str:
        what = "cam_past.last" if key == "cam_last" else name
        if row is not None:
            return f"{what}.r{row}.{int(self._row_runs[row])}"
        rps = self.index.layout.rows_per_shard
        sl = slice(shard * rps, (shard + 1) * rps)
        tag = hashlib.sha1(self._row_runs[sl].tobytes() + self.index.done[sl].tobytes()).hexdigest()[:12]
        return f"{what}.s{shard}.{tag}"

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

    # ---- whole batches ---------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        # threads, locks, open handles and reads in flight never cross a pickle
        return {**self.__dict__, "_pool": None, "_lock": None, "_plans": {}, "_fetching": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _threads(self) -> ThreadPoolExecutor:
        """This process's pool of reader threads (a forked DataLoader worker makes its own, and its
        own lock: the parent's could have been held by a thread the child does not have)."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool, self._pool_pid = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="tjepa-read"), os.getpid()
            self._lock, self._plans, self._fetching = threading.Lock(), {}, {}
        return self._pool

    def read_batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Items `idx` as one batch, equal to `default_collate([self[i] for i in idx])`, read straight
        into the batch arrays in two flights of requests. A row of a big array (latents: one video per
        chunk) is one ranged GET of its own (`chunk_reads`), located by its shard's index. Small arrays
        (a few KiB per row) cost requests, not bytes, so they are read a whole shard object at a time
        (`shard_blobs`) and the last shards are kept: in shard-shuffled order the next batches read the
        same shards. The first flight is the shard indexes and the small shards, the second the rows."""
        idx = list(idx)
        if self._mem is not None or type(self).__getitem__ is not CacheDataset.__getitem__ or not idx:
            return default_collate(self.__getitems__(idx))
        pool, rows, rps = self._threads(), [self.rows[i] for i in idx], self.index.layout.rows_per_shard
        by_shard: dict[int, list[int]] = {}
        for j, r in enumerate(rows):
            by_shard.setdefault(r // rps, []).append(j)
        out: dict[str, np.ndarray] = {}
        small: list[tuple[str, str]] = []  # key, field: read a shard at a time
        jobs: list[tuple[str, str, int, int]] = []  # key, field, batch position, row: big rows zarr reads
        direct: list[tuple[chunk_reads.Plan, int, np.ndarray]] = []  # rows read as ranged GETs
        convert: list[tuple[str, str, int, np.ndarray]] = []  # ... of those, the ones to decode into place
        fetched: list[tuple[str, str, int, np.ndarray]] = []  # ... of those, the ones the row cache keeps
        for key, name in self.fields.items():
            arr, spec = self._array(name), SPECS[name]
            row_shape = arr.shape[2:] if key == "cam_last" else arr.shape[1:]
            x = self._select_levels(key, spec.decode(np.empty((0, *row_shape), arr.dtype)), 1)  # as items get it
            out[key] = np.empty((len(rows), *x.shape[1:]), _batch_dtype(key, x.dtype))
            if not (spec.chunking == "row" and math.prod(row_shape) * arr.dtype.itemsize >= BIG_ROW):
                small.append((key, name))
                continue
            ranged = self._plan(name) if key != "cam_last" else None
            if ranged is None:
                jobs += [(key, name, j, r) for j, r in enumerate(rows)]
                continue
            into = out[key].dtype == ranged.dtype and out[key].shape[1:] == ranged.row_shape  # as stored
            for j, r in enumerate(rows):
                kept = self._cache.get(self._cache_name(key, name, row=r)) if self._cache else None
                raw = out[key][j] if into else np.empty(ranged.row_shape, ranged.dtype)
                if kept is not None:
                    raw[...] = kept
                else:
                    direct.append((ranged, r, raw))
                    fetched.append((key, name, r, raw))
                if not into:
                    convert.append((key, name, j, raw))

        pending = [pool.submit(self._read_big_row, out[key][j:j + 1], key, name, r) for key, name, j, r in jobs]
        needs = [(key, name, shard) for key, name in small for shard in by_shard]
        shards, indexes = self._small_shards(needs, chunk_reads.index_requests(direct))
        for key, _ in small:
            for shard, where in by_shard.items():
                out[key][where] = shards[(key, shard)][[rows[j] - shard * rps for j in where]]
        if direct:
            chunk_reads.read_rows(self.location, direct, indexes)
        for key, name, r, raw in fetched if self._cache else ():
            self._cache.put(self._cache_name(key, name, row=r), raw)
        for key, name, j, raw in convert:
            out[key][j] = self._select_levels(key, self.reader.decode(name, raw[None]), 1)[0]
        for f in pending:
            f.result()
        batch = {key: torch.from_numpy(x) for key, x in out.items()}
        batch["row"] = torch.tensor(rows, dtype=torch.long)
        return batch

    def _read_big_row(self, dst: np.ndarray, key: str, name: str, row: int) -> None:
        """One row of a big array that `chunk_reads` cannot locate, through zarr, into `dst` [1, ...]."""
        arr = self._array(name)
        sel = (slice(row, row + 1), -1) if key == "cam_last" else (slice(row, row + 1),)
        stored = (1, *(arr.shape[2:] if key == "cam_last" else arr.shape[1:]))
        entry = self._cache_name(key, name, row=row) if self._cache else ""
        kept = self._cache.get(entry) if self._cache else None
        if kept is None and dst.dtype == arr.dtype and dst.shape == stored and name not in _DECODED:
            arr.get_basic_selection(sel, out=_nd(dst))  # zarr writes the chunk into the batch itself
            raw = dst
        else:
            raw = np.asarray(arr.get_basic_selection(sel)) if kept is None else kept[None]
            dst[...] = self._select_levels(key, self.reader.decode(name, raw), 1)
        if self._cache and kept is None:
            self._cache.put(entry, raw[0])

    def _plan(self, name: str) -> chunk_reads.Plan | None:
        """How to read `name` as ranged GETs (None: through zarr), looked up once per process."""
        if ("rows", name) not in self._plans:
            self._plans[("rows", name)] = chunk_reads.plan(self._array(name))
        return self._plans[("rows", name)]

    def _blob_plan(self, name: str) -> shard_blobs.Plan | None:
        """How to decode a shard object of `name` here (None: zarr reads it), looked up once per process."""
        if ("shard", name) not in self._plans:
            self._plans[("shard", name)] = shard_blobs.plan(self._array(name), self.index.layout.rows_per_shard)
        return self._plans[("shard", name)]

    def _small_shards(self, needs: list[tuple[str, str, int]], tails: dict[str, int]
                      ) -> tuple[dict[tuple[str, int], np.ndarray], dict[str, bytes | None]]:
        """The shards `needs` names ((key, field, shard): all its rows, decoded, levels selected) and
        the object tails `tails` names (key -> size: the latents' shard indexes), in one flight. A
        shard is fetched once even when batches read ahead ask for it at once (the others wait for
        it); the last few are kept."""
        got, waits, mine = {}, {}, []
        with self._lock:
            for key, name, shard in needs:
                if (kept := self._shards.get((key, shard))) is not None:
                    self._shards.move_to_end((key, shard))
                    got[(key, shard)] = kept
                elif (f := self._fetching.get((key, shard))) is not None:
                    waits[(key, shard)] = f
                else:
                    self._fetching[(key, shard)] = Future()
                    mine.append((key, name, shard))
        done: set[tuple[str, int]] = set()
        try:
            stored, fetch, slow = {}, [], []  # stored: (key, shard) -> the shard's rows as stored
            for key, name, shard in mine:
                kept = self._cache.get(self._cache_name(key, name, shard=shard)) if self._cache else None
                if kept is not None:
                    stored[(key, shard)] = kept
                elif (p := self._blob_plan(name)) is not None:
                    fetch.append((key, name, shard, p))
                else:
                    slow.append((key, name, shard))
            pending = {(key, shard): self._threads().submit(self._zarr_shard, key, name, shard)
                       for key, name, shard in slow}
            objects = [f"{p.path}/{p.key_of(shard)}" for _, _, shard, p in fetch]
            wanted = [*tails, *objects]
            blobs = self.location.get_ranges(wanted, [-n for n in tails.values()] + [0] * len(objects),
                                             [None] * len(wanted), missing_ok=True) if wanted else []
            indexes = dict(zip(tails, blobs[:len(tails)], strict=True))
            read: dict[tuple[str, int], np.ndarray] = {}  # ... of those, the ones read from the store
            for (key, name, shard, p), obj, blob in zip(fetch, objects, blobs[len(tails):], strict=True):
                x = p.decode(blob, self.location / obj)[:self._array(name).shape[0] - shard * p.rows_per_shard]
                read[(key, shard)] = np.ascontiguousarray(x[:, -1]) if key == "cam_last" else x
            read.update((k, f.result()) for k, f in pending.items())
            names = {(key, shard): name for key, name, shard in mine}
            for (key, shard), x in read.items() if self._cache else ():
                self._cache.put(self._cache_name(key, names[(key, shard)], shard=shard), x)
            stored.update(read)
            for k, raw in stored.items():
                x = self._select_levels(k[0], self.reader.decode(names[k], raw), 1)
                with self._lock:
                    self._shards[k] = x
                    future = self._fetching.pop(k)
                    while len(self._shards) > KEEP_SHARDS * len(self.fields):
                        self._shards.popitem(last=False)
                future.set_result(x)
                done.add(k)
                got[k] = x
        except BaseException as err:
            with self._lock:  # the next batch tries again
                failed = [self._fetching.pop((key, shard)) for key, _, shard in mine if (key, shard) not in done]
            for future in failed:
                future.set_exception(err)
            raise
        for k, f in waits.items():
            got[k] = f.result()
        return got, indexes

    def _zarr_shard(self, key: str, name: str, shard: int) -> np.ndarray:
        """All stored rows of one shard of `name` through zarr (layouts `shard_blobs` does not decode)."""
        arr, rps = self._array(name), self.index.layout.rows_per_shard
        sel = (slice(shard * rps, min((shard + 1) * rps, arr.shape[0])),)
        return np.asarray(arr[(*sel, -1) if key == "cam_last" else sel])

    def __getitems__(self, idx: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """What DataLoader calls for a whole batch (torch >= 2.1): the rows are read together."""
        idx = list(idx)
        if self._mem is not None or type(self).__getitem__ is not CacheDataset.__getitem__ or not idx:
            return [self[i] for i in idx]  # in memory, or a subclass that reshapes its items
        batch = self.read_batch(idx)
        return [{k: v[j] for k, v in batch.items()} for j in range(len(idx))]

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
