"""One canonical serialisation of an extraction config, its sha256, and a readable diff of two configs."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from pathlib import PurePath
from typing import Any

_ABSENT = object()


def canonicalize(obj: Any, where: str = "config") -> Any:
    """Plain JSON types only: tuples become lists, Paths strings, dataclasses dicts; anything else raises.

    Non-finite floats raise too: NaN != NaN would make a config never match itself.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[k] = canonicalize(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [canonicalize(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, enum.Enum):
        return canonicalize(obj.value, where)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()  # numpy scalar
    if isinstance(obj, bool) or isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: non-finite float {obj!r} cannot be fingerprinted")
        return obj
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON-serialisable ({obj!r})")


def canonical_json(config: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: equal configs give byte-identical strings."""
    return json.dumps(canonicalize(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def fingerprint(config: Any) -> str:
    """sha256 hex digest of the canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict) and obj:
        for k in sorted(obj):
            _flatten(obj[k], f"{prefix}.{k}" if prefix else k, out)
    else:
        out[prefix] = obj


def config_diff(old: Any, new: Any) -> list[str]:
    """One line per differing leaf key, `key: old -> new` (dotted keys; lists compared whole)."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(canonicalize(old), "", a)
    _flatten(canonicalize(new), "", b)

    def show(v: Any) -> str:
        return "(absent)" if v is _ABSENT else json.dumps(v, sort_keys=True, ensure_ascii=False)

    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va is _ABSENT or vb is _ABSENT or json.dumps(va, sort_keys=True) != json.dumps(vb, sort_keys=True):
            lines.append(f"{key or '(root)'}: {show(va)} -> {show(vb)}")
    return lines
