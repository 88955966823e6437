"""`StoreReader`: read-only access to a feature store for stage two and evaluation.

Readers name arrays by field (`"vjepa_past"`, `"joints_future"`, `"past_idx"`, ...: `layout.PATHS`),
never by path, so the store's arrangement can change here alone. A store is named by a local path or
a URL (`open_group` is the one place that turns a location into a zarr group; URL schemes such as
`s3://` plug in there, with `storage_options`). A reader is safe to pickle into DataLoader workers
and to inherit through fork: the zarr handles are reopened lazily in each process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tjepa.cache_schema.layout import ARRAYS, PATHS, StoreLayout
from tjepa.cache_schema.storage import Location as StoreLocation
from tjepa.cache_schema.storage import locate, open_zarr
from tjepa.cache_schema.store import DONE, read_root_attrs
from tjepa.errors import StoreFormatError

Location = str | os.PathLike | StoreLocation
SPECS = {spec.field: spec for spec in ARRAYS}


def open_group(location: Location, storage_options: dict | None = None):
    """The store's root zarr group, read-only (a path or URL: `storage.locate`)."""
    return open_zarr(locate(location, storage_options), mode="r")


def _find_layers(node: Any) -> list[list[int]]:
    found: list[list[int]] = []
    if isinstance(node, dict):
        for key, val in node.items():
            if key == "layers" and isinstance(val, (list, tuple)) and all(isinstance(x, int) for x in val):
                found.append([int(x) for x in val])
            else:
                found.extend(_find_layers(val))
    return found


def captured_layers(config: dict) -> tuple[int, ...]:
    """The decoder layer numbers the store captured: `config["encoders"]["layers"]` as stage one
    writes it; for stores written by other tools, the one `layers` list found anywhere in the config."""
    layers = (config.get("encoders") or {}).get("layers") if isinstance(config.get("encoders"), dict) else None
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(x, int) for x in layers):
        return tuple(int(x) for x in layers)
    found = {tuple(x) for x in _find_layers(config)}
    if len(found) != 1:
        raise StoreFormatError(f"the store config must name exactly one `layers` list of captured decoder "
                               f"layers, found {sorted(found) or 'none'}")
    return found.pop()


class StoreReader:
    """A committed view of one store: attributes, typed layout, index columns and feature arrays."""

    def __init__(self, location: Location, storage_options: dict | None = None):
        self._loc = locate(location, storage_options)  # keeps the options (never in repr or messages)
        self.location = str(self._loc)
        self.attrs = read_root_attrs(self._loc)  # StoreFormatError unless a store we can read
        self.layout = StoreLayout.from_dict(self.attrs["layout"])
        self.config: dict = dict(self.attrs["config"])
        self.fingerprint = str(self.attrs["fingerprint"])
        self.rows = int(self.attrs["rows"])  # committed rows: arrays are grown before this is updated
        self.layers = captured_layers(self.config)
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self._pid = os.getpid()
        self._inherited: list[Any] = []

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_group"], state["_arrays"], state["_inherited"] = None, {}, []
        return state

    def _check_process(self) -> None:
        """A forked child (DataLoader workers) must not use the parent's handles: on a bucket their
        HTTP sessions belong to the parent's event loop, which the child does not have. They are kept,
        never used, so that their finalisers cannot touch the parent's connections either."""
        if self._pid != os.getpid():
            self._inherited.append((self._group, self._arrays))
            self._group, self._arrays, self._pid = None, {}, os.getpid()

    @property
    def group(self):
        self._check_process()
        if self._group is None:
            self._group = open_zarr(self._loc, mode="r")
        return self._group

    def has(self, field: str) -> bool:
        return PATHS[field] in self.group

    @property
    def has_targets(self) -> bool:
        return self.has("joints_future")

    @property
    def has_tokens(self) -> bool:
        return self.has("prompt_tokens") and self.has("think_tokens")

    def array(self, field: str):
        """The zarr array of `field` (cached per process: opening one re-reads its metadata)."""
        self._check_process()
        if field not in self._arrays:
            try:
                self._arrays[field] = self.group[PATHS[field]]
            except KeyError as err:
                raise StoreFormatError(f"{self.location}: array {PATHS.get(field, field)!r} is missing") from err
        return self._arrays[field]

    def decode(self, field: str, x: Any) -> np.ndarray:
        """Stored values of `field` as readers use them (per-token states: bfloat16 bits -> float32)."""
        return SPECS[field].decode(x)

    def read(self, field: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """`field` for `rows` (None: every committed row), one read for all of them, decoded."""
        arr = self.array(field)
        if rows is None:
            return self.decode(field, np.asarray(arr[: self.rows]))
        idx = np.asarray(rows, np.int64)
        if idx.size == 0:
            return self.decode(field, np.zeros((0, *arr.shape[1:]), arr.dtype))
        return self.decode(field, np.asarray(arr.oindex[idx]))

    def done(self) -> np.ndarray:
        """bool [rows]: the rows whose status is done."""
        return self.read("status") == DONE

    def strings(self, field: str) -> tuple[str, ...]:
        return tuple(str(v) for v in self.read(field).tolist())


def open_reader(location: Location, storage_options: dict | None = None) -> StoreReader:
    return StoreReader(location, storage_options)
