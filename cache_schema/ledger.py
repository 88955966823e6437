"""The failure ledger: one object per failure under `STORE/failures/`, merged on read.

Many writers (processes, dask workers, hosts) record failures at once. Appending to one shared file
is only safe where O_APPEND is atomic, which NFS does not promise and object stores do not offer at
all; so each record is its own object, written in one atomic put, under a name no other writer can
produce (UTC time, host, pid, a random suffix). Nothing is ever rewritten, so concurrent writers
cannot lose each other's records and a crash leaves no torn line.

`STORE/failures.jsonl` is a merged, human- and script-readable copy of the records (one JSON line per
failure, oldest first, each naming its record in `source`), rewritten whole by the coordinator at the
end of every `tjepa cache` run (`export`): one writer, one atomic put. The records stay the truth;
lines with a `source` are never read back as extra failures. A `failures.jsonl` without `source`
lines (older stores, or a ledger file of its own) is still read.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from tjepa.cache_schema.storage import Location, host_name, locate

LEDGER_DIR = "failures"
LEGACY_FILE = "failures.jsonl"
LEDGER_NAME = LEDGER_DIR  # the ledger's place inside a store


@dataclass(frozen=True)
class Failure:
    time: str  # ISO 8601, UTC
    video: str
    row: int | None
    reason: str
    host: str = ""
    pid: int = 0


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text)[:64] or "host"


class Ledger:
    """Failure records under `root/prefix` (a store location and "failures", or a directory of its own)."""

    def __init__(self, root: str | os.PathLike | Location, prefix: str = ""):
        self.root = locate(root)
        self.prefix = prefix.strip("/")

    @classmethod
    def of_store(cls, store: str | os.PathLike | Location) -> Ledger:
        return cls(store, LEDGER_DIR)

    @property
    def path(self) -> str:
        """Where the records live, for messages."""
        return self.root / self.prefix if self.prefix else str(self.root)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def record(self, video: str, reason: str, row: int | None = None) -> Failure:
        now = datetime.datetime.now(datetime.timezone.utc)
        entry = Failure(time=now.isoformat(timespec="milliseconds"), video=video,
                        row=None if row is None else int(row), reason=reason, host=host_name(), pid=os.getpid())
        # Sortable by time, and unique without coordination: two writers never pick the same name.
        name = f"{now.strftime('%Y%m%dT%H%M%S.%f')}-{_safe(entry.host)}-{entry.pid}-{secrets.token_hex(4)}.json"
        self.root.put(self._key(name), json.dumps(entry.__dict__, ensure_ascii=False).encode("utf-8"))
        return entry

    def read(self) -> list[Failure]:
        """All records, oldest first (legacy jsonl lines first). An unreadable record is skipped with a warning."""
        out = self._read_legacy()
        keys = self._record_keys()
        blobs = self.root.get_many(keys)
        for key in keys:
            if key not in blobs:
                continue
            parsed = self._parse(blobs[key], self.root / key)
            if parsed is not None:
                out.append(parsed)
        return out

    def export(self) -> int:
        """Rewrite `failures.jsonl` beside the records as the merged ledger; returns the line count.

        Only the coordinator calls it (after every worker is done), so there is one writer. Lines of an
        older `failures.jsonl` are kept as they were."""
        if self.prefix != LEDGER_DIR:
            raise ValueError(f"{self.path}: only a store's own ledger has a failures.jsonl export")
        entries = [(f.time, f.__dict__) for f in self._read_legacy()]
        for key in self._record_keys():
            blob = self.root.get(key)
            failure = None if blob is None else self._parse(blob, self.root / key)
            if failure is not None:
                entries.append((failure.time, {**failure.__dict__, "source": key}))
        if entries:
            text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for _, d in sorted(entries, key=lambda e: e[0]))
            self.root.put(LEGACY_FILE, text.encode("utf-8"))
        return len(entries)

    def _record_keys(self) -> list[str]:
        return [k for k in self.root.keys(self.prefix) if k.endswith(".json") and "/." not in f"/{k}"]

    def _read_legacy(self) -> list[Failure]:
        """A single jsonl file: `failures.jsonl` beside the records, or the ledger itself when it is one."""
        if self.root.local and not self.prefix and self.root.path.is_file():
            data, where = self.root.path.read_bytes(), str(self.root)
        else:
            key = LEGACY_FILE if self.prefix == LEDGER_DIR else self._key(LEGACY_FILE)
            data, where = self.root.get(key), self.root / key
        if not data:
            return []
        out = []
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if line.strip() and '"source"' not in line:  # exported copies of records are not extra failures
                parsed = self._parse(line.encode("utf-8"), f"{where}:{n}")
                if parsed is not None:
                    out.append(parsed)
        return out

    @staticmethod
    def _parse(blob: bytes, where: str) -> Failure | None:
        try:
            d = json.loads(blob)
            return Failure(time=d["time"], video=d["video"], row=d.get("row"), reason=d["reason"],
                           host=str(d.get("host", "")), pid=int(d.get("pid", 0)))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            warnings.warn(f"{where}: unreadable ledger record skipped ({err})", stacklevel=3)
            return None

    def latest(self) -> dict[str, Failure]:
        """The most recent failure of each video."""
        return {f.video: f for f in sorted(self.read(), key=lambda f: f.time)}


def ledger_for(store: str | os.PathLike | Location, ledger: str | Path | None = None) -> Ledger:
    """The store's own ledger, or the one at `ledger` (a directory of records, or a legacy jsonl file)."""
    return Ledger.of_store(store) if ledger is None else Ledger(ledger)
