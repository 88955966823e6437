"""The `--storage-options` flag every command that names a store takes (s3:// and other fsspec URLs)."""

from __future__ import annotations

from typing import Annotated

import typer

StorageOptions = Annotated[
    str | None,
    typer.Option("--storage-options", envvar="TJEPA_STORAGE_OPTIONS", show_envvar=False,
                 help="fsspec options for a store URL, as JSON (e.g. '{\"endpoint_url\": \"http://host:8333\"}'); "
                      "credentials otherwise come from the AWS environment variables."),
]
STORE_HELP = "A tjepa feature store: a local path or a URL such as s3://bucket/name.zarr."


def use_storage_options(text: str | None) -> None:
    """Make the options the default for every store URL this process opens (never printed or stored)."""
    from tjepa.cache_schema.storage import parse_storage_options, set_storage_options

    set_storage_options(parse_storage_options(text))
