"""`tjepa inspect STORE`: what a feature store holds (counts, identity, layout, per-array storage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def inspect(
    store: Annotated[Path, typer.Argument(help="Path of a tjepa feature store (Zarr v3 directory).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Summarise a feature store: rows done/failed/pending, fingerprint, layout, provenance, arrays."""
    import json

    from rich.console import Console

    from tjepa.cache_schema.summary import render_summary, store_summary

    summary = store_summary(store)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        render_summary(summary, Console())
