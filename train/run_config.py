"""The training configuration and the run directory (`RUN/`): its files, its config document, and
the decision to start fresh or resume.

RUN/config.json   {"train": TrainConfig, "model": ModelConfig, "store": {path, fingerprint}, "split": ...}
RUN/splits.json   group-disjoint split (see splits.py)
RUN/metrics.jsonl one line per finished epoch
RUN/ckpt_latest.pt, RUN/ckpt_best.pt
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjepa.atomic import atomic_write_json, remove_stale_temps
from tjepa.cache_schema.storage import is_url
from tjepa.config_io import ConfigMixin, config_diff, from_dict, from_saved, sections
from tjepa.errors import ConfigError, ConfigMismatchError, InputError, TjepaError
from tjepa.train.config import PRESETS, STORE_FIELDS, model_overrides

# Settings that change how fast a run goes, not what it computes: a resumed run may change them.
OPERATIONAL = frozenset({"num_workers", "prefetch", "preload", "device", "progress", "row_cache", "row_cache_gib"})


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    """Stage-two training settings (published defaults, docs/method.md section 6)."""

    epochs: int = 200
    batch_size: int = 16  # per process (per GPU under torchrun)
    seed: int = 42
    lr_head: float = 1e-3  # x head_lr_decay at epochs E/3 and 2E/3
    lr_predictor: float = 1e-4  # predictor + guidance, flat
    weight_decay: float = 1e-4
    head_lr_decay: float = 0.1
    amp: bool = True  # fp16 autocast + GradScaler; takes effect on CUDA only
    num_workers: int = 0
    prefetch: int = 2  # batches read ahead (by threads, or per worker process) while the model trains
    row_cache: str | None = None  # local directory keeping what was read from the store (train/row_cache.py)
    row_cache_gib: float = 50.0  # its size bound
    preload: bool = False
    levels: tuple[int, ...] | None = None  # captured decoder layer numbers to use (None = all)
    preset: str = "paper"  # the model config the run starts from (train.config.PRESETS)
    # data
    limit: int | None = None  # cap on train and val rows each (quick runs); splits.json stays complete
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 42  # independent of `seed`, so runs with different seeds share one split
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # global: a permutation of all rows; shards: shuffled shard order + a shuffle buffer over
    # `shuffle_window` shards (for stores on object storage). Both a pure function of (seed, epoch).
    shuffle: str = "global"
    shuffle_window: int = 4

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 0 or self.prefetch < 0:
            raise TjepaError(f"epochs and batch_size must be >= 1, num_workers and prefetch >= 0, got "
                             f"{self.epochs}, {self.batch_size}, {self.num_workers}, {self.prefetch}")
        if self.preset not in PRESETS:
            raise TjepaError(f"unknown model preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.shuffle not in ("global", "shards") or self.shuffle_window < 1:
            raise TjepaError(f"shuffle must be 'global' or 'shards' and shuffle_window >= 1, got "
                             f"{self.shuffle!r}, {self.shuffle_window}")
        if self.row_cache_gib <= 0:
            raise TjepaError(f"row_cache_gib must be > 0, got {self.row_cache_gib}")
        if self.limit is not None and self.limit < 1:
            raise TjepaError(f"limit must be >= 1 or None, got {self.limit}")
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(int(x) for x in self.levels))
        object.__setattr__(self, "fractions", tuple(float(x) for x in self.fractions))

    def head_milestones(self) -> tuple[int, int]:
        """Epochs (0-based) from which the head lr is decayed once, then twice: E/3 and 2E/3."""
        return self.epochs // 3, (2 * self.epochs) // 3

    def lr_at(self, epoch: int) -> tuple[float, float]:
        """(head lr, predictor lr) during 0-based `epoch`; a pure function, so resume needs no state."""
        steps = sum(epoch >= m for m in self.head_milestones() if m > 0)
        return self.lr_head * self.head_lr_decay**steps, self.lr_predictor

    from_dict = classmethod(from_saved)  # a saved run document's train section


RUN_SECTIONS = ("train", "model")


def run_settings(doc: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """(TrainConfig, model overrides) from a config document with sections `train` (TrainConfig
    fields) and `model` (ModelConfig fields over the preset), typed and validated by the dataclasses.

    A run document (RUN/config.json) is accepted too, so a run can be re-created from its directory:
    its train and model sections are taken, less the model fields that come from the store."""
    if "store" in doc and "tjepa_version" in doc:
        doc = upgrade_document(doc)
        model = {k: v for k, v in (doc.get("model") or {}).items() if k not in STORE_FIELDS}
        doc = {"train": doc.get("train") or {}, "model": model}
    secs = sections(doc, RUN_SECTIONS, "train config")
    cfg, model = from_dict(TrainConfig, secs["train"], "train"), model_overrides(secs["model"])
    try:  # the model config's own checks, now rather than after the store is opened
        PRESETS[cfg.preset].replace(**model)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    return cfg, model


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def latest(self) -> Path:
        return self.root / "ckpt_latest.pt"

    @property
    def best(self) -> Path:
        return self.root / "ckpt_best.pt"


def run_document(train: TrainConfig, model: dict[str, Any], store_path: str, fingerprint: str,
                 levels: tuple[int, ...]) -> dict[str, Any]:
    """The full, JSON-able description of a run (RUN/config.json)."""
    from tjepa import __version__

    return {"train": train.to_dict(), "model": dict(model),
            "store": {"path": store_path if is_url(store_path) else str(Path(store_path).resolve()),
                      "fingerprint": fingerprint},
            "split": {"seed": train.split_seed, "fractions": list(train.fractions)},
            "levels": list(levels), "tjepa_version": __version__}


# Run documents written before the model fields left TrainConfig carried copies of them here; the
# same values are in their "model" section, so reading such a document simply drops these.
LEGACY_TRAIN_KEYS = ("variant", "stream", "level_mode", "conditioning")


def upgrade_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A run document in today's shape (older documents repeat model fields in `train`)."""
    train = doc.get("train")
    if isinstance(train, dict) and any(k in train for k in LEGACY_TRAIN_KEYS):
        doc = {**doc, "train": {k: v for k, v in train.items() if k not in LEGACY_TRAIN_KEYS}}
    return doc


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def with_new_defaults(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with each `train` / `model` key it lacks but `new` has filled in, when `new` holds that
    field's default: a run written before the field existed computed exactly the default (e.g. a run
    from before `model.head` resumes with head="ours"); a non-default new value stays a difference."""
    from tjepa.config_io import plain
    from tjepa.train.config import ModelConfig

    out = dict(old)
    for section, cls in (("train", TrainConfig), ("model", ModelConfig)):
        have, want = old.get(section), new.get(section)
        if not isinstance(have, dict) or not isinstance(want, dict):
            continue
        filled = dict(have)
        for f in dataclasses.fields(cls):
            default = _field_default(f)
            if f.name not in have and f.name in want and default is not dataclasses.MISSING \
                    and plain(want[f.name]) == plain(default):
                filled[f.name] = want[f.name]
        out[section] = filled
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that changes what a run computes (paths, versions and
    operational settings excluded; a key older runs lack counts as its default, `with_new_defaults`)."""
    ignore = {f"train.{k}" for k in OPERATIONAL} | {"store.path", "tjepa_version"}
    old, new = upgrade_document(old), upgrade_document(new)
    return config_diff(with_new_defaults(old, new), new, ignore, show=repr, absent="'<absent>'")


