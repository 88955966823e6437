"""Frozen dataclass configs to and from plain data: the one mechanism every stage uses.

- `to_dict(cfg)`: JSON-able dict (tuples -> lists, Paths -> str, nested configs -> dicts). Fields
  declared `compare=False` (load paths and other machine-local details) are not part of a config's
  identity and are left out.
- `from_dict(cls, data)`: the dataclass back, typed and validated: an unknown key is an error naming
  it and listing the valid ones; a value is converted to the field's annotated type by pydantic
  (lists -> tuples, "3" -> 3) or refused naming the field and the expected type; the dataclass's own
  `__post_init__` checks run last.
- `overrides(["a.b=1", ...])` and `load_file(path)`: the nested dicts of `--set` and `--config`;
  `merge` layers them. `config_diff` is the one readable diff of two config documents.

Command-line values stay text until the target field is known, so `--set x.name=no` gives the
string "no" for a str field and False for a bool one.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path, PurePath
from typing import Any, TypeVar

from tjepa.errors import ConfigError, ConfigMismatchError, InputError

C = TypeVar("C")
_ABSENT = object()


class UnknownKeyError(ConfigError):
    """A key that is not a field of the config dataclass."""


class Text(str):
    """A value typed on the command line: converted once the field's type is known."""


def plain(obj: Any, where: str = "config", finite: bool = False) -> Any:
    """Plain JSON types only (dicts, lists, str, int, float, bool, None); anything else raises TypeError.

    With `finite`, NaN and infinities raise too (NaN != NaN would make a config never match itself)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.compare}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[k] = plain(v, f"{where}.{k}", finite)
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v, f"{where}[{i}]", finite) for i, v in enumerate(obj)]
    if isinstance(obj, enum.Enum):
        return plain(obj.value, where, finite)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if obj is None or isinstance(obj, (bool, str)):
        return str(obj) if isinstance(obj, Text) else obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()  # numpy scalar
    if isinstance(obj, (bool, int)):
        return obj
    if isinstance(obj, float):
        if finite and not math.isfinite(obj):
            raise ValueError(f"{where}: non-finite float {obj!r} cannot be fingerprinted")
        return obj
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON-serialisable ({obj!r})")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-able dict (see the module docstring)."""
    return plain(cfg, type(cfg).__name__)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _adapter(hint: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _admits(hint: Any, kind: type) -> bool:
    if hint is kind or hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_admits(a, kind) for a in typing.get_args(hint))
    return False


def _from_text(text: str, hint: Any) -> Any:
    if _admits(hint, str) and text not in ("null", "~"):
        return str(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return str(text)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def check_keys(cls: type, data: Mapping[str, Any], where: str | None = None,
               allowed: Iterable[str] | None = None) -> None:
    """UnknownKeyError naming every key of `data` that `cls` has no field for (or not in `allowed`)."""
    valid = tuple(allowed) if allowed is not None else field_names(cls)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        where = where or cls.__name__
        raise UnknownKeyError(f"unknown {where} keys {unknown}; valid keys: {', '.join(sorted(valid))}")


def convert(cls: type, name: str, value: Any, where: str) -> Any:
    """`value` as the annotated type of field `name` of `cls` (ConfigError naming it otherwise)."""
    hint = _hints(cls)[name]
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, f"{where}.{name}")
    if isinstance(value, Text):
        value = _from_text(value, hint)
    if isinstance(value, bool) and not _admits(hint, bool):
        raise ConfigError(f"{where}.{name}: expected {_type_name(hint)}, got {value!r}")
    from pydantic import ValidationError

    try:
        return _adapter(hint).validate_python(value)
    except ValidationError as err:
        why = err.errors()[0]["msg"]
        raise ConfigError(f"{where}.{name}: expected {_type_name(hint)}, got {value!r} ({why})") from None


def converted(cls: type, data: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """The fields in `data`, each converted to its type (a partial config: overrides of a preset)."""
    where = where or cls.__name__
    check_keys(cls, data, where)
    return {k: convert(cls, k, v, where) for k, v in data.items()}


def from_dict(cls: type[C], data: Mapping[str, Any], where: str | None = None) -> C:
    """A config dataclass from plain data: unknown keys, wrong types and failed checks are ConfigErrors."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields, got {data!r}")
    values = converted(cls, data, where)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def from_saved(cls: type[C], data: Mapping[str, Any]) -> C:
    """A config read back from a document tjepa wrote (checkpoint, run file): a key this version does
    not know means a newer tjepa wrote it, a ConfigMismatchError."""
    try:
        return from_dict(cls, data)
    except UnknownKeyError as err:
        raise ConfigMismatchError(f"{err} (saved by a newer tjepa?)") from None


class ConfigMixin:
    """`to_dict` / `from_dict` / `replace` for a frozen dataclass config, through this module."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return from_dict(cls, data)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


# ---- documents: files, --set overrides, layering -------------------------------------------------
def overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["model.depth=1", "train.epochs=3"]` -> {"model": {"depth": Text("1")}, "train": {...}}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected dotted.key=value (for example model.depth=1)")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is set to a value and used as a section")
        node[leaf] = Text(value)
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) config document: a mapping of sections."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(path, f"cannot read the config file ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML ({err})") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(path, f"a config file is a mapping of sections, got {type(doc).__name__}")
    return doc


def merge(*docs: Mapping[str, Any]) -> dict[str, Any]:
    """Later documents win; nested mappings merge key by key."""
    out: dict[str, Any] = {}
    for doc in docs:
        for k, v in doc.items():
            if isinstance(v, Mapping) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = dict(v) if isinstance(v, Mapping) else v
    return out


def select(doc: Mapping[str, Any], names: Iterable[str], where: str = "config") -> dict[str, Any]:
    """Only the sections `names` of `doc` (a shared file such as params.yaml); each must be there."""
    names = list(names)
    missing = [n for n in names if n not in doc]
    if missing:
        raise ConfigError(f"{where}: no section {missing}; it has {', '.join(map(str, doc)) or 'none'}")
    return {n: doc[n] for n in names}


def sections(doc: Mapping[str, Any], valid: Iterable[str], where: str = "config") -> dict[str, dict]:
    """Each top-level section of `doc` (missing ones empty); unknown sections are named."""
    valid = tuple(valid)
    unknown = sorted(set(doc) - set(valid))
    if unknown:
        raise UnknownKeyError(f"unknown {where} sections {unknown}; valid sections: {', '.join(valid)}")
    out = {}
    for name in valid:
        sec = doc.get(name) or {}
        if not isinstance(sec, Mapping):
            raise ConfigError(f"{where} section {name!r} must be a mapping of keys, got {sec!r}")
        out[name] = dict(sec)
    return out


# ---- the one diff ---------------------------------------------------------------------------------
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of nested dicts (lists are leaves)."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj:
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def config_diff(old: Any, new: Any, ignore: Iterable[str] = (), show: Callable[[Any], str] = _json,
                absent: str = "(absent)") -> list[str]:
    """One line per differing leaf, `key: old -> new` (dotted keys; lists compared whole); keys in
    `ignore` are skipped. `show` renders a value (JSON by default)."""
    a, b = flatten(plain(old)), flatten(plain(new))
    skip = set(ignore)
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if key in skip or (va is not _ABSENT and vb is not _ABSENT and _json(va) == _json(vb)):
            continue
        fa = absent if va is _ABSENT else show(va)
        fb = absent if vb is _ABSENT else show(vb)
        lines.append(f"{key or '(root)'}: {fa} -> {fb}")
    return lines
