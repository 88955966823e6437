"""Creating a store without rename, safe when the creator may be on another host.

A store exists once its root `zarr.json` carries the tjepa attributes; that object is written last,
in one atomic put (the commit). Before anything else the creator puts `creating.json`, a marker that
names its host, process id, process start time, boot id and a random token; then it clears whatever
an abandoned creation left, writes the arrays' metadata, checks that the marker is still its own,
commits the root and removes the marker. Killed at any moment, the store is either committed or
uncommitted with a marker, and a rerun takes the creation over once the marker's writer is gone:
- same host: the process is gone (no such pid, or a pid reused by another process, or a reboot);
- another host: its processes cannot be seen from here, so only an age over `LEASE_S` counts
  (creation writes a few dozen small objects and takes seconds).
A marker of a live creator makes a second creator stop with a message naming host and pid.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import time
from pathlib import Path

from tjepa.cache_schema.storage import Location, host_name
from tjepa.errors import StoreFormatError, TjepaError

MARKER = "creating.json"
ROOT_META = "zarr.json"
LEASE_S = 600.0


def _proc_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot ('' where /proc is not there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def identity() -> dict:
    """Who is creating: enough to tell, from the same host, whether that process still runs."""
    pid = os.getpid()
    return {"host": host_name(), "pid": pid, "proc_start": _proc_start(pid), "boot_id": _boot_id(),
            "started": time.time(),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def read_marker(loc: Location) -> dict | None:
    blob = loc.get(MARKER)
    if blob is None:
        return None
    try:
        marker = json.loads(blob)
        return marker if isinstance(marker, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # unreadable: treated as abandoned (a marker is written in one atomic put)


def creator_alive(marker: dict, now: float | None = None) -> bool:
    """Whether the writer of `marker` may still be creating the store."""
    if marker.get("host") != host_name():
        age = (time.time() if now is None else now) - float(marker.get("started", 0.0))
        return age < LEASE_S
    if marker.get("boot_id") and marker.get("boot_id") != _boot_id():
        return False
    pid = int(marker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return not marker.get("proc_start") or marker.get("proc_start") == _proc_start(pid)


def describe(marker: dict) -> str:
    return (f"host {marker.get('host', '?')} pid {marker.get('pid', '?')} "
            f"since {marker.get('started_utc', '?')}")


def root_attributes(loc: Location) -> dict | None:
    """The root group's attributes, or None when there is no root metadata yet."""
    blob = loc.get(ROOT_META)
    if blob is None:
        return None
    try:
        meta = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreFormatError(f"{loc / ROOT_META}: unreadable zarr metadata ({err})") from err
    return (meta.get("attributes") or {}) if isinstance(meta, dict) else {}


def begin(loc: Location, committed: bool) -> str:
    """Claim the creation of an uncommitted store; clears an abandoned creation. Returns the token."""
    if committed:
        raise TjepaError(f"{loc}: already exists; open it, or choose another path")
    marker = read_marker(loc)
    if marker is not None and creator_alive(marker):
        raise TjepaError(f"{loc}: being created by {describe(marker)}; wait for that job, or if it is gone, "
                         f"delete {loc / MARKER} and rerun")
    if marker is None and loc.exists():
        raise TjepaError(f"{loc}: already exists and is not a tjepa store; choose another path")
    me = identity()
    me["token"] = secrets.token_hex(8)
    loc.put(MARKER, json.dumps(me).encode())
    leftovers = [k for k in loc.keys() if k != MARKER]
    loc.delete(leftovers)  # an abandoned creation: metadata only, no row was ever written
    return me["token"]


def upload_metadata(loc: Location, objects: dict[str, bytes]) -> None:
    """The groups' and arrays' metadata; the root's is held back: `commit` writes it."""
    loc.put_many({k: v for k, v in objects.items() if k != ROOT_META})


def commit(loc: Location, token: str, attrs: dict) -> None:
    """Write the root metadata with the tjepa attributes (the commit), then drop the marker."""
    marker = read_marker(loc) or {}
    if marker.get("token") != token:
        raise TjepaError(f"{loc}: another process ({describe(marker)}) took over the creation of this "
                         "store; it will finish it")
    blob = loc.get(ROOT_META)
    meta = json.loads(blob) if blob else {"zarr_format": 3, "node_type": "group"}
    meta["attributes"] = attrs
    loc.put(ROOT_META, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
    loc.delete([MARKER])


def clear_stale_marker(loc: Location) -> None:
    """A committed store whose creator died between the commit and removing its marker."""
    marker = read_marker(loc)
    if marker is not None and not creator_alive(marker):
        loc.delete([MARKER])
