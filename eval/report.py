"""`metrics.json` (machine-readable) and `report.md` (human-readable) for one evaluation.

The metrics dict (build it with `assemble_metrics`) is flat at the top for what every reader needs:
`ade`, `fde`, `acc`, `split`, `n`, then `threshold`, `n_samples`, `n_fde`, `n_valid`,
`n_nonfinite_pred`, `per_step`, `per_step_n`, `horizons` {h: {ade, fde, acc, n, n_fde}}, and the
optional blocks `latent` {l2, smooth_l1, cosine, n}, `baselines` {name: trajectory dict},
`stability` (see `metrics.stability_summary`), `rollout` {name: {h: ADE}} (as for
`plots.plot_rollout`), `egodex` (EgoDex's protocol, `eval.egodex_protocol`: {"1s": {ade, fde, n,
n_fde}, ..., keypoints, counts, choices, baselines}), `meta` (provenance: `run`, `store`,
`fingerprint`, `checkpoint`, `split`, ...). In the JSON file NaN and inf become `null` (strict JSON)
and horizon keys become strings; `read_metrics_json` turns them back.

`summary.json` is the compact file for `dvc metrics show` (`compact_metrics`): the headline figures
only, flat enough to fit a terminal. Neither file holds an absolute path (`portable_path`), so a
run moved to another machine diffs cleanly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tjepa.atomic import atomic_write_json
from tjepa.errors import InputError

REQUIRED_KEYS = ("ade", "fde", "acc", "split", "n")
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


def assemble_metrics(trajectory: Mapping[str, Any], *, split: str, latent: Mapping[str, Any] | None = None,
                     baselines: Mapping[str, Mapping[str, Any]] | None = None,
                     stability: Mapping[str, Any] | None = None, rollout: Mapping[str, Any] | None = None,
                     egodex: Mapping[str, Any] | None = None,
                     meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One canonical metrics dict from `TrajectoryMeter.compute()` plus the optional blocks."""
    out: dict[str, Any] = {"split": split, **trajectory}
    for key, block in (("latent", latent), ("baselines", baselines), ("stability", stability),
                       ("rollout", rollout), ("egodex", egodex)):
        if block is not None:
            out[key] = dict(block)
    out["meta"] = {"split": split, "n": trajectory.get("n"), **(meta or {})}
    return out


def portable_path(p: str | Path) -> str:
    """A path fit for a metrics file: relative paths as given (POSIX); absolute ones relative to the
    working directory when under it, else only the final name (the store's fingerprint, not its
    location, says which data a metric is about)."""
    path = Path(p)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def compact_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a metrics dict, for `dvc metrics show` (one short column each, and
    DVC sorts them by name): `ade`, `fde`, `acc` (ThinkJEPA protocol), `lat_l2`, `ade@1s` ... `fde@3s`
    (EgoDex protocol: average / final distance at each horizon), `ade_persist` / `ade_cv` (the
    baselines' ADE), `n`."""
    out: dict[str, Any] = {"ade": metrics.get("ade"), "fde": metrics.get("fde"), "acc": metrics.get("acc")}
    if metrics.get("latent"):
        out["lat_l2"] = metrics["latent"].get("l2")
    eg = metrics.get("egodex") or {}
    for h in eg.get("counts") or {}:
        out[f"ade@{h}"] = (eg.get(h) or {}).get("ade")
        out[f"fde@{h}"] = (eg.get(h) or {}).get("fde")
    short = {"persistence": "persist", "constant_velocity": "cv"}
    for name, b in (metrics.get("baselines") or {}).items():
        out[f"ade_{short.get(name, name)}"] = b.get("ade")
    out["n"] = metrics.get("n")
    return out


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, to_jsonable(doc), indent=2, allow_nan=False)


