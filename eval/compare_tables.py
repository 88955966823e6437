"""The tables of `tjepa compare` (eval/compare.py builds the rows): markdown for compare.md, rich for
the terminal. A model with several seeds shows `mean ± std` and its seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tjepa.eval.compare import PAPER_NOTE, PAPER_RESULTS, PAPER_ROLLOUT_ADE
from tjepa.eval.egodex_protocol import HORIZONS_S, PAPER_TABLE3, horizon_key
from tjepa.eval.egodex_protocol import PAPER_NOTE as EGODEX_PAPER_NOTE
from tjepa.eval.report import fmt, md_table

_EGODEX_HEADER = ["kind", "name", *[f"avg {horizon_key(h)}" for h in HORIZONS_S],
                  *[f"final {horizon_key(h)}" for h in HORIZONS_S], "samples (1/2/3 s)"]


def _pm(value: Any, std: float | None, digits: int = 4) -> str:
    """`mean ± std` (just the value without a std)."""
    return fmt(value, digits) + ("" if std is None else f" ± {fmt(std, digits)}")


def _egodex_row_cells(r: dict[str, Any]) -> list[str]:
    eg = r["egodex"]
    keys = [horizon_key(h) for h in HORIZONS_S]
    return [r["kind"], r["name"], *[_pm(eg[k]["ade"], eg[k].get("ade_std")) for k in keys],
            *[_pm(eg[k]["fde"], eg[k].get("fde_std")) for k in keys], "/".join(fmt(eg[k]["n"]) for k in keys)]


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
             "final distance at 1 / 2 / 3 s (K = 1); samples = test videos whose forecast reaches the horizon; "
             "models with several seeds: mean ± sample std over the seeds.", "",
             md_table(_EGODEX_HEADER, body)]
    if paper:
        parts += ["", f"> {EGODEX_PAPER_NOTE}"]
    return "\n".join(parts)


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["kind"], r["name"], str(r["split"]), fmt(r["n"]), _pm(r["ade"], r["ade_std"]),
            _pm(r["fde"], r["fde_std"]), _pm(r["acc"], r["acc_std"], 3), fmt(r["latent_l2"]),
            ",".join(map(str, r["seeds"])) or "–"]


_HEADER = ["kind", "name", "split", "n", "ADE (m)", "FDE (m)", "Acc@5cm", "latent L2", "seeds"]


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


PROBE_TITLE = "## Does the cached VLM state carry the cue?"


def to_markdown(rows: Sequence[dict[str, Any]], paper: bool = False, probe: str | None = None) -> str:
    """The comparison tables, then `probe` (a markdown section, `tjepa probe`'s table under
    PROBE_TITLE) and the labelled paper block."""
    thr = {r.get("threshold") for r in rows} - {None}
    parts = ["# Comparison", "", "Sorted by ADE (lower is better). World frame, metres; sample-weighted. "
             "Models with several seeds: mean ± sample std (ddof=1) over the seeds.", "",
             md_table(_HEADER, [_cells(r) for r in rows])]
    if thr - {0.05}:
        parts += ["", f"**Acc thresholds differ from 5 cm in some rows:** {sorted(thr)} m"]
    egodex = egodex_markdown(rows, paper)
    if egodex:
        parts += ["", egodex]
    parts += ["", "Sources:", ""] + [f"- {r['name']}: `{r['source']}`" for r in rows if r["kind"] == "model"]
    if probe:
        parts += ["", probe.rstrip()]
    if paper:
        parts += ["", paper_markdown()]
    return "\n".join(parts) + "\n"


def rich_tables(rows: Sequence[dict[str, Any]], paper: bool = False) -> list[Any]:
    """Renderables for a rich Console: the comparison, and the paper block when asked."""
    from rich.table import Table

    t = Table(title="tjepa compare: sorted by ADE; ADE/FDE in metres; mean ± std over seeds")
    for h in _HEADER:
        t.add_column(h.replace(" (m)", ""), justify="left" if h in ("kind", "name", "split", "seeds") else "right",
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
