"""`tjepa compare`: several evaluations side by side, sorted by ADE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def compare(
    dirs: Annotated[list[Path], typer.Argument(
        help="Eval directories (holding metrics.json), run directories (holding eval/metrics.json) "
             "or metrics.json files.", metavar="DIR...", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the table as markdown here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
    paper: Annotated[bool, typer.Option(
        "--paper/--no-paper", help="Add the paper's published EgoDex numbers (clearly labelled, not comparable).")] = False,
) -> None:
    """Compare the metrics of several evaluations (models and baselines) in one table."""
    from rich.console import Console

    from tjepa.eval.compare import comparison_rows, load_entries, rich_tables, to_json, to_markdown

    rows = comparison_rows(load_entries(dirs))
    console = Console()
    for table in rich_tables(rows, paper):
        console.print(table)
    for path, text in ((out, to_markdown(rows, paper) if out else None),
                       (json_out, to_json(rows, paper) if json_out else None)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            Console(stderr=True).print(f"wrote {path}")