def prepare_run_dir(run_dir: str | Path, doc: dict[str, Any], resume: bool = True) -> tuple[RunPaths, bool]:
    """Create RUN if needed and decide whether to resume; returns (paths, resuming).

    Resuming happens when `resume` and RUN holds a latest checkpoint; its config.json must then
    match `doc` (ConfigMismatchError naming every differing key otherwise). With `resume=False`
    an existing run is started over (with a warning): its checkpoints and metrics are replaced.
    Only call this on the process that writes (rank 0).
    """
    paths = RunPaths(Path(run_dir))
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        probe = paths.root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise InputError(paths.root, f"cannot write the run directory ({err.strerror or err})") from err
    remove_stale_temps(paths.root)  # temp files of writes killed mid-way
    has_ckpt = paths.latest.exists()
    if resume and has_ckpt:
        if not paths.config.exists():
            raise InputError(paths.root, "has a checkpoint but no config.json; cannot tell which run it is")
        try:
            old = json.loads(paths.config.read_text())
        except ValueError as err:
            raise InputError(paths.config, f"not valid JSON ({err})") from err
        diff = config_differences(old, doc)
        if diff:
            raise ConfigMismatchError(
                f"{paths.root} holds a run with a different configuration: " + "; ".join(diff)
                + ". Use another --out, or --no-resume to start this directory over.")
        atomic_write_json(paths.config, doc)  # operational settings may have changed
        return paths, True
    if has_ckpt or paths.metrics.exists():
        why = "--no-resume" if has_ckpt else "no checkpoint to resume from"
        warnings.warn(f"{paths.root}: starting over ({why}); replacing its checkpoints and metrics",
                      UserWarning, stacklevel=2)
    for p in (paths.latest, paths.best, paths.metrics, paths.splits):
        p.unlink(missing_ok=True)
    atomic_write_json(paths.config, doc)
    return paths, False


def run_split_dataset(run_dir: str | Path, store: str | Path, split: str = "test", preload: bool = False):
    """A CacheDataset of one split of a finished run (for evaluation), with the run's levels and
    token setting. ConfigMismatchError when `store` is not the extraction the run was trained on."""
    from tjepa.train.conditioning import needs_tokens
    from tjepa.train.data import CacheDataset, read_index
    from tjepa.train.splits import read_splits

    paths = RunPaths(Path(run_dir))
    try:
        doc = json.loads(paths.config.read_text())
    except (OSError, ValueError) as err:
        raise InputError(paths.config, f"not a readable run config ({err})") from err
    index = read_index(store)
    if index.fingerprint != doc["store"]["fingerprint"]:
        raise ConfigMismatchError(f"{store}: extraction fingerprint {index.fingerprint[:12]} differs from the "
                                  f"store run {paths.root} was trained on ({doc['store']['fingerprint'][:12]}, "
                                  f"{doc['store']['path']})")
    rows = read_splits(paths.root, index.videos, index.done).rows(split)
    return CacheDataset(store, rows, levels=tuple(doc["levels"]),
                        with_tokens=needs_tokens(doc["model"]["conditioning"]), preload=preload)
