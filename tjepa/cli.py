"""The `tjepa` command line: one verb per stage, parsing only.

Every verb lives in `tjepa/commands/<verb>.py`, whose top level imports nothing heavy, so that
`tjepa --help` stays fast; torch, transformers and zarr are imported inside the command bodies.
"""

from __future__ import annotations

import sys

import typer

from tjepa import __version__
from tjepa.commands import (
    build_models,
    cache,
    compare,
    evaluate,
    inspect,
    predict,
    probe,
    synth,
    train,
    validate,
)
from tjepa.errors import TjepaError

app = typer.Typer(
    name="tjepa",
    help="ThinkJEPA made practical: cache encoder features once, train world models on them fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tjepa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Stage one: `synth`, `build-models`, `cache`, `inspect`, `validate`. Stage two: `train`, `eval`, `compare`, `predict`."""


app.command("synth")(synth.synth)
app.command("build-models")(build_models.build_models)
app.command("cache")(cache.cache)
app.command("inspect")(inspect.inspect)
app.command("validate")(validate.validate)
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("compare")(compare.compare)
app.command("probe")(probe.probe)
app.command("predict")(predict.predict)


def main() -> None:
    try:
        app()
    except TjepaError as err:  # a user-actionable problem: no traceback
        from rich.console import Console

        # soft_wrap: never break a long path in two (users and tests copy it from the message)
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
