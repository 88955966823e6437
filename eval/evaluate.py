"""Evaluate a trained run on a split of its feature store (`tjepa eval`).

Loads RUN (config, weights-only checkpoint, splits.json), refuses a store with another fingerprint
or an empty split, runs the model over the split (test by default: rows training never read), and
feeds the meters of `tjepa.metrics` (ADE / FDE / Acc@5cm in world metres, per-step curve, horizons;
latent L2 / SmoothL1 / cosine against the cached future latents) and the training-free baselines of
`eval.baselines` on the same rows. Scores EgoDex's own protocol too (`eval.egodex_protocol`). Optionally runs the rollout
protocol (`eval.rollout`). Writes DIR/metrics.json, DIR/summary.json (the compact figures for DVC),
DIR/report.md (`eval.report`), DIR/predictions.npz (the model's world-frame joint
forecasts with their targets, for re-scoring) and PNG figures in DIR/figures/.
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from tjepa.cache_schema.layout import PATHS
from tjepa.cache_schema.reader import StoreReader
from tjepa.eval import plots
from tjepa.eval.baselines import BASELINES, BaselineScorer
from tjepa.eval.egodex_protocol import EgoDexMeter
from tjepa.eval.report import (
    assemble_metrics,
    portable_path,
    render_report,
    write_metrics_json,
    write_summary_json,
)
from tjepa.eval.rollout import RolloutConfig, evaluate_rollout
from tjepa.eval.run_loading import LoadedRun, load_run, resolve_device
from tjepa.metrics import DEFAULT_HORIZONS, DEFAULT_THRESHOLD, LatentMeter, TrajectoryMeter
from tjepa.train.data import to_device

PREDICTIONS_FILE = "predictions.npz"


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    checkpoint: str = "best"  # best (selected on val) | latest
    batch_size: int = 16
    device: str = "auto"
    horizons: tuple[int, ...] = DEFAULT_HORIZONS  # those beyond the forecast are left out
    threshold: float = DEFAULT_THRESHOLD
    figures: int = 4  # trajectory pictures (first rows of the split); 0 for none
    num_workers: int = 0
    progress: bool = True


def _progress(enabled: bool) -> Any:
    from tjepa.progress import progress_bar

    return progress_bar("{task.description}", "videos", transient=True, enabled=enabled, remaining=False)


def _index_arrays(store: str, rows: tuple[int, ...]) -> dict[str, dict[int, np.ndarray]]:
    """Per-row index data the model does not need: frame indices (baselines) and picture geometry."""
    reader = StoreReader(store)
    idx = np.asarray(sorted(rows), np.int64)
    out = {}
    for field in ("past_idx", "future_idx", "fps", "width", "height", "intrinsics"):
        out[field] = {int(r): v for r, v in zip(idx, reader.read(field, idx), strict=True)}
    return out


def _update_egodex(meters: dict[str, EgoDexMeter], name: str, pred: torch.Tensor, batch: dict[str, Any],
                   index: dict[str, dict[int, np.ndarray]], rows: list[int]) -> None:
    """Feed the EgoDex-protocol meters of the model and of each baseline (on the same rows)."""
    past_idx = np.stack([index["past_idx"][i] for i in rows])
    future_idx = np.stack([index["future_idx"][i] for i in rows])
    fps = np.asarray([index["fps"][i] for i in rows], np.float64)
    jp, vp = batch["joints_past"].cpu().numpy(), batch["valid_past"].cpu().numpy()
    common = dict(gt=batch["joints_future"], valid=batch["valid_future"], last=jp[:, -1], last_valid=vp[:, -1],
                  cam_last=batch["cam_last"], last_idx=past_idx[:, -1], future_idx=future_idx, fps=fps)
    meters[name].update(pred, **common)
    for bname, fn in BASELINES.items():
        out = fn(jp, vp, past_idx, future_idx)
        # a joint the baseline cannot forecast is left out (as in its ThinkJEPA-protocol scores)
        valid = batch["valid_future"].cpu().numpy() & out.available[:, None, :]
        meters[bname].update(np.where(valid[..., None], out.pred, 0.0), **{**common, "valid": valid})


def _egodex_result(meters: dict[str, EgoDexMeter], name: str) -> dict[str, Any]:
    """The model's EgoDex section with the baselines' figures under `baselines`."""
    with warnings.catch_warnings():  # said once, for the model
        warnings.simplefilter("ignore", RuntimeWarning)
        base = {b: meters[b].compute() for b in meters if b != name}
    out = meters[name].compute()
    out["baselines"] = {b: {h: m[h] for h in m["counts"]} for b, m in base.items()}
    return out


def predict_and_score(run: LoadedRun, rows: tuple[int, ...], cfg: EvalConfig) -> dict[str, Any]:
    """Run the model over `rows`; returns the meters' results and the predictions (numpy)."""
    ds = run.dataset(rows)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        pin_memory=run.device.type == "cuda")
    steps = run.model_cfg.n_future
    horizons = [h for h in cfg.horizons if h <= steps]
    meter, latent = TrajectoryMeter(cfg.threshold, horizons), LatentMeter()
    base = BaselineScorer(threshold=cfg.threshold, horizons=horizons)
    index = _index_arrays(run.store, rows)
    egodex = {name: EgoDexMeter() for name in (run.model_cfg.variant, *BASELINES)}
    keep: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "pred", "gt", "valid", "past", "valid_past", "cam")}
    t0 = time.perf_counter()
    with _progress(cfg.progress) as bar, torch.no_grad():
        task = bar.add_task(f"eval {cfg.split}", total=len(ds))
        for batch in loader:
            r = batch["row"].tolist()
            batch = to_device(batch, run.device)
            out = run.model(batch)
            pred = out.traj_world.float()
            meter.update(pred, batch["joints_future"], batch["valid_future"])
            latent.update(out.pred_future, batch["vjepa_future"])
            base.update(batch["joints_past"], batch["valid_past"],
                        np.stack([index["past_idx"][i] for i in r]),
                        np.stack([index["future_idx"][i] for i in r]),
                        batch["joints_future"], batch["valid_future"])
            _update_egodex(egodex, run.model_cfg.variant, pred, batch, index, r)
            for key, val in (("row", batch["row"]), ("pred", pred), ("gt", batch["joints_future"]),
                             ("valid", batch["valid_future"]), ("past", batch["joints_past"]),
                             ("valid_past", batch["valid_past"]), ("cam", batch["cam_last"])):
                keep[key].append(val.detach().cpu().numpy())
            done = sum(len(x) for x in keep["row"])
            bar.update(task, completed=done)
    arrays = {k: np.concatenate(v) for k, v in keep.items()}
    return {"trajectory": meter.compute(), "latent": latent.compute(), "baselines": base.compute(),
            "egodex": _egodex_result(egodex, run.model_cfg.variant), "arrays": arrays, "index": index, "seconds": time.perf_counter() - t0}


