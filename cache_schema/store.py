"""`FeatureStore`: the one Zarr v3 store of stage one (schema v2); `RowData`: what one video contributes.

Who writes what (zarr has no locks):
- the coordinator creates the store, grows every array (`add_rows`) and rewrites source signatures
  (`update_source`, `refresh_stale`) before any worker starts; it alone writes root attributes;
- a worker owns whole shards (`shard_rows`) and writes their rows (`write_rows`, `mark_failed`).
A row's `index/status` is written after all of its data, so a crash mid-row leaves it pending.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tjepa.cache_schema import creation
from tjepa.cache_schema.fingerprint import canonicalize, config_diff, fingerprint
from tjepa.cache_schema.layout import (
    BFLOAT16,
    COORDINATOR_FIELDS,
    RAW,
    SHUFFLE_ZSTD,
    ArraySpec,
    StoreLayout,
    array_specs,
)
from tjepa.cache_schema.ledger import ledger_for
from tjepa.cache_schema.rowdata import RowData, RowDataError, decode_row, encode_row
from tjepa.cache_schema.storage import Location, locate, open_zarr
from tjepa.errors import ConfigMismatchError, StoreFormatError, TjepaError

FORMAT = "tjepa-cache"
SCHEMA_VERSION = 2
PENDING, DONE, FAILED = 0, 1, 2

__all__ = ["FORMAT", "SCHEMA_VERSION", "PENDING", "DONE", "FAILED", "FeatureStore", "RowData", "RowDataError",
           "read_root_attrs"]


def read_root_attrs(path: str | Path | Location) -> dict:
    """The root attributes of a tjepa store; StoreFormatError if `path` is not one this code can read."""
    loc = locate(path)
    if loc.local and not loc.path.exists():
        raise StoreFormatError(f"{loc}: does not exist (build a store with `tjepa cache`)")
    attrs = creation.root_attributes(loc)
    marker = creation.read_marker(loc) if attrs is None or attrs.get("format") != FORMAT else None
    if marker is not None:
        raise StoreFormatError(f"{loc}: its creation did not finish (started by {creation.describe(marker)}); "
                               "rerun `tjepa cache` to create it")
    if attrs is None:
        if not loc.local:
            loc.check_bucket()
            raise StoreFormatError(f"{loc}: no store there (build one with `tjepa cache --out {loc}`)")
        what = ("a zarr v2 store" if (loc.path / ".zgroup").exists() or (loc.path / ".zarray").exists()
                else "no zarr.json")
        raise StoreFormatError(f"{loc}: not a tjepa store ({what}; expected a Zarr v3 group)")
    meta = json.loads(loc.get(creation.ROOT_META) or b"{}")
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise StoreFormatError(f"{loc}: not a tjepa store (not a Zarr v3 group)")
    if attrs.get("format") != FORMAT:
        raise StoreFormatError(f"{loc}: not a tjepa store (format attribute is {attrs.get('format')!r}, "
                               f"expected {FORMAT!r})")
    version = attrs.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreFormatError(f"{loc}: unknown schema version {version!r}")
    if version < SCHEMA_VERSION:
        raise StoreFormatError(f"{loc}: written by schema v{version}, this tjepa reads v{SCHEMA_VERSION} only (v2 keeps "
                               "per-token VLM states as bfloat16 instead of float16 and records which run wrote each "
                               "row): rebuild it with `tjepa cache` into a new --out, or read it with the tjepa "
                               "release that wrote it")
    if version > SCHEMA_VERSION:
        raise StoreFormatError(f"{loc}: written by schema v{version}, this tjepa reads v{SCHEMA_VERSION}: "
                               "upgrade tjepa")
    for key in ("config", "fingerprint", "layout", "provenance"):
        if key not in attrs:
            raise StoreFormatError(f"{loc}: root attribute {key!r} is missing")
    if "rows" not in attrs:  # optional commit marker (stores written by other tools): every row counts
        status_meta = "index/status/zarr.json"
        try:
            attrs["rows"] = int(json.loads(loc.get(status_meta) or b"")["shape"][0])
        except (KeyError, IndexError, ValueError) as err:
            raise StoreFormatError(f"{loc / status_meta}: unreadable ({err}); is index/status missing?") from err
    return attrs


def _committed(loc: Location) -> bool:
    """The store exists: its root carries the tjepa attributes (written last at creation)."""
    if loc.local and not loc.path.is_dir():
        return False
    attrs = creation.root_attributes(loc)
    return attrs is not None and attrs.get("format") == FORMAT


def _check_writable(loc: Location) -> None:
    """Fail early, naming the path, rather than deep inside a worker's first chunk write."""
    if not loc.local:
        loc.check_bucket()
        return
    path = loc.path
    for p in (path, path / "index" / "status"):
        if not p.exists():
            continue
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            raise TjepaError(f"{p}: on a read-only filesystem; cannot open the store for writing "
                             "(copy it somewhere writable, or open it with mode='r')")
        if not os.access(p, os.W_OK | os.X_OK):
            raise TjepaError(f"{p}: no write permission; cannot open the store for writing "
                             "(fix the permissions, or open it with mode='r')")


