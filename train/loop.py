"""The stage-two trainer: store -> group-disjoint splits -> model -> AdamW with the published schedule
-> per-epoch validation, metrics.jsonl and atomic checkpoints; exact resume; DDP under torchrun.

Reproducibility: the shuffle order of epoch e is a function of (seed, e) only, the learning rates are
a pure function of the epoch (`TrainConfig.lr_at`), and checkpoints carry model, optimizer, scaler
and every RNG state, so on CPU an interrupted and resumed run equals the uninterrupted one.
Checkpoint selection reads the val split only; the test split is never opened here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler, SequentialSampler

from tjepa.cache_schema.storage import locate
from tjepa.devices import resolve_device
from tjepa.errors import ConfigError, TjepaError
from tjepa.train.checkpoint import (
    atomic_save,
    make_checkpoint,
    restore_training,
    set_rng_state,
    truncate_metrics,
)
from tjepa.train.data import CacheDataset, read_index, to_device
from tjepa.train.loader import BatchLoader, worker_context
from tjepa.train.rollout import resolve_steps, rollout_validation
from tjepa.train.row_cache import RowCache
from tjepa.train.run_config import RunPaths, TrainConfig, prepare_run_dir, run_document
from tjepa.train.shard_order import ShardShuffleSampler
from tjepa.train.splits import Splits, make_splits, read_splits, write_splits
from tjepa.train.windows import SequenceDataset, WindowDataset, WindowSpec


class NonFiniteLossError(TjepaError):
    """Training stopped on a NaN/inf loss; the last good checkpoint is left untouched."""


class EpochSampler(Sampler[int]):
    """A shuffle whose order depends only on (seed, epoch): no sampler state to checkpoint."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class Dist:
    """Process layout: a single process unless launched by torchrun with WORLD_SIZE > 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _setup(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda" and world > 1 and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return Dist(rank=rank, world=world, local_rank=local, device=dev, owns_group=owns)




def store_model_overrides(store_config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` plus what the store's sampling demands: a dense observed window spreads its frame
    slots unevenly in time, so RoPE must read real frame times (slot indices would be wrong)."""
    window = int((store_config.get("sampling") or {}).get("dense_window", 0) or 0)
    if not window:
        return dict(overrides)
    if overrides.get("positions", "frame_time") != "frame_time":
        raise TjepaError(f"the store's V-JEPA clip is a dense window of {window} frames: positions must be "
                         f"'frame_time', not {overrides['positions']!r}")
    return {**overrides, "positions": "frame_time"}


def _head_group(group: dict[str, Any]) -> bool:
    name = group.get("name")
    if name is None:
        raise TjepaError("model.param_groups() must name each group ('name' key) so the trainer "
                         "knows which learning rate schedule it follows")
    return str(name).startswith("head")


