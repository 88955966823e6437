"""Load a trained run for evaluation: its run document, a checkpoint (weights only, no code runs on
load), the rebuilt model, and the rows of a split, all checked against the store being evaluated.

Checks, each a clear error rather than a silent mix:
- the store's fingerprint must be the one the run was trained on (ConfigMismatchError);
- RUN/config.json and the checkpoint's own run document must agree on the model and the store;
- the checkpoint's weights must fit the model its config describes (InputError naming the file);
- every video of RUN/splits.json must be a done row of the store (train.splits.read_splits);
- an evaluated split must hold at least one row (TjepaError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tjepa.devices import resolve_device
from tjepa.errors import ConfigMismatchError, InputError, TjepaError
from tjepa.train.checkpoint import load_run_model
from tjepa.train.conditioning import needs_tokens
from tjepa.train.config import ModelConfig
from tjepa.train.data import CacheDataset, StoreIndex, read_index
from tjepa.train.model import ThinkJEPA
from tjepa.train.run_config import RunPaths, TrainConfig, upgrade_document
from tjepa.train.splits import SPLITS, Splits, read_splits

__all__ = ["LoadedRun", "load_run", "read_run_document", "resolve_device"]

CHECKPOINTS = ("best", "latest")


def read_run_document(run_dir: str | Path) -> dict[str, Any]:
    """RUN/config.json as written by `tjepa train`."""
    path = RunPaths(Path(run_dir)).config
    if not path.is_file():
        raise InputError(path, "not found: is this a run directory written by `tjepa train`?")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"not readable JSON ({err})") from err
    missing = [k for k in ("train", "model", "store", "levels") if k not in doc]
    if missing or "fingerprint" not in (doc.get("store") or {}):
        raise InputError(path, f"not a run document (missing {missing or ['store.fingerprint']})")
    return doc


def check_fingerprint(doc: dict[str, Any], index: StoreIndex, run_dir: str | Path) -> None:
    """ConfigMismatchError unless the store is the one (same extraction config) the run trained on."""
    trained = str(doc["store"]["fingerprint"])
    if index.fingerprint != trained:
        raise ConfigMismatchError(
            f"{index.path}: store fingerprint {index.fingerprint[:12]}… differs from {trained[:12]}…, the "
            f"store run {run_dir} was trained on ({doc['store'].get('path', '?')}); its features come from "
            f"another extraction config, so the model's scores on it would mean nothing. Evaluate on the "
            f"training store, or retrain on this one.")


@dataclass
class LoadedRun:
    """A run ready to evaluate (the model is in eval mode on `device`)."""

    run_dir: Path
    store: str
    doc: dict[str, Any]  # the run document the checkpoint was saved with
    train_cfg: TrainConfig
    model_cfg: ModelConfig
    model: ThinkJEPA
    checkpoint: Path
    epoch: int
    best_val_ade: float
    splits: Splits
    index: StoreIndex
    device: torch.device

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.doc["levels"])

    @property
    def with_tokens(self) -> bool:
        return needs_tokens(self.model_cfg.conditioning)

    def split_rows(self, split: str) -> tuple[int, ...]:
        """Store rows of `split`; TjepaError when it has none (nothing to evaluate)."""
        if split not in SPLITS:
            raise TjepaError(f"unknown split {split!r}; choose one of {SPLITS}")
        rows = self.splits.rows(split)
        if not rows:
            raise TjepaError(f"the {split} split of {self.run_dir} has no rows ({self.run_dir / 'splits.json'}): "
                             f"nothing to evaluate; pick another --split or train with a non-zero "
                             f"{split} fraction")
        return rows

    def dataset(self, rows: tuple[int, ...], preload: bool = False) -> CacheDataset:
        """The rows as stage-two items, with the levels (and tokens) the run trained with."""
        return CacheDataset(self.store, rows, levels=self.levels, with_tokens=self.with_tokens, preload=preload)


def load_run(run_dir: str | Path, store: str | Path, checkpoint: str = "best",
             device: str | torch.device = "cpu") -> LoadedRun:
    """Load RUN's `ckpt_best.pt` (or `ckpt_latest.pt`) and everything needed to evaluate it on `store`."""
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise TjepaError(f"--checkpoint {checkpoint!r}: choose one of {CHECKPOINTS}")
    paths = RunPaths(run_dir)
    doc = read_run_document(run_dir)
    index = read_index(store)
    check_fingerprint(doc, index, run_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ckpt_path = paths.best if checkpoint == "best" else paths.latest
    if not ckpt_path.is_file():
        raise InputError(ckpt_path, "not found: the run has not finished an epoch yet (or was trained "
                                    "elsewhere); train it with `tjepa train` first")
    try:  # torch.load(weights_only=True) inside
        model, ckpt = load_run_model(run_dir, checkpoint, map_location=dev)
    except RuntimeError as err:  # load_state_dict: missing / unexpected / mis-shaped weights
        raise InputError(ckpt_path, f"weights do not fit the model of its config ({err})") from err
    saved = ckpt.get("config") or {}
    for key in ("model", "store"):
        if key in saved and _canon(saved[key], key) != _canon(doc[key], key):
            raise ConfigMismatchError(
                f"{ckpt_path}: its {key} settings differ from {paths.config}; the directory mixes two runs. "
                f"Retrain it, or restore the config.json it was written with.")
    doc = {**doc, **saved} if saved else doc
    splits = read_splits(run_dir, index.videos, index.done)
    return LoadedRun(run_dir=run_dir, store=index.path, doc=doc, train_cfg=TrainConfig.from_dict(upgrade_document(doc)["train"]),
                     model_cfg=model.cfg, model=model, checkpoint=ckpt_path, epoch=int(ckpt["epoch"]),
                     best_val_ade=float(ckpt["best_val_ade"]), splits=splits, index=index, device=dev)


def _canon(block: dict[str, Any], key: str) -> str:
    """Comparable form of a run-document block (the store path may move; the fingerprint may not)."""
    if key == "store":
        block = {"fingerprint": block.get("fingerprint")}
    return json.dumps(block, sort_keys=True)