def _compressors(spec: ArraySpec):
    from zarr.codecs import BloscCodec, ZstdCodec

    if spec.codec == RAW:
        return None
    if spec.codec == SHUFFLE_ZSTD:
        return (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)
    return (ZstdCodec(level=3),)


def _array_metadata(layout: StoreLayout) -> dict[str, bytes]:
    """Every group's and array's zarr.json for `layout`, built in a scratch directory: uploading
    them is then one concurrent batch of small writes, whatever the backend."""
    import tempfile

    import zarr

    with tempfile.TemporaryDirectory(prefix="tjepa-meta-") as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for spec in array_specs(layout):
            parent, name = spec.path.split("/")
            group.require_group(parent).create_array(
                name,
                shape=(0, *spec.row_shape(layout)),
                chunks=spec.chunks(layout),
                shards=spec.shards(layout),
                dtype=str if spec.dtype == "str" else spec.stored_dtype,
                compressors=_compressors(spec),
                fill_value=spec.fill,
                dimension_names=spec.dims,
                attributes={"meaning": spec.meaning, **({"dtype": spec.dtype} if spec.dtype == BFLOAT16 else {})},
            )
        root = Path(tmp)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("zarr.json")}


class FeatureStore:
    """A tjepa feature store, on a local filesystem or an object store (see `storage.locate`).
    Build with `create`, `open` or `open_or_create`."""

    def __init__(self, loc: Location, group: Any, attrs: dict, mode: str, ledger: str | Path | None):
        self.location = loc
        self.path: Path | Location = loc.path if loc.local else loc  # `path / key` names an object
        self.mode = mode
        self._group = group
        self.layout = StoreLayout.from_dict(attrs["layout"])
        self.config: dict = attrs["config"]
        self.fingerprint: str = attrs["fingerprint"]
        self.provenance: dict = attrs["provenance"]
        self.version: int = attrs["version"]
        self._rows: int = int(attrs["rows"])
        self.ledger = ledger_for(loc, ledger)
        self.specs = array_specs(self.layout)
        self._arrays: dict[str, Any] = {}
        self.run_id = 0  # the run this handle writes for (open_or_create sets it for later runs)

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path | Location, layout: StoreLayout, config: dict, provenance: dict,
               ledger: str | Path | None = None) -> FeatureStore:
        """A new, empty store (0 rows). Refuses an existing store; takes over an abandoned creation
        (the protocol is in `creation`: marker first, root attributes last)."""
        loc = locate(path)
        if loc.local and loc.path.exists() and not loc.path.is_dir():
            raise TjepaError(f"{loc}: already exists; open it, or choose another path")
        _check_writable(loc)
        config = canonicalize(config)
        attrs = {
            "format": FORMAT,
            "version": SCHEMA_VERSION,
            "config": config,
            "fingerprint": fingerprint(config),
            "layout": layout.to_dict(),
            "provenance": canonicalize(provenance, "provenance"),
            "rows": 0,
        }
        try:
            token = creation.begin(loc, committed=_committed(loc))
            attrs["creation"] = token  # tells this store from a later one under the same name
            creation.upload_metadata(loc, _array_metadata(layout))
            creation.commit(loc, token, attrs)
        except OSError as err:
            raise TjepaError(f"{loc}: cannot create the store ({err})") from err
        return cls(loc, open_zarr(loc, mode="r+"), attrs, "r+", ledger)

    @classmethod
    def open(cls, path: str | Path | Location, mode: str = "r", expect_config: dict | None = None,
             ledger: str | Path | None = None) -> FeatureStore:
        """Open an existing store; with `expect_config`, refuse one made with a different config."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        loc = locate(path)
        attrs = read_root_attrs(loc)
        if fingerprint(attrs["config"]) != attrs["fingerprint"]:
            raise StoreFormatError(f"{loc}: the fingerprint attribute does not match the stored config "
                                   "(edited by hand?); rebuild the store")
        if expect_config is not None and fingerprint(expect_config) != attrs["fingerprint"]:
            lines = config_diff(attrs["config"], expect_config)
            raise ConfigMismatchError(
                f"{loc}: the store was built with a different extraction config "
                f"({len(lines)} key(s) differ, stored -> requested):\n  " + "\n  ".join(lines)
                + "\nUse another store path, or delete this store to rebuild it.")
        if mode == "r+":
            _check_writable(loc)
        return cls(loc, open_zarr(loc, mode=mode), attrs, mode, ledger)

    @classmethod
    def open_or_create(cls, path: str | Path | Location, layout: StoreLayout, config: dict, provenance: dict,
                       ledger: str | Path | None = None) -> FeatureStore:
        """Coordinator entry point: create, or reopen for writing after checking config and layout."""
        loc = locate(path)
        if not _committed(loc):
            return cls.create(loc, layout, config, provenance, ledger)
        store = cls.open(loc, "r+", expect_config=config, ledger=ledger)
        creation.clear_stale_marker(loc)
        if store.layout != layout:
            lines = config_diff(store.layout.to_dict(), layout.to_dict())
            raise ConfigMismatchError(f"{loc}: the store has a different layout (stored -> requested):\n  "
                                      + "\n  ".join(lines) + "\nUse another store path.")
        runs = list(store._group.attrs.get("runs", []))
        runs.append(canonicalize(provenance, "provenance"))
        store._group.attrs["runs"] = runs  # provenance of every later run that may add rows
        store.run_id = len(runs)  # what index/run records for the rows this run writes
        return store

    def record_workers(self, run: int, environments: list[dict]) -> None:
        """Coordinator, after a run: the distinct environments its workers computed in join that run's
        record (`provenance` for run 0, `runs[run - 1]` after), under `workers`."""
        self._require_writable()
        unique = {json.dumps(e, sort_keys=True): e for e in environments}
        if not unique:
            return
        if run == 0:
            record = dict(self._group.attrs["provenance"])
        else:
            runs = list(self._group.attrs.get("runs", []))
            record = dict(runs[run - 1])
        known = {json.dumps(e, sort_keys=True): e for e in record.get("workers", [])}
        record["workers"] = list({**known, **unique}.values())
        record = canonicalize(record, "provenance")
        if run == 0:
            self._group.attrs["provenance"] = record
            self.provenance = record
        else:
            runs[run - 1] = record
            self._group.attrs["runs"] = runs

    def run_records(self) -> list[dict]:
        """Provenance of every run, indexed like `index/run`: [creation, later runs...]."""
        return [self.provenance, *self._group.attrs.get("runs", [])]

    # ---- geometry ------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return self._rows

    @property
    def n_shards(self) -> int:
        return -(-self._rows // self.layout.rows_per_shard)

    def shard_of(self, row: int) -> int:
        return int(row) // self.layout.rows_per_shard

    def shard_rows(self, shard: int) -> range:
        rps = self.layout.rows_per_shard
        return range(shard * rps, min((shard + 1) * rps, self._rows))

    def array(self, path: str):
        """The zarr array at `path` (e.g. "vjepa/past"); its first dimension may exceed n_rows."""
        if path not in self._arrays:
            try:
                self._arrays[path] = self._group[path]
            except KeyError as err:
                raise StoreFormatError(f"{self.path}: array {path!r} is missing") from err
        return self._arrays[path]

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.location)!r}, rows={self._rows}, mode={self.mode!r})"

    # ---- coordinator ---------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.mode != "r+":
            raise TjepaError(f"{self.path}: opened read-only (mode='r'); open with mode='r+' to write")

    def add_rows(self, videos: list[str], groups: list[str], sizes: list[int], mtimes: list[float]) -> np.ndarray:
        """Append pending rows for new videos (coordinator only: grows every array). Returns their rows."""
        self._require_writable()
        k = len(videos)
        if not (len(groups) == len(sizes) == len(mtimes) == k):
            raise ValueError("add_rows: videos, groups, sizes and mtimes must have the same length")
        if len(set(videos)) != k:
            raise ValueError("add_rows: duplicate video ids")
        known = self.row_of()
        already = [v for v in videos if v in known]
        if already:
            raise ValueError(f"add_rows: {len(already)} video(s) already have rows, e.g. {already[0]!r}")
        old, new = self._rows, self._rows + k
        if k == 0:
            return np.arange(old, old)
        for spec in self.specs:
            self.array(spec.path).resize((new, *spec.row_shape(self.layout)))
        self.array("index/video")[old:new] = np.asarray(videos, dtype=np.dtypes.StringDType())
        self.array("index/group")[old:new] = np.asarray(groups, dtype=np.dtypes.StringDType())
        self.array("index/source_size")[old:new] = np.asarray(sizes, dtype=np.int64)
        self.array("index/source_mtime")[old:new] = np.asarray(mtimes, dtype=np.float64)
        self.array("index/status")[old:new] = np.zeros(k, np.uint8)  # explicit: overwrite leftovers of a crash
        self._group.attrs["rows"] = new  # commit last
        self._rows = new
        return np.arange(old, new)

    def row_of(self) -> dict[str, int]:
        """Video id -> row."""
        ids = self.array("index/video")[: self._rows]
        return {str(v): i for i, v in enumerate(ids)}

    def update_source(self, rows, sizes, mtimes) -> None:
        """New source signatures for stale rows, which become pending (coordinator only)."""
        self._require_writable()
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        self._check_rows(rows)
        self.array("index/source_size").oindex[rows] = np.asarray(sizes, dtype=np.int64)
        self.array("index/source_mtime").oindex[rows] = np.asarray(mtimes, dtype=np.float64)
        self.array("index/status").oindex[rows] = np.zeros(rows.size, np.uint8)

    def stale_rows(self, sources: dict[str, tuple[int, float]]) -> list[int]:
        """Rows whose source file changed size or mtime since it was recorded."""
        ids, _, size, mtime = self._columns()
        return [i for i, v in enumerate(ids) if v in sources
                and (int(size[i]) != int(sources[v][0]) or float(mtime[i]) != float(sources[v][1]))]

    def refresh_stale(self, sources: dict[str, tuple[int, float]]) -> list[int]:
        """Coordinator: record the new signatures of stale rows (making them pending); returns them."""
        rows = self.stale_rows(sources)
        ids = self.array("index/video")[: self._rows]
        self.update_source(rows, [sources[str(ids[r])][0] for r in rows], [sources[str(ids[r])][1] for r in rows])
        return rows

    def work_list(self, sources: dict[str, tuple[int, float]], retry_failed: bool = False) -> list[int]:
        """The resume query: rows of `sources` that are pending, stale, or (with retry_failed) failed."""
        ids, status, size, mtime = self._columns()
        out = []
        for i, v in enumerate(ids):
            if v not in sources:
                continue
            stale = int(size[i]) != int(sources[v][0]) or float(mtime[i]) != float(sources[v][1])
            if status[i] == PENDING or stale or (retry_failed and status[i] == FAILED):
                out.append(i)
        return out

    def _columns(self):
        n = self._rows
        return ([str(v) for v in self.array("index/video")[:n]], self.status(),
                self.array("index/source_size")[:n], self.array("index/source_mtime")[:n])

    # ---- workers -------------------------------------------------------------------------------
    def _check_rows(self, rows: np.ndarray) -> None:
        if rows.size and (rows.min() < 0 or rows.max() >= self._rows):
            raise IndexError(f"{self.path}: rows must be in [0, {self._rows}), got {rows.min()}..{rows.max()}")

    def write_row(self, row: int, data: RowData) -> None:
        """Every array of the row, then its status (done)."""
        self.write_rows([row], [data])

    def encode(self, row: int, data: RowData) -> dict[str, np.ndarray]:
        """One row checked and converted to the stored dtypes; RowDataError says why it cannot be stored.

        Pure computation (nothing is written), so a writer can reject one bad row and store the rest."""
        return encode_row(self.layout, self.specs, data, int(row))

    def write_rows(self, rows: list[int], datas: list[RowData], run: int = 0) -> None:
        """Several rows (ideally whole shards, which avoids read-modify-write): all data, then all statuses.

        Raises RowDataError before writing anything if any row is invalid (see `encode`)."""
        if len(rows) != len(datas):
            raise ValueError("write_rows: rows and datas differ in length")
        self.write_encoded(rows, [self.encode(r, d) for r, d in zip(rows, datas, strict=True)], run)

    def write_encoded(self, rows: list[int], encoded: list[dict[str, np.ndarray]], run: int = 0) -> None:
        """Rows already checked by `encode`: all data, then all statuses (done). `run`: which run wrote
        them (0 the creating run, k the k-th entry of the `runs` attribute; see `open_or_create`)."""
        self._require_writable()
        if len(rows) != len(encoded):
            raise ValueError("write_encoded: rows and encoded differ in length")
        if not rows:
            return
        order = np.argsort(np.asarray(rows))
        rows_sorted = np.asarray(rows, dtype=np.int64)[order]
        if len(set(rows_sorted.tolist())) != len(rows_sorted):
            raise ValueError("write_rows: duplicate rows")
        self._check_rows(rows_sorted)
        encoded = [encoded[i] for i in order]
        segments = np.split(np.arange(len(rows_sorted)), np.nonzero(np.diff(rows_sorted) != 1)[0] + 1)
        for spec in self.specs:
            if spec.field in COORDINATOR_FIELDS or spec.field == "status":
                continue
            arr = self.array(spec.path)
            for seg in segments:
                start = int(rows_sorted[seg[0]])
                if spec.field == "run":
                    block = np.full(len(seg), run, np.int16)
                else:
                    block = np.stack([encoded[j][spec.field] for j in seg])
                arr[start:start + len(seg)] = block
        status = self.array("index/status")
        for seg in segments:  # last: the row counts only now
            start = int(rows_sorted[seg[0]])
            status[start:start + len(seg)] = np.full(len(seg), DONE, np.uint8)

    def mark_failed(self, row: int, video: str, reason: str) -> None:
        """Status failed and one ledger line (time, video, row, reason); the ledger line comes first."""
        self._require_writable()
        self._check_rows(np.asarray([row]))
        stored = str(self.array("index/video")[int(row)])
        if stored != video:
            raise ValueError(f"mark_failed: row {row} holds {stored!r}, not {video!r}")
        self.ledger.record(video, reason, row=int(row))
        self.array("index/status")[int(row)] = np.uint8(FAILED)

    # ---- reading -------------------------------------------------------------------------------
    def status(self) -> np.ndarray:
        """uint8 [n_rows]: 0 pending, 1 done, 2 failed."""
        return np.asarray(self.array("index/status")[: self._rows])

    def done_rows(self) -> np.ndarray:
        return np.nonzero(self.status() == DONE)[0]

    def read_row(self, row: int) -> RowData:
        """Everything stored for one row, at the stored (padded) shapes."""
        self._check_rows(np.asarray([row]))
        values = {spec.field: self.array(spec.path)[int(row)] for spec in self.specs}
        return decode_row(self.layout, values)  # tokens come back as float32

    def nbytes_on_disk(self) -> int:
        """Bytes of every object of the store (the ledger included)."""
        return self.location.nbytes()

    def info(self) -> dict:
        """Counts and identity, JSON-ready."""
        st = self.status()
        return {
            "path": str(self.location), "version": self.version, "fingerprint": self.fingerprint,
            "rows": self._rows, "done": int((st == DONE).sum()), "failed": int((st == FAILED).sum()),
            "pending": int((st == PENDING).sum()), "shards": self.n_shards,
        }
