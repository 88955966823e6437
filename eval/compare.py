"""Side-by-side comparison of several evaluations (`tjepa compare`).

Each argument may be a `metrics.json` file, an eval directory holding one, a run directory holding
`eval/metrics.json` (tried in that order), or a directory of `seed<N>/` evaluations (and no
metrics.json of its own), which gives all of them. A row's name is `meta.run` when the file records
it, else the directory name (the run directory's for `<run>/eval/`); a `seed<N>` directory or run
takes its parent's name, so `reports/jepa/seed42`, `.../seed43` are seeds of one model `jepa`.

Seeds: the evaluations of one name on the same data (split, store fingerprint, n) are one row holding
the means, `ade_std`, `fde_std`, `acc_std` (sample standard deviation, ddof=1; None for one seed) and
`seeds` (the sorted training seeds, from the eval's meta or the run's config.json). A name seen again
with an unknown or repeated seed is another model and gets a numeric suffix. Baselines depend only
on the data, so they are shown once per distinct (split, store fingerprint, n) rather than once per run.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjepa.errors import InputError
from tjepa.eval.egodex_protocol import HORIZONS_S, PAPER_TABLE3, horizon_key
from tjepa.eval.egodex_protocol import PAPER_NOTE as EGODEX_PAPER_NOTE
from tjepa.eval.report import METRICS_FILE, compact_metrics, portable_path, read_metrics_json, to_jsonable

# docs/method.md §9 (paper Table 1 and Table 7). Real EgoDex, their validation split, an earlier leaky
# version of their code: the shape of the result, not a bar to compare synthetic runs against.
PAPER_RESULTS: tuple[dict[str, Any], ...] = (
    {"name": "ThinkJEPA", "ade": 0.061, "fde": 0.056, "acc": 0.596},
    {"name": "JEPA-only (V-JEPA predictor)", "ade": 0.071, "fde": 0.066, "acc": 0.471},
    {"name": "VLM-only (Qwen3-VL-Thinking + trained head)", "ade": 0.142, "fde": 0.144, "acc": 0.084},
)
PAPER_ROLLOUT_ADE: dict[str, dict[int, float]] = {
    "ThinkJEPA": {4: 0.071, 8: 0.078, 16: 0.092, 32: 0.111},
    "V-JEPA": {4: 0.121, 8: 0.126, 16: 0.134, 32: 0.142},
}
PAPER_NOTE = ("Published numbers (ThinkJEPA paper, arXiv 2603.22281, Table 1 / Table 7) on real EgoDex, "
              "measured on their validation split with an earlier version of their code that leaked "
              "future frames. NOT comparable to runs on synthetic data or other splits; shown for "
              "orientation only.")

COLUMNS = ("kind", "name", "split", "n", "ade", "fde", "acc", "latent_l2", "threshold",
           "ade_std", "fde_std", "acc_std", "seeds", "n_seeds")
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path  # the metrics.json
    metrics: dict[str, Any]
    seed: int | None = None  # the training seed, when known

    @property
    def data(self) -> tuple:
        """Which data it was scored on: (split, store fingerprint, n)."""
        return (self.metrics["split"], (self.metrics.get("meta") or {}).get("fingerprint"), self.metrics["n"])


def resolve_metrics_path(arg: str | Path) -> Path:
    """A metrics.json, `DIR/metrics.json` or `DIR/eval/metrics.json`; InputError naming what was tried."""
    p = Path(arg)
    if p.is_file():
        return p
    tried = [p / METRICS_FILE, p / "eval" / METRICS_FILE]
    for cand in tried:
        if cand.is_file():
            return cand
    raise InputError(p, "no metrics found; tried " + ", ".join(str(t) for t in tried)
                     + " (run `tjepa eval` first)")


def resolve_metrics_paths(arg: str | Path) -> list[Path]:
    """Like `resolve_metrics_path`, but a directory of `seed<N>/` evaluations (with no metrics.json
    of its own) gives each of them, by seed; one of them without metrics is an error, not a gap."""
    p = Path(arg)
    seeds = [d for d in p.iterdir() if d.is_dir() and _SEED_DIR.match(d.name)] if p.is_dir() else []
    if seeds and not (p / METRICS_FILE).is_file():
        return [resolve_metrics_path(d) for d in sorted(seeds, key=lambda d: int(d.name[4:]))]
    return [resolve_metrics_path(p)]


def _entry_name(meta: dict[str, Any], metrics_path: Path) -> str:
    d = metrics_path.parent
    d = d.parent if d.name == "eval" and d.parent.name else d
    run = str(meta.get("run") or "")
    if run and not _SEED_DIR.match(run):
        return run
    if _SEED_DIR.match(d.name) and d.parent.name:
        return d.parent.name
    if run and meta.get("run_dir") and Path(meta["run_dir"]).parent.name:  # runs/<name>/seed<N>
        return Path(meta["run_dir"]).parent.name
    return run or d.name


def _seed(meta: dict[str, Any], metrics_path: Path) -> int | None:
    """The training seed: recorded by `tjepa eval`, else the run's config.json (`train.seed`)."""
    if meta.get("seed") is not None:
        return int(meta["seed"])
    if not meta.get("run_dir"):
        return None
    cfg = Path(str(meta["run_dir"])) / "config.json"
    if not cfg.is_file():
        return None
    try:
        return int(json.loads(cfg.read_text())["train"]["seed"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(cfg, f"cannot read the training seed of {metrics_path} from it ({err!r})") from err


def load_entries(args: Sequence[str | Path]) -> list[Entry]:
    """Load every argument (seed directories expanded). An entry whose name was seen before joins it
    as another seed when every seed of that name is known and its own is new on the same data;
    otherwise it is a different model and gets a numeric suffix."""
    entries: list[Entry] = []
    for path in (path for a in args for path in resolve_metrics_paths(a)):
        m = read_metrics_json(path)
        meta = m.get("meta") or {}
        e = Entry(_entry_name(meta, path), path, m, _seed(meta, path))
        same = [p for p in entries if p.name == e.name]
        if same and (e.seed is None or any(p.seed is None or (p.seed, p.data) == (e.seed, e.data) for p in same)):
            k = 1 + len({p.name for p in entries if p.name == e.name or p.name.startswith(f"{e.name} (")})
            e = Entry(f"{e.name} ({k})", path, m, e.seed)
        entries.append(e)
    return entries


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _mean(vals: Sequence[float]) -> float:
    return float("nan") if any(math.isnan(v) for v in vals) else statistics.fmean(vals)


def _std(vals: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for one value or a missing one."""
    return None if len(vals) < 2 or any(math.isnan(v) for v in vals) else statistics.stdev(vals)


def _model_row(e: Entry) -> dict[str, Any]:
    m = e.metrics
    return {"kind": "model", "name": e.name, "split": m["split"], "n": m["n"],
            "ade": _num(m["ade"]), "fde": _num(m["fde"]), "acc": _num(m["acc"]),
            "latent_l2": _num((m.get("latent") or {}).get("l2")), "threshold": m.get("threshold"),
            "egodex": _egodex_cells(m.get("egodex")), "source": portable_path(e.path)}


def _aggregate(group: Sequence[Entry]) -> dict[str, Any]:
    """The evaluations of one model on one data (its seeds) -> one row of means and sample stds."""
    rows = [_model_row(e) for e in group]
    thresholds = {r["threshold"] for r in rows}
    if len(thresholds) > 1:
        raise InputError(group[0].path, f"the seeds of {group[0].name!r} were scored with different Acc "
                                        f"thresholds {sorted(thresholds)} ({', '.join(r['source'] for r in rows)}); "
                                        "evaluate them alike")
    out = dict(rows[0])
    for key in ("ade", "fde", "acc", "latent_l2"):
        out[key] = _mean([r[key] for r in rows])
    for key in ("ade", "fde", "acc"):
        out[f"{key}_std"] = _std([r[key] for r in rows])
    seeds = [e.seed for e in group]
    out["seeds"] = sorted(seeds) if None not in seeds else []
    out["n_seeds"] = len(rows)
    out["egodex"] = _aggregate_egodex([r["egodex"] for r in rows])
    out["source"] = ", ".join(r["source"] for r in rows)
    return out


def comparison_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Model rows (seeds aggregated) plus de-duplicated baseline rows, sorted by ADE (missing ADE last)."""
    models: dict[tuple, list[Entry]] = {}
    for e in entries:
        models.setdefault((e.name, e.data), []).append(e)
    rows = [_aggregate(group) for group in models.values()]
    for r, (_, data) in zip(rows, models, strict=True):
        r["_group"] = data
    seen_baselines: set[tuple] = set()
    for e in entries:
        m = e.metrics
        for bname, b in (m.get("baselines") or {}).items():
            if (bname, e.data) in seen_baselines:
                continue
            seen_baselines.add((bname, e.data))
            rows.append({"kind": "baseline", "name": bname, "split": m["split"], "n": b.get("n", m["n"]),
                         "ade": _num(b.get("ade")), "fde": _num(b.get("fde")), "acc": _num(b.get("acc")),
                         "latent_l2": float("nan"), "threshold": b.get("threshold", m.get("threshold")),
                         "ade_std": None, "fde_std": None, "acc_std": None, "seeds": [], "n_seeds": None,
                         "egodex": _egodex_cells(((m.get("egodex") or {}).get("baselines") or {}).get(bname)),
                         "source": portable_path(e.path), "_group": e.data})
    # the same name on different data (a baseline, or a model scored on two splits): say which data
    by_name: dict[tuple, set] = {}
    for r in rows:
        by_name.setdefault((r["kind"], r["name"]), set()).add(r["_group"])
    for r in rows:
        group = r.pop("_group")
        if len(by_name[(r["kind"], r["name"])]) > 1:
            split, fp, n = group
            r["name"] = f"{r['name']} [{split}" + (f", {str(fp)[:8]}" if fp else "") + f", n={n}]"
    rows.sort(key=lambda r: (math.isnan(r["ade"]), r["ade"]))
    return rows


def _egodex_cells(block: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """{"1s": {ade, fde, n, ade_std, fde_std}, ...} of an egodex section (or of one of its baselines);
    None if absent. The stds are None here; `_aggregate_egodex` fills them over seeds."""
    if not block:
        return None
    keys = [horizon_key(h) for h in HORIZONS_S]
    counts = block.get("counts") or {}
    return {k: {"ade": _num((block.get(k) or {}).get("ade")), "fde": _num((block.get(k) or {}).get("fde")),
                "n": counts.get(k, (block.get(k) or {}).get("n")), "ade_std": None, "fde_std": None}
            for k in keys}


def _aggregate_egodex(cells: Sequence[dict[str, dict[str, Any]] | None]) -> dict[str, dict[str, Any]] | None:
    """Seed means and sample stds of EgoDex cells; None unless every seed has them. The sample counts
    depend on the data alone, so they are the first seed's."""
    if not cells or any(c is None for c in cells):
        return None
    out = {}
    for k, first in cells[0].items():
        out[k] = dict(first)
        for m in ("ade", "fde"):
            vals = [c[k][m] for c in cells]
            out[k][m], out[k][f"{m}_std"] = _mean(vals), _std(vals)
    return out


def to_json(rows: Sequence[dict[str, Any]], paper: bool = False, probe: dict[str, Any] | None = None) -> str:
    """compare.json: the `rows`, `by_name`, the `probe` document when given, the paper block on `paper`."""
    # `by_name` keeps `dvc metrics show/diff` readable (DVC flattens dicts, not lists)
    doc: dict[str, Any] = {"rows": [{k: r.get(k) for k in (*COLUMNS, "egodex", "source")} for r in rows],
                           "by_name": {r["name"]: {k: r[k] for k in ("kind", "split", "n", "ade", "fde", "acc",
                                                                     "ade_std", "fde_std", "acc_std", "n_seeds")}
                                       for r in rows}}
    if probe is not None:
        doc["probe"] = probe
    if paper:
        doc["paper_reference"] = {"note": PAPER_NOTE, "results": list(PAPER_RESULTS),
                                  "rollout_ade": PAPER_ROLLOUT_ADE,
                                  "egodex_table3": {"note": EGODEX_PAPER_NOTE, "results": PAPER_TABLE3}}
    return json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n"


SUMMARY_MODEL_KEYS = ("ade", "ade_std", "fde", "acc", "n_seeds")
SUMMARY_BASELINE_KEYS = ("ade", "fde", "acc")


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The compact `--summary` document for `dvc metrics show`: {row name: {ade, ade_std, fde, acc,
    n_seeds}} (baselines: ade, fde, acc), numbers rounded to 4 decimals; flat, no paths, no lists."""
    def num(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
    return {r["name"]: {k: num(r[k]) for k in (SUMMARY_MODEL_KEYS if r["kind"] == "model" else SUMMARY_BASELINE_KEYS)}
            for r in rows}


def to_summary_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(to_jsonable(summary(rows)), indent=2, allow_nan=False) + "\n"


def seed_summary(entries: Sequence[Entry]) -> dict[str, Any]:
    """One model's `summary.json` figures (report.compact_metrics) averaged over its seeds, plus
    `ade_std` (ddof=1; None for one seed) and `n_seeds`: the `--seed-summary` document, one flat row of
    `dvc metrics show` per model. Every entry must be a seed of the same model on the same data."""
    groups = {(e.name, e.data) for e in entries}
    if len(groups) > 1:
        raise InputError(entries[0].path, f"--seed-summary summarises the seeds of one model on one data, got "
                                          f"{sorted(f'{n} [{d[0]}, n={d[2]}]' for n, d in groups)}")
    per_seed = [compact_metrics(e.metrics) for e in entries]
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        vals = [_num(m.get(key)) for m in per_seed]
        mean = _mean(vals)
        out[key] = round(mean, 4) if math.isfinite(mean) else None
    out["n"] = per_seed[0]["n"]  # the same data: one count
    std = _std([_num(m.get("ade")) for m in per_seed])
    out["ade_std"] = None if std is None else round(std, 4)
    out["n_seeds"] = len(entries)
    return out
