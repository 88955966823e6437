"""Side-by-side comparison of several evaluations (`tjepa compare`).

Each argument may be a `metrics.json` file, an eval directory holding one, or a run directory holding
`eval/metrics.json` (tried in that order). A row's name is `meta.run` when the file records it, else
the directory name (the run directory's for `<run>/eval/`). Baselines depend only on the data, so
they are shown once per distinct (split, store fingerprint, n) rather than once per run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjepa.errors import InputError
from tjepa.eval.egodex_protocol import HORIZONS_S, PAPER_TABLE3, horizon_key
from tjepa.eval.egodex_protocol import PAPER_NOTE as EGODEX_PAPER_NOTE
from tjepa.eval.report import METRICS_FILE, fmt, md_table, portable_path, read_metrics_json, to_jsonable

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

COLUMNS = ("kind", "name", "split", "n", "ade", "fde", "acc", "latent_l2", "threshold")


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path  # the metrics.json
    metrics: dict[str, Any]


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


def _default_name(metrics_path: Path) -> str:
    d = metrics_path.parent
    return d.parent.name if d.name == "eval" and d.parent.name else d.name


def load_entries(args: Sequence[str | Path]) -> list[Entry]:
    """Load every argument; duplicate names get a numeric suffix."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for a in args:
        path = resolve_metrics_path(a)
        m = read_metrics_json(path)
        name = str((m.get("meta") or {}).get("run") or _default_name(path))
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} ({seen[name]})"
        entries.append(Entry(name, path, m))
    return entries


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def comparison_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Model rows plus de-duplicated baseline rows, sorted by ADE (missing ADE last)."""
    rows: list[dict[str, Any]] = []
    baseline_groups: dict[tuple, list[str]] = {}
    for e in entries:
        m = e.metrics
        meta = m.get("meta") or {}
        rows.append({"kind": "model", "name": e.name, "split": m["split"], "n": m["n"],
                     "ade": _num(m["ade"]), "fde": _num(m["fde"]), "acc": _num(m["acc"]),
                     "latent_l2": _num((m.get("latent") or {}).get("l2")), "threshold": m.get("threshold"),
                     "egodex": _egodex_cells(m.get("egodex")), "source": portable_path(e.path)})
        group = (m["split"], meta.get("fingerprint"), m["n"])
        for bname, b in (m.get("baselines") or {}).items():
            key = (bname, *group)
            if key in baseline_groups:
                baseline_groups[key].append(e.name)
                continue
            baseline_groups[key] = [e.name]
            rows.append({"kind": "baseline", "name": bname, "split": m["split"], "n": b.get("n", m["n"]),
                         "ade": _num(b.get("ade")), "fde": _num(b.get("fde")), "acc": _num(b.get("acc")),
                         "latent_l2": float("nan"), "threshold": b.get("threshold", m.get("threshold")),
                         "egodex": _egodex_cells(((m.get("egodex") or {}).get("baselines") or {}).get(bname)),
                         "source": portable_path(e.path), "_group": group})
    # the same baseline on different data: say which data in its name
    by_name: dict[str, set] = {}
    for r in rows:
        if r["kind"] == "baseline":
            by_name.setdefault(r["name"], set()).add(r["_group"])
    for r in rows:
        group = r.pop("_group", None)
        if group is not None and len(by_name[r["name"]]) > 1:
            split, fp, n = group
            r["name"] = f"{r['name']} [{split}" + (f", {str(fp)[:8]}" if fp else "") + f", n={n}]"
    rows.sort(key=lambda r: (math.isnan(r["ade"]), r["ade"]))
    return rows


def _egodex_cells(block: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    """{"1s": {ade, fde, n}, ...} of an egodex section (or of one of its baselines); None if absent."""
    if not block:
        return None
    keys = [horizon_key(h) for h in HORIZONS_S]
    counts = block.get("counts") or {}
    return {k: {"ade": _num((block.get(k) or {}).get("ade")), "fde": _num((block.get(k) or {}).get("fde")),
                "n": counts.get(k, (block.get(k) or {}).get("n"))} for k in keys}


_EGODEX_HEADER = ["kind", "name", *[f"avg {horizon_key(h)}" for h in HORIZONS_S],
                  *[f"final {horizon_key(h)}" for h in HORIZONS_S], "samples (1/2/3 s)"]


def _egodex_row_cells(r: dict[str, Any]) -> list[str]:
    eg = r["egodex"]
    keys = [horizon_key(h) for h in HORIZONS_S]
    return [r["kind"], r["name"], *[fmt(eg[k]["ade"]) for k in keys], *[fmt(eg[k]["fde"]) for k in keys],
            "/".join(fmt(eg[k]["n"]) for k in keys)]


def _egodex_paper_cells() -> list[str]:
    keys = [horizon_key(h) for h in HORIZONS_S]
    return ["paper", "EgoDex Dec + BC (Table 3)", *[fmt(PAPER_TABLE3[k]["ade"], 3) for k in keys],
            *[fmt(PAPER_TABLE3[k]["fde"], 3) for k in keys], "–"]


def egodex_markdown(rows: Sequence[dict[str, Any]], paper: bool = False) -> str:
    """The EgoDex-protocol table (rows that have one), with EgoDex's Table 3 beside it on `paper`."""
    have = [r for r in rows if r.get("egodex")]
    if not have and not paper:
        return ""
    body = [_egodex_row_cells(r) for r in have] + ([_egodex_paper_cells()] if paper else [])
    parts = ["## EgoDex protocol", "",
             "12 keypoints (wrists + fingertips), camera frame of the last observed frame, metres; average and "
             "final distance at 1 / 2 / 3 s (K = 1); samples = test videos whose forecast reaches the horizon.", "",
             md_table(_EGODEX_HEADER, body)]
    if paper:
        parts += ["", f"> {EGODEX_PAPER_NOTE}"]
    return "\n".join(parts)


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["kind"], r["name"], str(r["split"]), fmt(r["n"]), fmt(r["ade"]), fmt(r["fde"]),
            fmt(r["acc"], 3), fmt(r["latent_l2"])]


