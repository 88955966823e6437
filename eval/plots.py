"""Evaluation figures (PNG). Uses matplotlib's object API with the Agg canvas, never pyplot, so it
neither changes the process-wide backend nor leaks figures."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tjepa.cache_schema.joints import JOINT_NAMES
from tjepa.errors import InputError
from tjepa.metrics import to_numpy

# wrist + five fingertips per hand: EgoDex's own 12-keypoint benchmark set
KEY_JOINTS: tuple[int, ...] = tuple(
    i for i, n in enumerate(JOINT_NAMES) if (n.endswith("Tip") and "Intermediate" not in n) or n.endswith("Hand")
)
BASELINE_NAMES = ("persistence", "constant_velocity")


def _save(fig: Figure, out_path: str | Path, dpi: int = 110) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    return out


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- trajectories over the frame


def project_points(points_world: Any, cam_to_world: Any, intrinsics: Any,
                   scale: tuple[float, float] = (1.0, 1.0), min_depth: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """World points [..., 3] -> pixel coordinates [..., 2] in an image scaled by (sx, sy) from the
    intrinsics' resolution, OpenCV convention (x right, y down, z forward). Returns (uv, in_front);
    uv is NaN where the point is behind (or on) the camera plane or non-finite."""
    p = to_numpy(points_world, np.float64)
    c2w = to_numpy(cam_to_world, np.float64)
    k = to_numpy(intrinsics, np.float64)
    w2c = np.linalg.inv(c2w)
    pc = p @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[..., 2]
    front = np.isfinite(pc).all(axis=-1) & (z > min_depth)
    sx, sy = scale
    zs = np.where(front, z, 1.0)
    u = sx * (k[0, 0] * pc[..., 0] / zs + k[0, 1] * pc[..., 1] / zs + k[0, 2])
    v = sy * (k[1, 1] * pc[..., 1] / zs + k[1, 2])
    uv = np.stack([u, v], axis=-1)
    uv[~front] = np.nan
    return uv, front


def render_trajectories(thumb: Any, intrinsics: Any, width: int, height: int, cam_last: Any, gt_future: Any,
                        pred_future: Any, joints: Sequence[int] = KEY_JOINTS, past: Any | None = None,
                        title: str | None = None) -> Figure:
    """The figure behind `plot_trajectories` (axes in thumbnail pixel coordinates)."""
    img = to_numpy(thumb)
    th, tw = img.shape[:2]
    scale = (tw / width, th / height)
    js = list(joints)
    fig = _new_figure(6.0, 6.0 * th / tw + 0.6)
    ax = fig.add_subplot()
    ax.imshow(img)  # pixel centres at integer coordinates, y down: the projection's convention
    colors = [f"C{i % 10}" for i in range(len(js))]
    series = [("gt", gt_future, "-", "o"), ("pred", pred_future, "--", "x")]
    if past is not None:
        series.insert(0, ("past", past, ":", None))
    for _, pts, style, end in series:
        uv, _ = project_points(to_numpy(pts)[:, js], cam_last, intrinsics, scale)  # [T, J, 2]
        for k, c in enumerate(colors):
            ax.plot(uv[:, k, 0], uv[:, k, 1], style, color=c, lw=1.3)
            if end is not None:  # mark where the forecast ends
                ax.plot(uv[-1:, k, 0], uv[-1:, k, 1], end, color=c, ms=5)
    ax.set_xlim(-0.5, tw - 0.5)
    ax.set_ylim(th - 0.5, -0.5)
    ax.set_axis_off()
    handles = [Line2D([], [], color="k", ls="-", marker="o", label="true future"),
               Line2D([], [], color="k", ls="--", marker="x", label="predicted future")]
    if past is not None:
        handles.insert(0, Line2D([], [], color="k", ls=":", label="observed past"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_trajectories(thumb: Any, intrinsics: Any, width: int, height: int, cam_last: Any, gt_future: Any,
                      pred_future: Any, out_path: str | Path, joints: Sequence[int] = KEY_JOINTS,
                      past: Any | None = None, title: str | None = None) -> Path:
    """True vs predicted future joint trajectories (world [Tf,J,3]) projected into the last observed
    frame (`cam_last` camera-to-world, `intrinsics` for a width x height source) over its thumbnail
    (uint8 [th,tw,3]); `past` [To,J,3] adds the observed track. Default joints: wrists + fingertips."""
    return _save(render_trajectories(thumb, intrinsics, width, height, cam_last, gt_future, pred_future,
                                     joints, past, title), out_path)


# --------------------------------------------------------------------------- curves


def plot_horizon_curves(per_step: Mapping[str, Sequence[float]], out_path: str | Path,
                        reference: Iterable[str] = BASELINE_NAMES, ylabel: str = "mean joint error (m)") -> Path:
    """Error vs future step, one line per variant; names in `reference` (baselines) are dashed."""
    ref = set(reference)
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for name, curve in per_step.items():
        y = np.asarray(curve, dtype=np.float64)
        ax.plot(np.arange(1, len(y) + 1), y, "--" if name in ref else "-", marker=".", label=name)
    ax.set_xlabel("future step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if per_step:
        ax.legend(fontsize=8)
    return _save(fig, out_path)


_SKIP = ("epoch", "step", "lr", "time", "sec", "samples", "seed")


def _panel(key: str) -> str | None:
    k = key.lower()
    if "acc" in k:
        return "accuracy"
    if "ade" in k or "fde" in k:
        return "error (m)"
    if any(s in k for s in _SKIP):
        return None
    return "loss"


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Per-epoch JSON lines -> list of dicts (blank lines skipped; bad lines raise InputError)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "metrics file not found (expected per-epoch JSON lines from `tjepa train`)")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(p, f"line {n} is not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise InputError(p, f"line {n} is not a JSON object")
        rows.append(row)
    return rows


def plot_training_curves(metrics_jsonl_paths: Mapping[str, str | Path], out_path: str | Path) -> Path:
    """Training curves from per-epoch JSON lines, one colour per run. Numeric keys are grouped into
    panels: losses (log scale when positive), ADE/FDE, accuracy; lr/time-like keys are left out."""
    runs = {name: read_metrics_jsonl(p) for name, p in metrics_jsonl_paths.items()}
    panels: dict[str, list[str]] = {}
    for rows in runs.values():
        for row in rows:
            for key, val in row.items():
                panel = _panel(key)
                if panel and isinstance(val, (int, float)) and not isinstance(val, bool):
                    keys = panels.setdefault(panel, [])
                    if key not in keys:
                        keys.append(key)
    order = [p for p in ("loss", "error (m)", "accuracy") if p in panels]
    fig = _new_figure(5.0 * max(len(order), 1), 4.0)
    if not order:
        fig.text(0.5, 0.5, "no numeric metrics found", ha="center", va="center")
        return _save(fig, out_path)
    axes = fig.subplots(1, len(order), squeeze=False)[0]
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes, order, strict=True):
        positive = True
        for r, (name, rows) in enumerate(runs.items()):
            for s, key in enumerate(panels[panel]):
                pts = [(row.get("epoch", i), row[key]) for i, row in enumerate(rows)
                       if isinstance(row.get(key), (int, float))]
                if not pts:
                    continue
                x, y = np.asarray(pts, dtype=np.float64).T
                positive &= bool((y[np.isfinite(y)] > 0).all())
                label = key if len(runs) == 1 else f"{name}: {key}"
                ax.plot(x, y, styles[s % len(styles)], color=f"C{r % 10}", marker=".", label=label)
        if panel == "loss" and positive:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out_path)


def plot_rollout(horizon_metrics: Mapping[str, Mapping[Any, float]], out_path: str | Path,
                 ylabel: str = "ADE (m)") -> Path:
    """Metric vs rollout horizon (steps), one line per model; horizon keys may be ints or strings."""
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ticks: set[int] = set()
    for name, by_h in horizon_metrics.items():
        pts = sorted((int(h), float(v)) for h, v in by_h.items() if v is not None and math.isfinite(float(v)))
        if not pts:
            continue
        h, v = zip(*pts, strict=True)
        ticks.update(h)
        ax.plot(h, v, marker="o", label=name)
    if ticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.legend(fontsize=8)
    ax.set_xlabel("horizon (future steps)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return _save(fig, out_path)
