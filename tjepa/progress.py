"""The one progress-bar factory: rich on stderr, with the rate in units per second."""

from __future__ import annotations

from typing import Any


def progress_bar(label: str, unit: str, *extra: str, console: Any = None, transient: bool = False,
                 enabled: bool = True, remaining: bool = True):
    """A rich `Progress`: `label`, bar, done/total, mean rate in `unit`/s since the task started,
    then `extra` text columns (rich format strings over `task.fields`, e.g. "loss {task.fields[loss]:.4g}"),
    elapsed and (with `remaining`) remaining time. `label` may use task fields too."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            elapsed = task.elapsed or 0.0
            rate = task.completed / elapsed if elapsed > 0 else 0.0
            return Text(f"{rate:.2f} {unit}/s")

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), RateColumn(),
               *(TextColumn(x) for x in extra), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console or Console(stderr=True), transient=transient, disable=not enabled)
