"""Checkpoints: plain dicts of tensors and JSON-able values (loadable with `weights_only=True`),
written atomically (`tjepa.atomic`) so a crash never leaves a half-written file behind."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tjepa.atomic import atomic_write
from tjepa.errors import ConfigMismatchError, InputError

FORMAT = "tjepa-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to `path` so that readers see either the old file or the complete new one."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in weights_only-loadable form."""
    np_state = np.random.get_state(legacy=False)
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise InputError("<checkpoint>", f"saved {len(state['cuda'])} CUDA RNG states, this machine has "
                                             f"{torch.cuda.device_count()} devices")
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, epoch: int, best_val_ade: float,
                    config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict after `epoch` finished epochs (1-based count)."""
    return {"format": FORMAT, "version": VERSION, "epoch": int(epoch), "best_val_ade": float(best_val_ade),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "config": config, "metrics": metrics}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint (weights_only: no code runs on load)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise InputError(path, "no such checkpoint") from err
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise InputError(path, f"unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, "not a tjepa checkpoint")
    if ckpt.get("version") != VERSION:
        raise InputError(path, f"checkpoint version {ckpt.get('version')!r}; this code reads {VERSION}")
    return ckpt


def restore_training(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """Load a `latest` checkpoint into model, optimizer and scaler; returns it (epoch, best, rng...).

    Loaded on the CPU: RNG states must stay CPU tensors; model and optimizer copy onto their device.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        detail = " ".join(str(err).split())
        first = detail if len(detail) <= 240 else detail[:240] + "..."
        raise ConfigMismatchError(
            f"{path}: this checkpoint was written by a model of another configuration ({first}); "
            f"use another --out, or --no-resume to start the run over") from err
    if ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt


def truncate_metrics(path: Path, epoch: int) -> None:
    """Drop metrics.jsonl lines of epochs after `epoch` (written after the checkpoint a resume uses)."""
    import json

    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
        path.write_text("".join(ln + "\n" for ln in lines))


def load_run_model(run_dir: str | Path, which: str = "best",
                   map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a run (in eval mode) from RUN/ckpt_{which}.pt, and that checkpoint
    (its `config` is the run document of RUN/config.json, `epoch` and `metrics` say when it was saved)."""
    from tjepa.train.config import ModelConfig
    from tjepa.train.model import ThinkJEPA

    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    ckpt = load_checkpoint(Path(run_dir) / f"ckpt_{which}.pt", map_location=map_location)
    model = ThinkJEPA(ModelConfig.from_dict(ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), ckpt
