"""Where a store lives: a local directory or an fsspec URL (`s3://bucket/x.zarr`), and the few
whole-object operations the store protocol is built on.

Everything that opens a store goes through `locate` (a path, a URL or a `Location`). The protocol
(cache_schema/README.md, "Object storage") assumes only what every backend gives: one object write
is atomic (an S3 PUT; locally a temp file renamed over the target), objects can be listed and deleted;
nothing relies on rename of directories, on append, or on a lock.

Credentials and the endpoint come from the standard AWS environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL), which s3fs reads in every process, plus the
optional `--storage-options` JSON (`set_storage_options`). Options are never written into a store
and never printed: `Location` leaves them out of its repr.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tjepa.errors import StoreError, TjepaError

_DEFAULT_OPTIONS: dict[str, Any] = {}


class StorageError(StoreError):
    """The storage behind a store refused or failed (credentials, bucket, network)."""


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Process-wide fsspec options for URLs opened without explicit ones (the CLI's --storage-options)."""
    _DEFAULT_OPTIONS.clear()
    _DEFAULT_OPTIONS.update(options or {})


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """The --storage-options JSON object (None or empty: no options)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TjepaError(f"--storage-options: not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(value, dict):
        raise TjepaError(f"--storage-options: expected a JSON object, got {type(value).__name__}")
    return value


def is_url(name: str | os.PathLike) -> bool:
    return "://" in str(name) and not str(name).startswith("file://")


def host_name() -> str:
    """This writer's host as recorded in creation markers and ledger records. TJEPA_HOST overrides
    the hostname (containers that all call themselves `localhost`; tests of several hosts)."""
    return os.environ.get("TJEPA_HOST") or socket.gethostname()


@dataclass(frozen=True)
class Location:
    """A store root. `url` is a local path or a URL without a trailing slash."""

    url: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def local(self) -> bool:
        return not is_url(self.url)

    @property
    def path(self) -> Path:
        if not self.local:
            raise TypeError(f"{self.url} is not a local path")
        return Path(self.url)

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, key: str) -> str:
        """The full name of an object inside the store (for messages)."""
        return f"{self.url}/{key}"

    # ---- backends ------------------------------------------------------------------------------
    def _fs(self):
        """A synchronous fsspec filesystem and the root prefix inside it (remote only)."""
        import fsspec

        protocol, root = self.url.split("://", 1)
        try:
            return fsspec.filesystem(protocol, **self.options), root
        except (ImportError, ValueError) as err:
            raise StorageError(f"{self.url}: cannot use {protocol}:// ({err}); for s3:// stores install s3fs "
                               "(pip install 'tjepa[s3]')") from None

    def zarr_store(self, read_only: bool):
        """The zarr store object for this location (zarr opens URLs with its own async filesystem)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local:
            return LocalStore(self.url, read_only=read_only)
        with self.errors("open"):
            return FsspecStore.from_url(self.url, storage_options=dict(self.options), read_only=read_only)

    def errors(self, what: str) -> _Translate:
        return _Translate(self, what)

    # ---- whole-object operations (keys relative to the root, "/"-separated) ---------------------
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        if self.local:
            try:
                return (self.path / key).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        fs, root = self._fs()
        with self.errors(f"read {key}"):
            try:
                return fs.cat_file(f"{root}/{key}")
            except FileNotFoundError:
                if not fs.exists(root.split("/", 1)[0]):
                    raise
                return None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several objects at once (concurrent requests on a remote store); missing ones are left out."""
        if self.local or not keys:
            return {k: v for k in keys if (v := self.get(k)) is not None}
        fs, root = self._fs()
        with self.errors("read"):
            got = fs.cat([f"{root}/{k}" for k in keys], on_error="omit")
        return {name[len(root) + 1:]: data for name, data in got.items()}

    def get_ranges(self, keys: list[str], starts: list[int], ends: list[int | None],
                   missing_ok: bool = False) -> list[bytes | None]:
        """Byte ranges [start, end) of objects, all requests in flight at once on a remote store. A
        negative start with end None is the object's last -start bytes. `missing_ok`: None for an
        object that does not exist (else the error)."""
        if self.local:
            out: list[bytes | None] = []
            for key, start, end in zip(keys, starts, ends, strict=True):
                try:
                    fh = open(self.path / key, "rb")  # noqa: SIM115 (closed below)
                except FileNotFoundError:
                    if not missing_ok:
                        raise
                    out.append(None)
                    continue
                with fh:
                    fh.seek(start, os.SEEK_END if start < 0 else os.SEEK_SET)
                    out.append(fh.read() if end is None else fh.read(end - fh.tell()))
            return out
        fs, root = self._fs()
        with self.errors("read"):
            got = list(fs.cat_ranges([f"{root}/{k}" for k in keys], starts, ends,
                                     on_error="return" if missing_ok else "raise"))
            for i, item in enumerate(got):
                if isinstance(item, FileNotFoundError):
                    got[i] = None
                elif isinstance(item, BaseException):
                    raise item
        return got

    def put(self, key: str, data: bytes) -> None:
        """Write one object atomically: readers see the old object or the new one, never a part."""
        if self.local:
            target = self.path / key
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return
        fs, root = self._fs()
        with self.errors(f"write {key}"):
            fs.pipe_file(f"{root}/{key}", data)  # one PUT: atomic on an object store

    def put_many(self, objects: dict[str, bytes]) -> None:
        """Several objects, each written atomically (concurrent requests on a remote store)."""
        if self.local or not objects:
            for key, data in objects.items():
                self.put(key, data)
            return
        fs, root = self._fs()
        with self.errors("write"):
            fs.pipe({f"{root}/{k}": v for k, v in objects.items()})

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` (recursively), sorted."""
        if self.local:
            base = self.path / prefix if prefix else self.path
            if not base.is_dir():
                return []
            return sorted(str(p.relative_to(self.path).as_posix()) for p in base.rglob("*") if p.is_file())
        fs, root = self._fs()
        full = f"{root}/{prefix}".rstrip("/")
        with self.errors("list"):
            fs.invalidate_cache(full)  # other writers add objects: never answer from a stale listing
            try:
                found = fs.find(full)
            except FileNotFoundError:
                found = []
        # a server may keep the emptied prefix itself as an entry (SeaweedFS does): not an object of the store
        return sorted(key for name in found if (key := name[len(root) + 1:]))

    def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        if self.local:
            for k in keys:
                (self.path / k).unlink(missing_ok=True)
            return
        fs, root = self._fs()
        with self.errors("delete"):
            fs.rm([f"{root}/{k}" for k in keys])

    def exists(self) -> bool:
        """Anything at all under the root (an empty local directory counts as nothing)."""
        if self.local:
            return self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir()))
        return bool(self.keys())

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Key -> bytes of every object under `prefix`."""
        if self.local:
            return {k: os.path.getsize(self.path / k) for k in self.keys(prefix)}
        fs, root = self._fs()
        full = f"{root}/{prefix}".rstrip("/")
        with self.errors("list"):
            fs.invalidate_cache(full)
            try:
                found = fs.find(full, detail=True)
            except FileNotFoundError:
                found = {}
        return {key: int(info.get("size") or 0) for name, info in found.items() if (key := name[len(root) + 1:])}

    def nbytes(self, prefix: str = "") -> int:
        """Bytes of every object under `prefix` (default: the whole store)."""
        return sum(self.sizes(prefix).values())

    def check_bucket(self) -> None:
        """Fail early, with a clear message, on bad credentials, a missing bucket or no endpoint."""
        if self.local:
            return
        fs, root = self._fs()
        bucket = root.split("/", 1)[0]
        with self.errors("reach the bucket"):
            fs.invalidate_cache(bucket)
            fs.ls(bucket, detail=False)


class _Translate:
    """Turns backend exceptions into a StorageError that names the store and what to check."""

    def __init__(self, loc: Location, what: str):
        self.loc, self.what = loc, what

    def __enter__(self) -> _Translate:
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, TjepaError):
            return False
        msg = str(err)
        if isinstance(err, ImportError):
            raise StorageError(f"{self.loc}: cannot {self.what} ({msg}); for s3:// stores install s3fs "
                               "(pip install 'tjepa[s3]')") from None
        bucket = self.loc.url.split("://", 1)[-1].split("/", 1)[0]
        endpoint = self.loc.options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
        if isinstance(err, PermissionError) or "Forbidden" in msg or "AccessDenied" in msg or "signature" in msg:
            raise StorageError(
                f"{self.loc}: access denied while trying to {self.what} ({msg}); check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY (or the key/secret in --storage-options)") from None
        if isinstance(err, FileNotFoundError) and ("bucket" in msg.lower() or "Not Found" in msg):
            raise StorageError(f"{self.loc}: the bucket {bucket!r} does not exist at {endpoint} "
                               f"(create it first, or fix the URL)") from None
        if isinstance(err, OSError | TimeoutError) or "connect" in msg.lower():
            raise StorageError(f"{self.loc}: cannot {self.what} at {endpoint} ({type(err).__name__}: {msg}); "
                               "is the endpoint reachable (AWS_ENDPOINT_URL)?") from None
        return False


def locate(store: str | os.PathLike | Location, options: Mapping[str, Any] | None = None) -> Location:
    """The one way to name a store: a local path or a URL, with its fsspec options
    (explicit ones, else the process-wide --storage-options)."""
    if isinstance(store, Location):
        return store if options is None else Location(store.url, dict(options))
    name = os.fspath(store)
    if name.startswith("file://"):
        name = name[len("file://"):]
    if not is_url(name):
        return Location(str(Path(name)))
    scheme, rest = name.split("://", 1)
    if "@" in rest.split("/", 1)[0]:
        raise TjepaError(f"{scheme}://...: credentials inside a store URL are refused (they would end up in "
                         "logs and run files); use the AWS environment variables or --storage-options")
    if not rest.strip("/") or "/" not in rest.strip("/"):
        raise TjepaError(f"{name}: name a store inside the bucket, e.g. {scheme}://bucket/name.zarr")
    return Location(f"{scheme}://{rest.rstrip('/')}", dict(_DEFAULT_OPTIONS if options is None else options))


def open_zarr(store: str | os.PathLike | Location, mode: str = "r"):
    """The zarr group at a store root (read-only unless mode is 'r+' or 'w')."""
    import zarr

    loc = locate(store)
    with loc.errors("open the store"):
        return zarr.open_group(store=loc.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)
