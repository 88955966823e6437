"""`RowCache`: a bounded local copy of what the trainer read from a store (off unless asked for).

`tjepa train --row-cache DIR --row-cache-gib N`: the second epoch from a bucket reads local files.
Entries are `.npy` files under DIR/<store key>/, one per (array, row) of the latents and per
(array, shard) of the small arrays, as stored (before decoding). What can never be served stale:
- the store key hashes the store's URL, fingerprint and creation record, so another store, or the
  same name deleted and cached again, has other entries;
- an entry's name carries what wrote it: the run that wrote the row (the store's index records it; a
  redone row is written by a later run), for a shard the runs and statuses of all its rows.
Writes are atomic (temp file + rename). Eviction is least recently used (a hit touches the file)
and keeps DIR under the bound. Processes sharing DIR (DataLoader workers) each count what they add
and rescan the directory whenever that reaches 1/32 of the bound, so together they can pass it by
at most (processes - 1) x 1/32 of it; an entry another process evicted is just a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from tjepa.errors import TjepaError

RESCAN = 32  # rescan the directory after adding 1/RESCAN of the bound: other processes add entries too


def store_key(url: str, fingerprint: str, creation: dict) -> str:
    """Names one store's entries: its location, extraction config and creation record."""
    blob = json.dumps([url, fingerprint, creation], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class RowCache:
    """Entries of one store (`for_store`) in a directory bounded to `max_bytes` (all stores together)."""

    def __init__(self, directory: str | os.PathLike, max_gib: float, store: str = ""):
        if max_gib <= 0:
            raise TjepaError(f"the row cache needs a size limit > 0 GiB, got {max_gib}")
        self.root, self.max_gib, self.store = Path(directory), float(max_gib), store
        self.max_bytes = int(max_gib * 2**30)
        self._lock, self._added, self._pending, self._pid = threading.Lock(), 0, 0, os.getpid()
        self._known: int | None = None  # bytes in the directory at the last scan (None: not yet)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lock": None, "_known": None, "_added": 0, "_pending": 0}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def for_store(self, key: str) -> RowCache:
        return RowCache(self.root, self.max_gib, key)

    def _path(self, name: str) -> Path:
        return self.root / self.store / f"{name}.npy"

    def get(self, name: str) -> np.ndarray | None:
        """The entry's array, or None (never stored, evicted, or unreadable: read the store again)."""
        path = self._path(name)
        try:
            value = np.load(path, allow_pickle=False)
            os.utime(path)  # recently used
            return value
        except (OSError, ValueError):
            return None

    def put(self, name: str, value: np.ndarray) -> None:
        """Store an entry (atomically), evicting the least recently used ones to stay in the bound."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        blob = buf.getvalue()
        if len(blob) > self.max_bytes:
            return
        self._make_room(len(blob))
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            with self._lock:  # written (or failed): no longer in flight
                self._pending -= len(blob)

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for path in self.root.glob("*/*.npy"):
            try:
                st = path.stat()
            except OSError:  # evicted by another process meanwhile
                continue
            out.append((st.st_mtime, st.st_size, path))
        return out

    def _make_room(self, size: int) -> None:
        """Reserve `size` bytes: counted with what is on disk and what this process is still writing."""
        with self._lock:
            if self._pid != os.getpid():  # a forked worker: count from a fresh scan
                self._known, self._added, self._pending, self._pid = None, 0, 0, os.getpid()
            fits = self._known is not None and self._known + self._added + size <= self.max_bytes
            if not fits or self._added + size > self.max_bytes // RESCAN:
                entries = self._entries()
                total = sum(s for _, s, _ in entries)
                for _, s, path in sorted(entries):  # oldest use first
                    if total + self._pending + size <= self.max_bytes:
                        break
                    path.unlink(missing_ok=True)
                    total -= s
                # reserved writes still in flight are not on disk yet: they stay counted
                self._known, self._added = total, self._pending
            self._pending += size
            self._added += size  # since the scan: written, or reserved and being written

    def nbytes(self) -> int:
        """Bytes of every entry in the directory (all stores)."""
        return sum(s for _, s, _ in self._entries())