FIGURE_PATTERNS = ("trajectories_*.png", "rollout_*.png", "error_vs_horizon.png", "training_curves.png")


def _slug(video: str) -> str:
    stem = str(Path(video).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9.-]+", "_", stem).strip("_")[:60] or "video"


def _clear_figures(fig_dir: Path) -> None:
    """Remove the figures an earlier evaluation into this directory drew (they would go stale)."""
    for pattern in FIGURE_PATTERNS:
        for old in fig_dir.glob(pattern):
            old.unlink()


def trajectory_figures(run: LoadedRun, arrays: dict[str, np.ndarray], index: dict[str, Any], fig_dir: Path,
                       n: int, title: str = "", tag: str = "trajectories",
                       preds: dict[int, np.ndarray] | None = None) -> list[Path]:
    """Predicted vs true future joints over the last observed frame's thumbnail, for the first `n`
    rows (`preds` row -> [Tf, J, 3] replaces the model's predictions, e.g. for rollouts)."""
    if n <= 0:
        return []
    reader = StoreReader(run.store)
    if not reader.has("thumb"):
        warnings.warn(f"{run.store} has no thumbnails ({PATHS['thumb']}): no trajectory pictures",
                      RuntimeWarning, stacklevel=2)
        return []
    thumbs = reader.array("thumb")
    paths = []
    for i in range(min(n, len(arrays["row"]))):
        row = int(arrays["row"][i])
        pred = arrays["pred"][i] if preds is None else preds[row]
        gt = np.where(arrays["valid"][i][..., None], arrays["gt"][i], np.nan)[: len(pred)]
        past = np.where(arrays["valid_past"][i][..., None], arrays["past"][i], np.nan)
        video = run.index.videos[row]
        paths.append(plots.plot_trajectories(
            thumbs[row], index["intrinsics"][row], int(index["width"][row]),
            int(index["height"][row]), arrays["cam"][i], gt, pred,
            fig_dir / f"{tag}_{i:02d}_{_slug(video)}.png", past=past, title=f"{video}{title}"))
    return paths


def _figures(run: LoadedRun, res: dict[str, Any], fig_dir: Path, cfg: EvalConfig, name: str,
             rollout: dict[str, Any] | None) -> list[Path]:
    figs = trajectory_figures(run, res["arrays"], res["index"], fig_dir, cfg.figures,
                              title=f" ({name}, {cfg.split})")
    curves = {name: res["trajectory"]["per_step"], **{b: m["per_step"] for b, m in res["baselines"].items()}}
    figs.append(plots.plot_horizon_curves(curves, fig_dir / "error_vs_horizon.png"))
    metrics_jsonl = run.run_dir / "metrics.jsonl"
    if metrics_jsonl.is_file():
        figs.append(plots.plot_training_curves({run.run_dir.name: metrics_jsonl}, fig_dir / "training_curves.png"))
    else:
        warnings.warn(f"{metrics_jsonl} not found: no training-curve figure", RuntimeWarning, stacklevel=2)
    if rollout is not None:
        figs.append(plots.plot_rollout(rollout["by_horizon"], fig_dir / "rollout_ade.png"))
        st = rollout["stability"]
        figs.append(plots.plot_horizon_curves({"rollout latent L2": st["latent_error"],
                                               "true token std": st["true_std"], "pred token std": st["pred_std"]},
                                              fig_dir / "rollout_stability.png", reference=("true token std",),
                                              ylabel="latent L2 / token std (x: rollout step)"))
        preds = {k["row"]: k["traj_world"] for k in rollout["kept"]}
        figs += trajectory_figures(run, res["arrays"], res["index"], fig_dir, len(preds),
                                   title=f" (rollout, camera {rollout['info']['camera']})", tag="rollout", preds=preds)
    return figs