@torch.no_grad()
def evaluate(core: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]], device: torch.device, amp: bool,
             world: int = 1) -> dict[str, float]:
    """Masked, sample-weighted val ADE / FDE / Acc@5cm (tjepa.metrics.TrajectoryMeter) and the mean
    latent loss. Each rank scores its own shard; sums are all-reduced. Runs the bare module, not
    the DDP wrapper, so ranks with different shard sizes never wait on each other."""
    from tjepa.metrics import TrajectoryMeter

    core.eval()
    meter, lat, n = TrajectoryMeter(horizons=()), 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = core(batch)
            losses = core.loss(batch, out)
        meter.update(out.traj_world.float(), batch["joints_future"], batch["valid_future"])
        b = batch["joints_future"].shape[0]
        lat, n = lat + float(losses["latent"]) * b, n + b
    m = meter.compute() if n else {"ade": 0.0, "fde": 0.0, "acc": 0.0, "n": 0, "n_fde": 0}
    k, kf = m["n"], m["n_fde"]
    sums = torch.tensor([m["ade"] * k if k else 0.0, m["fde"] * kf if kf else 0.0,
                         m["acc"] * k if k else 0.0, k, kf, lat, n], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(sums)
    ade, fde, acc, k, kf, lat, n = sums.tolist()
    nan = float("nan")
    return {"val_ade": ade / k if k else nan, "val_fde": fde / kf if kf else nan,
            "val_acc": acc / k if k else nan, "val_latent": lat / n if n else nan}


class EpochBar:
    """A rich progress bar for one epoch (on stderr) with samples/s and the running loss."""

    def __init__(self, epoch: int, epochs: int, total: int, enabled: bool = True):
        self.enabled, self.epoch, self.epochs, self.total = enabled, epoch, epochs, total
        self._p: Any = None

    def __enter__(self) -> EpochBar | None:
        if not self.enabled:
            return None
        from tjepa.progress import progress_bar

        self._p = progress_bar("epoch {task.fields[ep]}", "samples", "loss {task.fields[loss]:.4g}",
                               transient=True)
        self._p.start()
        self._task = self._p.add_task("train", total=self.total, ep=f"{self.epoch}/{self.epochs}",
                                      loss=float("nan"))
        return self

    def advance(self, n: int, loss: float) -> None:
        self._p.update(self._task, advance=n, loss=loss)

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.stop()

    @staticmethod
    def summary(m: dict[str, Any]) -> None:
        from rich.console import Console

        Console(stderr=True).print(
            f"epoch {m['epoch']}: loss {m['train_loss']:.4g} (traj {m['train_traj']:.4g}, latent "
            f"{m['train_latent']:.4g}) | val ADE {m['val_ade']:.4f} FDE {m['val_fde']:.4f} Acc "
            f"{m['val_acc']:.3f}{' *' if m['best'] else ''} | {m['samples_per_s']:.1f} samples/s, "
            f"{m['time']:.1f}s", highlight=False)


class Trainer:
    """Build everything for one run directory; `fit()` trains (resuming when RUN allows it).

    With `window` (rollout mode, `tjepa train --rollout`) the model is the `obs -> fut` window model,
    trained on the leak-free windows of the train videos (train/windows.py) and selected by the
    recursive rollout on the val videos; `splits_from` names a run directory whose splits it reuses."""

    def __init__(self, cfg: TrainConfig, store: str | Path, run_dir: str | Path, *, resume: bool = True,
                 progress: bool = True, model_overrides: dict[str, Any] | None = None,
                 window: WindowSpec | None = None, splits_from: str | Path | None = None):
        from tjepa.train.conditioning import needs_tokens
        from tjepa.train.config import ModelConfig
        from tjepa.train.config import model_overrides as model_overrides_of
        from tjepa.train.config import preset as preset_config
        from tjepa.train.model import ThinkJEPA

        self.cfg, self.progress, self.window = cfg, progress, window
        self.d = _setup(cfg.device)
        if window is not None and self.d.world > 1:
            raise TjepaError("rollout mode (--rollout) trains in one process; launch it without torchrun")
        self.amp = cfg.amp and self.d.device.type == "cuda"
        index = read_index(store)
        overrides = store_model_overrides(index.config, model_overrides_of(model_overrides))
        conditioning = overrides.get("conditioning", preset_config(cfg.preset).conditioning)
        with_tokens = needs_tokens(conditioning)
        probe = CacheDataset(store, rows=[], levels=cfg.levels, with_tokens=with_tokens)
        try:
            self.model_cfg = ModelConfig.from_store_layout(probe.model_layout(), cfg.preset, **overrides)
        except ValueError as err:  # a setting that does not fit this store (e.g. pairs with To != Tf)
            raise ConfigError(f"model: {err}") from None
        if window is not None:
            self.model_cfg = window.model_config(self.model_cfg)
            self.rollout_steps = resolve_steps(index.layout.to_dict(), window.obs, window.fut)
        self.doc = run_document(cfg, self.model_cfg.to_dict(), index.path, index.fingerprint, probe.levels)
        if window is not None:
            self.doc.update(window=dataclasses.asdict(window),
                            selection={"metric": "val rollout ADE", "steps": self.rollout_steps, "camera": "last"})
        self.paths = RunPaths(Path(run_dir))
        if self.d.main:
            prepare_run_dir(run_dir, self.doc, resume)
        self.d.barrier()
        self.resuming = resume and self.paths.latest.exists()

        if self.resuming and self.paths.splits.exists():
            self.splits: Splits = read_splits(run_dir, index.videos, index.done)
        elif splits_from is not None and RunPaths(Path(splits_from)).splits.exists():
            self.splits = read_splits(splits_from, index.videos, index.done)
            if self.d.main:
                write_splits(run_dir, self.splits, index.videos)
        else:
            self.splits = make_splits(index.groups, index.done, cfg.fractions, cfg.split_seed)
            if self.d.main:
                write_splits(run_dir, self.splits, index.videos)
        cache = RowCache(cfg.row_cache, cfg.row_cache_gib) if cfg.row_cache else None
        lim = slice(None, cfg.limit)
        val_rows = self.splits.val[lim][self.d.rank::self.d.world]
        self.train_ds: Dataset
        if window is None:
            self.train_ds = CacheDataset(store, self.splits.train[lim], cfg.levels, with_tokens, cfg.preload,
                                         row_cache=cache)
            self.val_ds: Dataset = CacheDataset(store, val_rows, cfg.levels, with_tokens, cfg.preload, row_cache=cache)
        else:
            self.train_ds = WindowDataset(store, self.splits.train[lim], window, cfg.levels, with_tokens,
                                          cfg.preload)
            self.val_ds = SequenceDataset(store, val_rows, cfg.levels, with_tokens, cfg.preload)
            if len(self.val_ds) == 0:
                raise TjepaError(f"{run_dir}: the val split has no rows to select the rollout model on")

        torch.manual_seed(cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
        self.core = ThinkJEPA(self.model_cfg).to(self.d.device)
        if self.d.rank:
            torch.manual_seed(cfg.seed + self.d.rank)  # distinct dropout masks per rank
        self.model: torch.nn.Module = self.core
        if self.d.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.core, device_ids=[self.d.device.index] if self.d.device.type == "cuda" else None,
                static_graph=True)  # ablations (one stream) leave the same parameters unused every step
        groups = self.core.param_groups(cfg.lr_head, cfg.lr_predictor, cfg.weight_decay)
        self.head_groups = [_head_group(g) for g in groups]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr_predictor, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        if self.d.world > 1:
            self.sampler: Sampler[int] = DistributedSampler(self.train_ds, self.d.world, self.d.rank,
                                                            shuffle=True, seed=cfg.seed)
        else:
            self.sampler = EpochSampler(len(self.train_ds), cfg.seed)
        if cfg.shuffle == "shards":
            if self.d.world > 1:
                raise TjepaError("shuffle 'shards' runs in one process for now; use shuffle 'global' under torchrun")
            self.sampler = ShardShuffleSampler(self.train_ds.rows, int(index.layout["rows_per_shard"]), cfg.seed,
                                               cfg.shuffle_window)
        # whole batches read ahead (train/loader.py): in sampler order, so the run is the same
        loading = dict(num_workers=cfg.num_workers, prefetch=cfg.prefetch, pin_memory=self.d.device.type == "cuda",
                       generator=torch.Generator().manual_seed(cfg.seed),
                       context=worker_context(not locate(store).local) if cfg.num_workers else None)
        self.train_loader = BatchLoader(self.train_ds, self.sampler, cfg.batch_size, **loading)
        self.val_loader = BatchLoader(self.val_ds, SequentialSampler(range(len(self.val_ds))),  # type: ignore[arg-type]
                                      cfg.batch_size, **loading)
        self.epoch, self.best = 0, math.inf
        if self.resuming:
            self._restore()

    # ------------------------------------------------------------------ state
    def _restore(self) -> None:
        ckpt = restore_training(self.paths.latest, self.core, self.opt, self.scaler)
        self.epoch, self.best = int(ckpt["epoch"]), float(ckpt["best_val_ade"])
        states = ckpt["rng"]
        if len(states) == self.d.world:
            set_rng_state(states[self.d.rank])
        elif self.d.main:
            import warnings

            warnings.warn(f"resuming with {self.d.world} processes from a checkpoint of {len(states)}: "
                          f"dropout RNG streams are reseeded, so the run will not match bit for bit",
                          UserWarning, stacklevel=2)
        if self.d.main:
            truncate_metrics(self.paths.metrics, self.epoch)

    def _gather_rng(self) -> list[dict[str, Any]]:
        from tjepa.train.checkpoint import rng_state

        mine = rng_state()
        if self.d.world == 1:
            return [mine]
        out: list[Any] = [None] * self.d.world
        dist.all_gather_object(out, mine)
        return out

    def _save(self, metrics: dict[str, Any], improved: bool) -> None:
        rng = self._gather_rng()  # collective: every rank takes part
        if not self.d.main:
            return
        ckpt = make_checkpoint(model=self.core, optimizer=self.opt, scaler=self.scaler, epoch=self.epoch,
                               best_val_ade=self.best, config=self.doc, metrics=metrics)
        ckpt["rng"] = rng
        with open(self.paths.metrics, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if improved:
            atomic_save(ckpt, self.paths.best)
        atomic_save(ckpt, self.paths.latest)

    # ------------------------------------------------------------------ epochs
    def _validate(self) -> dict[str, Any]:
        if self.window is None:
            return evaluate(self.core, self.val_loader, self.d.device, self.amp, self.d.world)
        return rollout_validation(self.core, self.val_loader, self.rollout_steps, self.d.device)

    def _set_lr(self, epoch: int) -> tuple[float, float]:
        lr_head, lr_pred = self.cfg.lr_at(epoch)
        for g, is_head in zip(self.opt.param_groups, self.head_groups, strict=True):
            g["lr"] = lr_head if is_head else lr_pred
        return lr_head, lr_pred

    def _nonfinite(self, losses: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], step: int) -> None:
        done = f"the last good checkpoint ({self.paths.latest}, epoch {self.epoch}) is untouched" \
            if self.epoch else "no checkpoint had been written yet"
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        rows = batch["row"].tolist() if "row" in batch else "?"
        raise NonFiniteLossError(f"non-finite loss at epoch {self.epoch + 1}, step {step} ({parts}; "
                                 f"store rows {rows}); training stopped and {done}")

    def _train_epoch(self, bar: Any) -> dict[str, float]:
        self.model.train()
        self.sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        dev, sums = self.d.device, torch.zeros(4, dtype=torch.float64, device=self.d.device)
        t0 = time.perf_counter()
        for step, batch in enumerate(self.train_loader):
            batch = to_device(batch, dev)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp):
                out = self.model(batch)
                losses = self.core.loss(batch, out)
            total = losses["total"]
            ok = torch.isfinite(total.detach()).to(torch.int32)
            if self.d.world > 1:
                dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if not bool(ok):
                self._nonfinite(losses, batch, step)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            n = batch["joints_future"].shape[0]
            sums += torch.stack([total.detach().double() * n, losses["traj"].detach().double() * n,
                                 losses["latent"].detach().double() * n, torch.tensor(float(n), device=dev,
                                                                                      dtype=torch.float64)])
            if bar is not None:
                bar.advance(n * self.d.world, float(total.detach()))
        if self.d.world > 1:
            dist.all_reduce(sums)
        dt = time.perf_counter() - t0
        s = sums.tolist()
        return {"train_loss": s[0] / s[3], "train_traj": s[1] / s[3], "train_latent": s[2] / s[3],
                "samples_per_s": s[3] / dt if dt > 0 else float("nan")}

    def fit(self, max_epochs: int | None = None) -> list[dict[str, Any]]:
        """Train until `cfg.epochs` (or for at most `max_epochs` more epochs); returns this call's
        per-epoch metrics (rank 0 writes them to RUN/metrics.jsonl)."""
        history: list[dict[str, Any]] = []
        end = self.cfg.epochs if max_epochs is None else min(self.cfg.epochs, self.epoch + max_epochs)
        try:
            while self.epoch < end:
                t0 = time.perf_counter()
                lr_head, lr_pred = self._set_lr(self.epoch)
                with EpochBar(self.epoch + 1, self.cfg.epochs, len(self.sampler) * self.d.world,  # type: ignore[arg-type]
                              enabled=self.progress and self.d.main) as bar:
                    train = self._train_epoch(bar)
                val = self._validate()
                self.epoch += 1
                improved = math.isfinite(val["val_ade"]) and val["val_ade"] < self.best
                if improved:
                    self.best = val["val_ade"]
                metrics = {"epoch": self.epoch, **train, **val, "lr_head": lr_head, "lr_predictor": lr_pred,
                           "best": improved, "time": time.perf_counter() - t0}
                self._save(metrics, improved)
                if self.progress and self.d.main:
                    EpochBar.summary(metrics)
                history.append(metrics)
        finally:
            if self.d.owns_group:
                dist.destroy_process_group()
                self.d.owns_group = False
        return history


def train_run(cfg: TrainConfig, store: str | Path, run_dir: str | Path, *, resume: bool = True,
              progress: bool = True, max_epochs: int | None = None,
              model_overrides: dict[str, Any] | None = None, window: WindowSpec | None = None,
              splits_from: str | Path | None = None) -> list[dict[str, Any]]:
    """Train (or resume) the run in `run_dir` on `store`; returns this call's per-epoch metrics."""
    return Trainer(cfg, store, run_dir, resume=resume, progress=progress, model_overrides=model_overrides,
                   window=window, splits_from=splits_from).fit(max_epochs)