def write_summary_json(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write `out_dir/summary.json` (`compact_metrics`, numbers rounded to 4 decimals) atomically."""
    doc = {k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
           for k, v in compact_metrics(metrics).items()}
    return _write_json(Path(out_dir) / SUMMARY_FILE, doc)


def to_jsonable(x: Any) -> Any:
    """numpy / torch scalars and arrays -> plain Python; NaN/inf -> None; dict keys -> str."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _check(metrics: Mapping[str, Any], where: str | Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in metrics]
    if missing:
        raise InputError(where, f"metrics lack the required keys {missing} (need {list(REQUIRED_KEYS)})")


def write_metrics_json(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write `out_dir/metrics.json` atomically (`tjepa.atomic`); returns its path."""
    out = Path(out_dir)
    _check(metrics, out / METRICS_FILE)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(out / METRICS_FILE, to_jsonable(metrics), indent=2, allow_nan=False)


def _horizon_keys_to_int(block: Any) -> Any:
    if isinstance(block, dict) and isinstance(block.get("horizons"), dict):
        block["horizons"] = {int(h): v for h, v in block["horizons"].items()}
    return block


def read_metrics_json(path: str | Path) -> dict[str, Any]:
    """Load a metrics.json; `null` metrics become NaN, horizon keys ints. InputError if unusable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise InputError(p, "file not found") from err
    except json.JSONDecodeError as err:
        raise InputError(p, f"not valid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict):
        raise InputError(p, "expected a JSON object")
    _check(data, p)
    for k in ("ade", "fde", "acc"):
        data[k] = float("nan") if data[k] is None else float(data[k])
    _horizon_keys_to_int(data)
    for b in (data.get("baselines") or {}).values():
        _horizon_keys_to_int(b)
    return data


# --------------------------------------------------------------------------- markdown


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: fixed digits, '–' for missing / NaN."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""
    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _provenance(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    info = {"split": metrics.get("split"), "n": metrics.get("n"), **meta}
    order = ["run", "checkpoint", "store", "fingerprint", "split", "n"]
    keys = [k for k in order if k in info] + sorted(k for k in info if k not in order)
    return md_table(["field", "value"], [[k, f"`{info[k]}`" if k == "fingerprint" else info[k]] for k in keys])


def _trajectory_section(metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    thr = float(metrics.get("threshold", 0.05))
    acc = f"Acc@{thr * 100:g}cm"
    rows = [("model", metrics)] + [(f"{n} (baseline)", b) for n, b in baselines.items()]
    out = ["## Trajectory forecasting", "",
           f"World frame, metres; sample-weighted means over the split; {acc} = share of valid "
           f"(step, joint) errors below {thr:g} m.", "",
           md_table(["", "ADE", "FDE", acc, "samples"],
                    [[name, fmt(m.get("ade")), fmt(m.get("fde")), fmt(m.get("acc"), 3), fmt(m.get("n"))]
                     for name, m in rows])]
    notes = []
    if metrics.get("n_samples") not in (None, metrics.get("n")):
        notes.append(f"{metrics['n_samples'] - metrics['n']} samples had no valid future joints and are not averaged in.")
    if metrics.get("n_nonfinite_pred"):
        notes.append(f"**{metrics['n_nonfinite_pred']} predicted joint positions were non-finite.**")
    for name, b in baselines.items():
        if b.get("n_unavailable"):
            notes.append(f"{name}: {b['n_unavailable']} valid future entries of never-observed joints are "
                         "excluded from its scores.")
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    horizons = sorted(int(h) for h in (metrics.get("horizons") or {}))
    if horizons:
        def at(m: Mapping[str, Any], h: int, k: str) -> Any:
            hs = m.get("horizons") or {}
            return (hs.get(h) or hs.get(str(h)) or {}).get(k)
        header = [""] + [f"ADE@{h}" for h in horizons] + [f"FDE@{h}" for h in horizons] + [f"Acc@{h}" for h in horizons]
        out += ["", "### By horizon (first h future steps)", "",
                md_table(header, [[name] + [fmt(at(m, h, "ade")) for h in horizons]
                                  + [fmt(at(m, h, "fde")) for h in horizons]
                                  + [fmt(at(m, h, "acc"), 3) for h in horizons] for name, m in rows])]
    return out


def _egodex_section(eg: Mapping[str, Any], name: str = "model") -> list[str]:
    from tjepa.eval.egodex_protocol import PAPER_NOTE, PAPER_TABLE3

    hs = list(eg.get("counts") or {})
    def cells(m: Mapping[str, Any]) -> list[str]:
        return [fmt((m.get(h) or {}).get("ade")) for h in hs] + [fmt((m.get(h) or {}).get("fde")) for h in hs]
    rows = [[name, *cells(eg)]] + [[f"{b} (baseline)", *cells(m)] for b, m in (eg.get("baselines") or {}).items()]
    rows.append(["EgoDex paper, Table 3 (Dec + BC)", *[fmt(PAPER_TABLE3.get(h, {}).get("ade"), 3) for h in hs],
                 *[fmt(PAPER_TABLE3.get(h, {}).get("fde"), 3) for h in hs]])
    counts = ", ".join(f"{h}: {c} of {eg.get('n_samples')}" for h, c in (eg.get("counts") or {}).items())
    out = ["## EgoDex protocol", "",
           f"EgoDex's own benchmark (arXiv 2505.11709): {len(eg.get('keypoints') or [])} keypoints "
           f"({', '.join(eg.get('keypoints') or [])}), {eg.get('frame', 'camera frame')}; "
           f"average = mean distance over the {fmt(eg.get('rate_hz'), 0)} Hz steps of the horizon, final = at "
           f"its last step; best of K = {eg.get('k', 1)}. Our forecasts are interpolated in time onto that grid; "
           f"a sample counts for a horizon only when its forecast window reaches it (samples: {counts}).", "",
           md_table(["", *[f"average {h}" for h in hs], *[f"final {h}" for h in hs]], rows), "",
           f"> {PAPER_NOTE}", "", "Choices the EgoDex paper leaves open, and ours:", ""]
    out += [f"- {k.replace('_', ' ')}: {v}" for k, v in (eg.get("choices") or {}).items()]
    return out


def _latent_section(latent: Mapping[str, Any]) -> list[str]:
    return ["## Latent prediction", "",
            "Predicted vs cached future V-JEPA latents: L2 = mean per-token L2 norm of the difference; "
            "SmoothL1 (beta 1) averaged over elements; cosine distance = mean per-token 1 - cos.", "",
            md_table(["L2", "SmoothL1", "cosine distance", "samples"],
                     [[fmt(latent.get("l2")), fmt(latent.get("smooth_l1")), fmt(latent.get("cosine")),
                       fmt(latent.get("n"))]])]


def _stability_section(st: Mapping[str, Any]) -> list[str]:
    steps = range(len(st.get("latent_error", [])))
    rows = [[k + 1, fmt(st["latent_error"][k]), fmt(st["pred_std"][k]), fmt(st["true_std"][k]),
             fmt(st["nonfinite"][k], 3), fmt(st["collapse"][k]), fmt(st["explosion"][k])] for k in steps]
    verdict = "stable" if st.get("stable") else "**unstable**"
    return ["## Rollout stability", "",
            f"Verdict: {verdict} (collapse: predicted token std < {st.get('collapse_ratio', 0.1)} x true; "
            f"explosion: latent error > {st.get('explosion_factor', 3.0)} x the first step's).", "",
            md_table(["step", "latent L2", "pred std", "true std", "non-finite", "collapse", "explosion"], rows)]


def _rollout_section(rollout: Mapping[str, Mapping[Any, Any]]) -> list[str]:
    hs = sorted({int(h) for by_h in rollout.values() for h in by_h})
    def get(by_h: Mapping[Any, Any], h: int) -> Any:
        return by_h.get(h, by_h.get(str(h)))
    return ["## Rollout (predictions fed back as context)", "",
            md_table(["model"] + [f"ADE@{h}" for h in hs],
                     [[name] + [fmt(get(by_h, h)) for h in hs] for name, by_h in rollout.items()])]


def render_report(out_dir: str | Path, metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
                  figures: Sequence[str | Path], meta: Mapping[str, Any]) -> str:
    """The markdown text of `report.md` (figures linked relative to `out_dir`)."""
    out = Path(out_dir)
    title = meta.get("run") or out.name
    lines = [f"# Evaluation: {title}", "", _provenance(meta, metrics), ""]
    lines += _trajectory_section(metrics, baselines) + [""]
    if metrics.get("egodex"):
        lines += _egodex_section(metrics["egodex"], str(meta.get("variant") or "model")) + [""]
    if metrics.get("latent"):
        lines += _latent_section(metrics["latent"]) + [""]
    if metrics.get("rollout"):
        lines += _rollout_section(metrics["rollout"]) + [""]
    if metrics.get("stability"):
        lines += _stability_section(metrics["stability"]) + [""]
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            rel = Path(os.path.relpath(Path(f).resolve(), out.resolve())).as_posix()
            lines += [f"![{Path(f).stem}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: str | Path, metrics: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
                 figures: Sequence[str | Path], meta: Mapping[str, Any]) -> Path:
    """Write `out_dir/report.md`: provenance, model vs baseline tables, horizons, latent metrics,
    stability (when present) and the figures; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [str(f) for f in figures if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"figures to embed in the report do not exist: {missing}")
    path = out / REPORT_FILE
    path.write_text(render_report(out, metrics, baselines, figures, meta))
    return path
