"""`tjepa inspect STORE`: what a feature store holds (counts, identity, layout, per-array storage)."""

from __future__ import annotations

from typing import Annotated

import typer

from tjepa.commands.storage_options import STORE_HELP, StorageOptions, use_storage_options


def inspect(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Summarise a feature store: rows done/failed/pending, fingerprint, layout, provenance, arrays."""
    import json

    from rich.console import Console

    from tjepa.cache_schema.summary import render_summary, store_summary

    use_storage_options(storage_options)
    summary = store_summary(store)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        render_summary(summary, Console())
