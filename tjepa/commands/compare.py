"""`tjepa compare`: several evaluations side by side (seeds as mean ± std), sorted by ADE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def compare(
    dirs: Annotated[list[Path], typer.Argument(
        help="Eval directories (holding metrics.json), run directories (holding eval/metrics.json), "
             "metrics.json files, or directories of seed<N>/ evaluations (one mean ± std row).",
        metavar="DIR...", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the table as markdown here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    summary_out: Annotated[Path | None, typer.Option(
        "--summary", help="Also write a compact flat JSON for `dvc metrics show` here (per row: ade, ade_std, "
                          "fde, acc, n_seeds).")] = None,
    seed_summary_out: Annotated[Path | None, typer.Option(
        "--seed-summary", help="Write the one model's summary.json figures averaged over its seeds (plus ade_std, "
                               "n_seeds) here: a flat `dvc metrics show` row. DIRs must be seeds of one model.")] = None,
    probe: Annotated[Path | None, typer.Option(
        "--probe", help="Add a `tjepa probe --out` result: its held-out accuracies (compare.md) and "
                        "document (`probe` in the JSON).")] = None,
    paper: Annotated[bool, typer.Option(
        "--paper/--no-paper", help="Add the paper's published EgoDex numbers (clearly labelled, not comparable).")] = False,
) -> None:
    """Compare the metrics of several evaluations (models and baselines) in one table."""
    import json

    from rich.console import Console

    from tjepa.eval.compare import comparison_rows, load_entries, seed_summary, to_json, to_summary_json
    from tjepa.eval.compare_tables import PROBE_TITLE, rich_tables, to_markdown

    entries = load_entries(dirs)
    rows = comparison_rows(entries)
    seed_doc = seed_summary(entries) if seed_summary_out else None
    probe_doc = probe_md = None
    if probe is not None:
        from tjepa.eval.probe import read_probe
        from tjepa.eval.probe import to_markdown as probe_markdown

        probe_doc = read_probe(probe)
        probe_md = probe_markdown(probe_doc, title=PROBE_TITLE)
    console = Console()
    for table in rich_tables(rows, paper):
        console.print(table)
    if probe_md:
        console.print(probe_md, markup=False, highlight=False)
    for path, text in ((out, to_markdown(rows, paper, probe_md) if out else None),
                       (json_out, to_json(rows, paper, probe_doc) if json_out else None),
                       (summary_out, to_summary_json(rows) if summary_out else None),
                       (seed_summary_out, json.dumps(seed_doc, indent=2, allow_nan=False) + "\n" if seed_doc else None)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            Console(stderr=True).print(f"wrote {path}")