def _rollout_block(res: dict[str, Any], ro: dict[str, Any], name: str) -> dict[str, Any]:
    """{name: {h: ADE}} for the report and plots: the recursive model, the run's direct forecast
    and the baselines, on the same rows and horizons."""
    def ade(m: dict[str, Any]) -> dict[int, float]:
        return {int(h): v["ade"] for h, v in m["horizons"].items()}
    info = ro["info"]
    block = {f"rollout {info['window'].split(' ')[0]} x{info['steps']} (recursive)": ade(ro["metrics"]),
             f"{name} (direct)": ade(res["trajectory"])}
    block.update({f"{b} (baseline)": ade(m) for b, m in res["baselines"].items()})
    return block


def _rollout_section(ro: dict[str, Any]) -> str:
    from tjepa.eval.report import fmt, md_table

    info, m = ro["info"], ro["metrics"]
    hs = sorted(int(h) for h in m["horizons"])
    rows = [[h, fmt(m["horizons"][h]["ade"]), fmt(m["horizons"][h]["fde"]), fmt(m["horizons"][h]["acc"], 3),
             fmt(m["horizons"][h]["n"])] for h in hs]
    return "\n".join([
        "## Rollout protocol", "",
        f"- model: {info['window']}, `{info['checkpoint']}` (epoch {info['best_epoch']} of {info['epochs']}, "
        f"selected by {info['selection']['metric']}; trained on {info['training']})",
        f"- protocol: {info['protocol']} ({info['frames']} frames)",
        f"- camera: **{info['camera_note']}**", "",
        md_table(["horizon (frames)", "ADE", "FDE", "Acc", "samples"], rows), ""])


def evaluate_run(run_dir: str | Path, store: str | Path, out_dir: str | Path | None = None,
                 cfg: EvalConfig = EvalConfig(), rollout: RolloutConfig | None = None) -> dict[str, Any]:
    """Evaluate RUN on `store`; writes metrics.json, report.md, predictions.npz and figures into
    `out_dir` (default RUN/eval) and returns the metrics dict."""
    run = load_run(run_dir, store, cfg.checkpoint, resolve_device(cfg.device))
    rows = run.split_rows(cfg.split)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "eval"
    fig_dir = out / "figures"
    res = predict_and_score(run, rows, cfg)
    name = run.model_cfg.variant
    ro = None
    if rollout is not None:
        rollout = dataclasses.replace(rollout, horizons=cfg.horizons, threshold=cfg.threshold)
        ro = evaluate_rollout(run, rows, rollout, batch_size=cfg.batch_size, progress=cfg.progress,
                              keep=min(cfg.figures, 2))
        ro["by_horizon"] = _rollout_block(res, ro, name)
    _clear_figures(fig_dir)
    figures = _figures(run, res, fig_dir, cfg, name, ro)
    from tjepa import __version__

    meta = {"run": run.run_dir.name, "run_dir": portable_path(run.run_dir), "checkpoint": run.checkpoint.name,
            "epoch": run.epoch, "best_val_ade": run.best_val_ade, "store": portable_path(run.store),
            "fingerprint": run.index.fingerprint, "split": cfg.split, "n_rows": len(rows), "variant": name,
            "preset": run.train_cfg.preset, "seed": run.train_cfg.seed, "device": str(run.device), "eval_seconds": round(res["seconds"], 3),
            "frame": "world, metres", "tjepa_version": __version__}
    metrics = assemble_metrics(res["trajectory"], split=cfg.split, latent=res["latent"],
                               baselines=res["baselines"], stability=ro["stability"] if ro else None,
                               rollout=ro["by_horizon"] if ro else None, egodex=res["egodex"], meta=meta)
    if ro is not None:
        info = {**ro["info"], "dir": portable_path(ro["info"]["dir"]),
                "checkpoint": portable_path(ro["info"]["checkpoint"])}
        metrics["rollout_metrics"] = {**ro["metrics"], "info": info}
    out.mkdir(parents=True, exist_ok=True)
    a = res["arrays"]
    np.savez_compressed(out / PREDICTIONS_FILE, row=a["row"], video=np.array([run.index.videos[i] for i in a["row"]]),
                        pred_world=a["pred"], joints_future=a["gt"], valid_future=a["valid"])
    write_metrics_json(out, metrics)
    write_summary_json(out, metrics)
    text = render_report(out, metrics, res["baselines"], figures, meta)
    if ro is not None:  # protocol details before the figures
        head, sep, tail = text.partition("## Figures")
        text = head + _rollout_section(ro) + "\n" + sep + tail
    (out / "report.md").write_text(text)
    return metrics
