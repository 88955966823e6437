"""`tjepa validate STORE`: check everything the store promises; exit 0 only when it is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tjepa.commands.storage_options import STORE_HELP, StorageOptions, use_storage_options


def validate(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    quick: Annotated[bool, typer.Option("--quick", help="Structure, status and ledger only; skip reading row data.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Print at most this many problems.")] = 50,
    ledger: Annotated[
        Path | None, typer.Option(help="Failure ledger, if the cache job wrote it elsewhere than STORE/failures/.")
    ] = None,
    storage_options: StorageOptions = None,
) -> None:
    """Validate a feature store: format, arrays, status, ledger, and (unless --quick) every done row."""
    from rich.console import Console

    from tjepa.cache_schema.validate import validate_store
    from tjepa.progress import progress_bar

    use_storage_options(storage_options)
    console = Console()
    with progress_bar("checking shards", "shards", transient=True) as bar:
        task = bar.add_task("shards", total=None)
        problems = validate_store(store, full=not quick, ledger=ledger,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
    if not problems:
        console.print(f"[green]valid[/]: {store}" + (" (quick: row data not read)" if quick else ""), highlight=False)
        return
    console.print(f"[red]{len(problems)} problem(s)[/] in {store}:", highlight=False)
    for p in problems[:limit]:
        console.print(f"  - {p}", highlight=False, markup=False)
    if len(problems) > limit:
        console.print(f"  ... and {len(problems) - limit} more (raise --limit)", highlight=False)
    raise typer.Exit(code=1)
