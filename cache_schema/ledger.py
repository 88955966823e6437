"""The failure ledger: one JSON line per failed video, appended by whichever process saw it fail.

Each record is written with a single `write` on a file opened in append mode, which POSIX makes
atomic for small writes on local filesystems, so concurrent workers do not interleave lines.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

LEDGER_NAME = "failures.jsonl"


@dataclass(frozen=True)
class Failure:
    time: str  # ISO 8601, UTC
    video: str
    row: int | None
    reason: str


class Ledger:
    """Append-only JSONL file of failures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def record(self, video: str, reason: str, row: int | None = None) -> Failure:
        entry = Failure(
            time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            video=video,
            row=None if row is None else int(row),
            reason=reason,
        )
        line = json.dumps(entry.__dict__, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return entry

    def read(self) -> list[Failure]:
        """All records, oldest first. A torn line (a crash mid-write) is skipped with a warning."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    out.append(Failure(time=d["time"], video=d["video"], row=d.get("row"), reason=d["reason"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    warnings.warn(f"{self.path}:{n}: unreadable ledger line skipped ({err})", stacklevel=2)
        return out

    def latest(self) -> dict[str, Failure]:
        """The most recent failure of each video."""
        return {f.video: f for f in self.read()}