_HEADER = ["kind", "name", "split", "n", "ADE (m)", "FDE (m)", "Acc@5cm", "latent L2"]


def paper_markdown() -> str:
    hs = sorted(next(iter(PAPER_ROLLOUT_ADE.values())))
    return "\n".join([
        "## Published reference numbers (not comparable)", "", f"> {PAPER_NOTE}", "",
        md_table(["model (paper)", "ADE (m)", "FDE (m)", "Acc@5cm"],
                 [[r["name"], fmt(r["ade"], 3), fmt(r["fde"], 3), fmt(r["acc"], 3)] for r in PAPER_RESULTS]),
        "", "Rollout ADE (m) by horizon (paper Table 7):", "",
        md_table(["model (paper)"] + [f"H={h}" for h in hs],
                 [[name] + [fmt(v[h], 3) for h in hs] for name, v in PAPER_ROLLOUT_ADE.items()]),
    ])


def to_markdown(rows: Sequence[dict[str, Any]], paper: bool = False) -> str:
    """The comparison table (and the labelled paper block) as markdown."""
    thr = {r.get("threshold") for r in rows} - {None}
    parts = ["# Comparison", "", "Sorted by ADE (lower is better). World frame, metres; sample-weighted.", "",
             md_table(_HEADER, [_cells(r) for r in rows])]
    if thr - {0.05}:
        parts += ["", f"**Acc thresholds differ from 5 cm in some rows:** {sorted(thr)} m"]
    egodex = egodex_markdown(rows, paper)
    if egodex:
        parts += ["", egodex]
    parts += ["", "Sources:", ""] + [f"- {r['name']}: `{r['source']}`" for r in rows if r["kind"] == "model"]
    if paper:
        parts += ["", paper_markdown()]
    return "\n".join(parts) + "\n"


def to_json(rows: Sequence[dict[str, Any]], paper: bool = False) -> str:
    # `by_name` keeps `dvc metrics show/diff` readable (DVC flattens dicts, not lists)
    doc: dict[str, Any] = {"rows": [{k: r.get(k) for k in (*COLUMNS, "egodex", "source")} for r in rows],
                           "by_name": {r["name"]: {k: r[k] for k in ("kind", "split", "n", "ade", "fde", "acc")}
                                       for r in rows}}
    if paper:
        doc["paper_reference"] = {"note": PAPER_NOTE, "results": list(PAPER_RESULTS),
                                  "rollout_ade": PAPER_ROLLOUT_ADE,
                                  "egodex_table3": {"note": EGODEX_PAPER_NOTE, "results": PAPER_TABLE3}}
    return json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n"


def rich_tables(rows: Sequence[dict[str, Any]], paper: bool = False) -> list[Any]:
    """Renderables for a rich Console: the comparison, and the paper block when asked."""
    from rich.table import Table

    t = Table(title="tjepa compare: sorted by ADE; ADE/FDE in metres")
    for h in _HEADER:
        t.add_column(h.replace(" (m)", ""), justify="right" if h not in ("kind", "name", "split") else "left",
                     overflow="fold")
    for r in rows:
        t.add_row(*_cells(r), style="dim" if r["kind"] == "baseline" else None)
    out: list[Any] = [t]
    have = [r for r in rows if r.get("egodex")]
    if have or paper:
        e = Table(title="EgoDex protocol: 12 keypoints, camera frame, metres (K = 1)",
                  caption=EGODEX_PAPER_NOTE if paper else None)
        for h in _EGODEX_HEADER:
            e.add_column(h, justify="left" if h in ("kind", "name") else "right", overflow="fold")
        for r in have:
            e.add_row(*_egodex_row_cells(r), style="dim" if r["kind"] == "baseline" else None)
        if paper:
            e.add_row(*_egodex_paper_cells(), style="italic")
        out.append(e)
    if paper:
        p = Table(title="Published numbers on real EgoDex (NOT comparable)", caption=PAPER_NOTE)
        for h in ("model (paper)", "ADE (m)", "FDE (m)", "Acc@5cm"):
            p.add_column(h)
        for r in PAPER_RESULTS:
            p.add_row(r["name"], fmt(r["ade"], 3), fmt(r["fde"], 3), fmt(r["acc"], 3))
        out.append(p)
    return out
