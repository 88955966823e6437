"""The one way tjepa replaces a file on a local filesystem.

Guarantee: a reader sees either the previous complete file or the new complete one, never a part;
once `atomic_write` returns, the new file survives a crash or power loss (file and directory are
fsynced). How: the bytes go to `.<name>.tmp<pid>` in the same directory (same filesystem, so the
rename is atomic), are fsynced, then `os.replace`d over the target. A writer killed mid-way leaves
only its temp file, which `remove_stale_temps` deletes. Object stores have no rename: stores there
follow their own protocol (cache_schema).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_GLOB = ".*.tmp*"


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(fh)` on a binary temp file, then put it in place of `path` (see the guarantee)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, doc: Any, indent: int | None = 1, **dumps: Any) -> Path:
    """`doc` as JSON text plus a newline."""
    return atomic_write_text(path, json.dumps(doc, indent=indent, **dumps) + "\n")


def remove_stale_temps(directory: str | Path) -> None:
    """Delete temp files of writes that were killed before their rename."""
    for stale in Path(directory).glob(TEMP_GLOB):
        stale.unlink(missing_ok=True)
